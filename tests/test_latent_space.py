"""Latent-space generation: attribute vectors (a synthetic corpus with a known direction, and a real
tiny model), neighbours exact on a tiny corpus and their cache, the JSONL generator resuming to
identical output after a kill, the transfer table, the figures, and bad input as one-line errors."""

import json
import os
import subprocess
import sys

import pytest
import torch

import textvae
from tests.conftest import REPO, tiny_vae_spec
from textvae import cli
from textvae.config import recipe_from_dict
from textvae.data.vocab import Vocab
from textvae.distributions import DiagGaussian
from textvae.errors import TextVAEError
from textvae.generation.decoding import DecodeSettings
from textvae.generation.jsonl import generate_jsonl
from textvae.latent.attributes import AttributeVectors, attribute_vectors, load_vectors, read_labelled, save_vectors
from textvae.latent.neighbours import corpus_codes, nearest
from textvae.latent.transfer import train_classifier, transfer_table
from textvae.models import build_model
from textvae.train import save_checkpoint

WORDS = ("good", "great", "bad", "awful", "food", "the", "was", "service")
LABELLED = [
    ("1", "the food was good"),
    ("1", "great service"),
    ("1", "the service was great"),
    ("0", "the food was bad"),
    ("0", "awful service"),
    ("0", "the service was awful"),
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory holding an untrained tiny VAE (best.pt) over WORDS; D = 4."""
    root = tmp_path_factory.mktemp("latent")
    vocab = Vocab(words=("<pad>", "<s>", "</s>", "<unk>", *WORDS))
    spec = tiny_vae_spec(weight_init_range=0.5)
    spec["encoder"]["weight_init_range"] = 0.5
    recipe = recipe_from_dict({"data": {"dataset": "files", "root": str(root)}, "model": spec}, "test")
    torch.manual_seed(0)
    model = build_model(spec, vocab).eval()
    run = root / "run"
    run.mkdir()
    save_checkpoint(run / "best.pt", recipe=recipe, vocab=vocab, model=model)
    return run


class FakeEncoder:
    """A TextModel stand-in whose posterior mean is known: (#good + #great, #bad + #awful, 1, #words)."""

    has_latent, latent_dim, device = True, 4, torch.device("cpu")

    def encode(self, sentences):
        rows = []
        for s in sentences:
            words = s.split()
            positive = sum(w in ("good", "great") for w in words)
            negative = sum(w in ("bad", "awful") for w in words)
            rows.append([positive, negative, 1.0, len(words)])
        mean = torch.tensor(rows, dtype=torch.float32)
        return DiagGaussian(mean, torch.zeros_like(mean))


def test_attribute_vectors_on_a_synthetic_corpus_recover_the_known_direction():
    vectors = attribute_vectors(FakeEncoder(), LABELLED, batch_size=2)
    assert vectors.labels == ("0", "1") and vectors.counts == (3, 3)
    # label 1: (1, 0, 1, mean length 8/3); label 0 likewise with the negative word: v_{0→1} = (1, −1, 0, 0)
    torch.testing.assert_close(vectors.vector("0_to_1"), torch.tensor([1.0, -1.0, 0.0, 0.0]))
    torch.testing.assert_close(vectors.vector("1_to_0"), -vectors.vector("0_to_1"))
    assert vectors.names == ["0_to_1", "1_to_0"]
    with pytest.raises(TextVAEError, match="unknown attribute vector 'pos'; this run has: 0_to_1, 1_to_0"):
        vectors.vector("pos")
    with pytest.raises(TextVAEError, match="at least two labels"):
        attribute_vectors(FakeEncoder(), LABELLED[:3])


def test_attribute_vectors_of_a_real_model_are_per_label_mean_codes(run_dir):
    model = textvae.load(run_dir)
    vectors = model.attribute_vectors(LABELLED, batch_size=2)  # three encoder passes
    means = model.encode([s for _, s in LABELLED]).mean  # one pass
    expected = means[3:].mean(0) - means[:3].mean(0)  # label 0's sentences are the last three
    torch.testing.assert_close(vectors.vector("1_to_0"), expected, rtol=1e-5, atol=1e-6)
    save_vectors(run_dir, vectors)
    again = load_vectors(run_dir)
    assert again.labels == vectors.labels and torch.equal(again.means, vectors.means)


def test_a_shift_moves_z_by_scale_times_the_vector(run_dir):
    model = textvae.load(run_dir)
    save_vectors(run_dir, model.attribute_vectors(LABELLED))
    v = load_vectors(run_dir).vector("0_to_1")
    sentences = ["the food was bad", "awful service"]
    z = model.encode(sentences).mean + 3.0 * v
    assert model.reconstruct(sentences, shift=3.0 * v, max_len=8) == model.generate(z, max_len=8)
    path = model.interpolation_path(*sentences, steps=3, shift=3.0 * v)
    torch.testing.assert_close(path[0], z[0])
    torch.testing.assert_close(path[2], z[1])


def test_labelled_file_errors_name_the_line(tmp_path):
    path = tmp_path / "labelled.txt"
    path.write_text("1\tgood food\n\n0 bad food\n", encoding="utf-8")
    with pytest.raises(TextVAEError, match=r"labelled.txt:3: expected label<TAB>sentence"):
        read_labelled(path)
    path.write_text("1\tgood food\n1\t  \n", encoding="utf-8")
    with pytest.raises(TextVAEError, match=r":2: expected label<TAB>sentence"):
        read_labelled(path)
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(TextVAEError, match="no labelled sentences"):
        read_labelled(path)
    path.write_text("1\tgood food\n0\tbad food\n", encoding="utf-8")
    assert read_labelled(path) == [("1", "good food"), ("0", "bad food")]


def test_nearest_is_exact_on_a_tiny_corpus():
    codes = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.1], [-1.0, 0.0], [0.9, 0.9]])
    query = torch.tensor([2.0, 0.0])
    indices, scores = nearest(query, codes, 3, "cosine")
    assert indices.tolist() == [0, 2, 4]  # cosine 1, 0.9994, 0.7071
    torch.testing.assert_close(scores[1], torch.tensor(3.0 / (3.0**2 + 0.01) ** 0.5))
    indices, scores = nearest(query, codes, 3, "euclidean")
    assert indices.tolist() == [0, 2, 4]  # distances 1, 1.005, 1.4866
    torch.testing.assert_close(scores, torch.tensor([1.0, 1.01**0.5, (1.1**2 + 0.81) ** 0.5]))
    brute = sorted(range(5), key=lambda i: float(torch.dist(codes[i], query)))
    assert nearest(query, codes, 5, "euclidean")[0].tolist() == brute
    with pytest.raises(TextVAEError, match=r"k must be in 1..5 \(the corpus size\), got 6"):
        nearest(query, codes, 6)
    with pytest.raises(TextVAEError, match="unknown metric"):
        nearest(query, codes, 1, "manhattan")


def test_corpus_codes_are_cached_and_reencoded_when_the_corpus_changes(run_dir, tmp_path, monkeypatch):
    model = textvae.load(run_dir)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("1\tthe food was good\ngreat service\n\nthe food was bad\n", encoding="utf-8")
    calls = []
    import textvae.latent.neighbours as neighbours

    real = neighbours.posterior_means
    monkeypatch.setattr(neighbours, "posterior_means", lambda *a: calls.append(1) or real(*a))
    cache = tmp_path / "cache"
    sentences, codes = corpus_codes(model, corpus, run_dir / "best.pt", cache)
    assert sentences == ["the food was good", "great service", "the food was bad"] and len(calls) == 1
    torch.testing.assert_close(codes, model.encode(sentences).mean)
    again = corpus_codes(model, corpus, run_dir / "best.pt", cache)[1]
    assert len(calls) == 1 and torch.equal(again, codes)  # read from the cache
    corpus.write_text("awful service\n", encoding="utf-8")
    assert corpus_codes(model, corpus, run_dir / "best.pt", cache)[1].shape == (1, 4) and len(calls) == 2


def _generate_args(run_dir, out, *extra):
    args = ["generate", run_dir, "--num", "11", "--batch-size", "3", "--out", out, "--no-progress", *extra]
    return [str(a) for a in args]


def test_generate_resumes_to_identical_output_after_a_kill(run_dir, tmp_path, capsys):
    strategy = ["--strategy", "sample", "--top-p", "0.9", "--no-repeat-ngram", "2", "--max-len", "6"]
    whole, killed = tmp_path / "whole.jsonl", tmp_path / "killed.jsonl"
    assert cli.main(_generate_args(run_dir, whole, *strategy)) == 0
    env = {**os.environ, "TEXTVAE_FAULT": "generate_batch:2"}
    command = [sys.executable, "-m", "textvae", *_generate_args(run_dir, killed, *strategy)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env)
    assert result.returncode == -9  # SIGKILL after the second batch
    assert len(killed.read_text().splitlines()) == 6
    with open(killed, "ab") as handle:  # and a kill halfway through writing the third batch
        handle.write(whole.read_bytes().splitlines(keepends=True)[6] + b'{"index": 7, "te')
    assert cli.main(_generate_args(run_dir, killed, *strategy)) == 0
    assert killed.read_bytes() == whole.read_bytes()
    records = [json.loads(line) for line in whole.read_text().splitlines()]
    assert [r["index"] for r in records] == list(range(11))
    capsys.readouterr()
    assert cli.main(_generate_args(run_dir, killed, "--max-len", "7")) == 2
    err = capsys.readouterr().err
    assert "written with other settings" in err and len(err.strip().splitlines()) == 1


def test_generated_records_score_their_text_under_their_z(run_dir, tmp_path):
    model = textvae.load(run_dir)
    out = tmp_path / "rec.jsonl"
    sentences = ["the food was good", "awful service", "great"]
    settings = DecodeSettings(max_len=30)
    generate_jsonl(model, out, settings, sentences=sentences, batch_size=2, progress=False)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    z = model.encode(sentences).mean
    assert [r["source"] for r in records] == sentences
    assert [r["text"] for r in records] == model.generate(z, max_len=30)
    decoder, vocab = model.model.decoder, model.vocab
    for record, row in zip(records, z, strict=True):
        assert record["z_norm"] == pytest.approx(float(row.norm()), rel=1e-5)
        ids = vocab.encode(record["text"].split())
        cut = len(ids) == 30  # no EOS generated: its probability is not counted
        targets = torch.tensor(ids if cut else [*ids, vocab.eos_id])
        inputs = torch.tensor([[vocab.bos_id, *ids]])[:, : len(targets)]
        with torch.no_grad():
            logp = decoder.logits(decoder(inputs, row.unsqueeze(0)))[0].log_softmax(-1)  # (T, V)
        expected = float(logp.gather(1, targets.unsqueeze(1)).sum())
        assert record["log_likelihood"] == pytest.approx(expected, rel=1e-5, abs=1e-4), cut
    assert any(len(r["text"].split()) == 30 for r in records)  # the untrained model runs to max_len somewhere
    with pytest.raises(TextVAEError, match="either a number of samples or sentences"):
        generate_jsonl(model, out, settings, progress=False)


def test_transfer_table_reports_every_direction_and_scale(run_dir):
    model = textvae.load(run_dir)
    classifier = train_classifier(LABELLED)
    assert list(classifier.predict(["good good", "awful awful"])) == ["1", "0"]
    vectors = AttributeVectors(("0", "1"), (3, 3), torch.zeros(2, 4))  # a zero vector: every scale reconstructs
    rows = transfer_table(model, vectors, classifier, LABELLED, [0.0, 2.0], max_len=6)
    assert [(r["source"], r["target"], r["scale"]) for r in rows] == [
        ("0", "1", 0.0),
        ("0", "1", 2.0),
        ("1", "0", 0.0),
        ("1", "0", 2.0),
    ]
    assert rows[0]["classifier_acc"] == 1.0 and rows[0]["transfer_acc"] == rows[1]["transfer_acc"]
    assert rows[0]["bleu"] == rows[1]["bleu"]


def test_cli_attribute_interpolate_plot_and_bad_input(run_dir, tmp_path, capsys):
    labelled = tmp_path / "labelled.txt"
    labelled.write_text("".join(f"{label}\t{s}\n" for label, s in LABELLED), encoding="utf-8")
    plot = tmp_path / "codes.png"
    args = ["attribute", str(run_dir), "--file", str(labelled), "--eval-file", str(labelled), "--plot", str(plot)]
    assert cli.main([*args, "--scales", "0,1", "--max-len", "6"]) == 0
    out = capsys.readouterr().out
    assert "vector 0_to_1: norm" in out and "| 0 → 1 | 1 |" in out and plot.read_bytes()[:4] == b"\x89PNG"
    assert "transfer" in json.loads((run_dir / "attribute_vectors.json").read_text())
    homotopy = tmp_path / "homotopy.png"
    interpolate = ["interpolate", str(run_dir), "the food was good", "awful service", "--steps", "4"]
    assert cli.main([*interpolate, "--plot", str(homotopy), "--add-vector", "1_to_0", "--max-len", "6"]) == 0
    assert homotopy.read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    bad = tmp_path / "bad.txt"
    bad.write_text("1 good food\n", encoding="utf-8")
    for argv in (
        ["attribute", str(run_dir), "--file", str(bad)],
        ["reconstruct", str(run_dir), "good food", "--add-vector", "positive"],
        ["neighbours", str(run_dir), "good food", "--corpus", str(labelled), "-k", "7"],
    ):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and err.startswith("textvae: error: "), err
