"""Generation metrics: BLEU equal to sacrebleu's own command line, self-BLEU and distinct-n by their
definitions, and ``textvae eval --generation`` on a trained run."""

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sacrebleu import sentence_bleu

from tests.conftest import tiny_lm_spec, tiny_vae_spec
from textvae.cli import main
from textvae.config import recipe_from_dict
from textvae.data.corpus import encode_split
from textvae.errors import TextVAEError
from textvae.evaluation.evaluate import EvalSettings
from textvae.evaluation.generation_quality import (
    GenerationSettings,
    corpus_bleu,
    distinct_n,
    evaluate_generation,
    self_bleu,
)
from textvae.train import train

SACREBLEU = Path(sys.executable).parent / "sacrebleu"

REFERENCES = [
    "and god said , let there be light : and there was light .",
    "in the beginning god created the heaven and the earth .",
    "and the evening and the morning were the first day .",
    "the lord is my shepherd ; i shall not want .",
]
HYPOTHESES = [
    "and god said , let there be light : and it was light .",
    "in the beginning god made the heaven and earth .",
    "and the morning and the evening were the first day",
    "my shepherd is the lord .",
]


def test_corpus_bleu_equals_the_sacrebleu_command_line_on_the_same_files(tmp_path):
    (tmp_path / "ref.txt").write_text("\n".join(REFERENCES) + "\n")
    (tmp_path / "hyp.txt").write_text("\n".join(HYPOTHESES) + "\n")
    printed = subprocess.run(
        [str(SACREBLEU), str(tmp_path / "ref.txt"), "-i", str(tmp_path / "hyp.txt"), "-b", "-w", "4"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ours = corpus_bleu(HYPOTHESES, REFERENCES)
    assert f"{ours.score:.4f}" == printed
    assert 20 < ours.score < 90  # a partial match: neither end of the scale
    assert ours.signature.startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    assert corpus_bleu(REFERENCES, REFERENCES).score == pytest.approx(100)
    with pytest.raises(TextVAEError, match="4 hypotheses but 3 references"):
        corpus_bleu(HYPOTHESES, REFERENCES[:3])


def test_self_bleu_is_the_mean_sentence_bleu_against_all_other_samples():
    samples = HYPOTHESES[:3]
    expected = [sentence_bleu(s, [o for o in samples if o is not s]).score for s in samples]
    score = self_bleu(samples)
    assert score.score == pytest.approx(sum(expected) / 3)
    assert "nrefs:2" in score.signature and "eff:yes" in score.signature
    assert self_bleu(["the same words here"] * 4).score == pytest.approx(100)  # collapse: no diversity
    assert self_bleu(["a b c d", "e f g h", "i j k l"]).score < 5  # nothing shared
    with pytest.raises(TextVAEError, match="at least 2 samples"):
        self_bleu(["one"])


def test_distinct_n_counts_unique_over_all_ngrams():
    samples = ["a b a b", "a b c", ""]
    assert distinct_n(samples, 1) == pytest.approx(3 / 7)  # a b a b a b c
    assert distinct_n(samples, 2) == pytest.approx(3 / 5)  # ab ba ab ab bc
    assert distinct_n(["a"], 2) == 0.0
    with pytest.raises(TextVAEError, match="n ≥ 1"):
        distinct_n(samples, 0)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny VAE and a tiny LM, each trained briefly (enough to emit words) on a toy corpus."""
    tmp_path = tmp_path_factory.mktemp("generation")
    root = tmp_path / "corpus"
    root.mkdir()
    sentences = [" ".join(words) for words in itertools.permutations("abcdef", 4)][:120]
    for split in ("train", "valid", "test"):
        (root / f"{split}.txt").write_text("\n".join(sentences) + "\n")
    trained = {}
    for name, spec, steps in (("vae", tiny_vae_spec(), 24), ("lm", tiny_lm_spec(), 24)):
        recipe = recipe_from_dict(
            {
                "data": {"dataset": "files", "root": str(root), "cache_dir": str(tmp_path / "cache")},
                "model": spec,
                "train": {
                    "optimizer": "adam",
                    "lr": 0.05,
                    "batch_size": 16,
                    "max_steps": steps,
                    "max_valid_sentences": 16,
                    "progress_bar": False,
                    "threads": 1,
                },
                "eval": {"iw_samples": 2, "max_sentences": 12},
            },
            source="test",
        )
        train(recipe, tmp_path / name)
        trained[name] = (recipe, tmp_path / name)
    return trained


def test_eval_generation_writes_the_metrics_and_signatures(runs, tmp_path, capsys):
    _, run = runs["vae"]
    assert main(["eval", str(run), "--generation", "--num-samples", "6", "--json", str(tmp_path / "e.json")]) == 0
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["bleu_rec_sentences"] == 12 and result["generation_samples"] == 6
    assert 0 <= result["bleu_rec"] <= 100 + 1e-9 and 0 <= result["self_bleu"] <= 100 + 1e-9
    assert 0 < result["distinct_1"] <= 1 and result["self_bleu_signature"].startswith("nrefs:5|")
    assert len(result["generation_examples"]["reconstructions"]) == 5
    assert "self-BLEU" in capsys.readouterr().out
    assert main(["eval", str(run), "--generation", "--num-samples", "1", "--json", str(tmp_path / "f.json")]) == 2


def test_reconstruction_bleu_scores_the_greedy_decoding_of_the_posterior_mean(runs):
    recipe, run = runs["vae"]
    from textvae import load

    loaded = load(run)
    split = encode_split(recipe.data, "test", loaded.vocab)
    subset = EvalSettings(max_sentences=12, seed=3)
    result = evaluate_generation(loaded.model, split, loaded.vocab, GenerationSettings(num_samples=4), subset)
    again = evaluate_generation(loaded.model, split, loaded.vocab, GenerationSettings(num_samples=4), subset)
    assert result["bleu_rec"] == again["bleu_rec"] and result["self_bleu"] == again["self_bleu"]  # seeded
    sentences = [pair[0] for pair in result["generation_examples"]["reconstructions"]]
    by_hand = loaded.reconstruct(sentences, use_mean=True, max_len=result["generation_max_len"])
    assert by_hand == [pair[1] for pair in result["generation_examples"]["reconstructions"]]


def test_a_language_model_has_no_reconstruction_and_greedy_samples_all_alike(runs):
    recipe, run = runs["lm"]
    from textvae import load

    loaded = load(run)
    split = encode_split(recipe.data, "test", loaded.vocab)
    torch.manual_seed(0)
    result = evaluate_generation(loaded.model, split, loaded.vocab, GenerationSettings(num_samples=5))
    assert "bleu_rec" not in result
    samples = loaded.sample(5, max_len=result["generation_max_len"])
    assert len(set(samples)) == 1  # greedy without z: one sentence, whatever the "sample"
    assert samples[0].split()  # trained enough to say something
    assert result["self_bleu"] == pytest.approx(100)
    sampled = evaluate_generation(loaded.model, split, loaded.vocab, GenerationSettings(5, "sample"))
    assert sampled["generation_strategy"] == "sample"
