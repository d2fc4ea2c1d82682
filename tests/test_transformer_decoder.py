"""The GPT-2 decoder: causality, z changes p(x|z) through each injection, cached generation equal to the full
pass (greedy, beam), padding-independence, pretrained loading and its checks, a Transformer VAE that learns,
and every remedy and strategy with it through training, checkpoint and evaluation."""

import itertools
import math

import pytest
import torch

import textvae
from tests.test_cnn_decoder import Recomputing, _uncached_greedy
from textvae.config import recipe_from_dict
from textvae.data.batching import collate
from textvae.data.corpus import encode_split
from textvae.data.vocab import Vocab
from textvae.errors import TextVAEError
from textvae.evaluation.evaluate import EvalSettings, evaluate
from textvae.generation.decoding import DecodeSettings, decode
from textvae.models import build_model
from textvae.models.transformer_decoder import GPT2Decoder
from textvae.objective import elbo_terms
from textvae.remedies.base import training_objective
from textvae.train import train

VOCAB = Vocab(words=("<pad>", "<s>", "</s>", "<unk>", *"abcdefghi"))  # V = 13
TINY = {"num_layers": 2, "hidden_dim": 12, "num_heads": 3, "max_positions": 40, "dropout": 0.0}
INJECTIONS = {
    "memory": {"z_memory": True, "z_embedding": False},
    "embedding": {"z_memory": False, "z_embedding": True},
    "both": {"z_memory": True, "z_embedding": True},
}


def _decoder(latent_dim: int = 3, **kwargs) -> GPT2Decoder:
    torch.manual_seed(0)
    return GPT2Decoder(len(VOCAB), latent_dim, VOCAB.pad_id, **{**TINY, **kwargs}).eval()


def _tokens(batch: int, length: int, seed: int) -> torch.Tensor:
    return torch.randint(4, len(VOCAB), (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("injection", list(INJECTIONS))
def test_changing_token_t_never_changes_the_logits_before_t(injection):
    decoder = _decoder(**INJECTIONS[injection])
    tokens, z = _tokens(2, 9, 1), torch.randn(2, 3, generator=torch.Generator().manual_seed(2))
    for t in (0, 4, 8):
        changed = tokens.clone()
        changed[:, t] = (tokens[:, t] - 3) % (len(VOCAB) - 4) + 4  # another real token
        with torch.no_grad():
            moved = (decoder.logits(decoder(tokens, z)) - decoder.logits(decoder(changed, z))).abs().amax(dim=(0, 2))
        assert (moved[:t] == 0).all()  # exactly: the past never sees the future
        assert (moved[t:] > 1e-4).all()  # and position t onwards does see it


@pytest.mark.parametrize("injection", list(INJECTIONS))
def test_z_changes_the_output_distribution_at_every_position(injection):
    """From GPT-2's N(0, 0.02²) initialization z's effect is small, so the check runs in float64, where
    rounding is ~1e-16 and a path that does not exist gives exactly zero."""
    decoder = _decoder(**INJECTIONS[injection]).double()
    tokens = _tokens(3, 6, 1)
    z = torch.randn(3, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        first = decoder.logits(decoder(tokens, z)).log_softmax(-1)  # (B, T, V)
        second = decoder.logits(decoder(tokens, z + 1.0)).log_softmax(-1)
    shift = (first.exp() * (first - second)).sum(-1)  # KL(p(·|z) || p(·|z')) per position, (B, T)
    assert (shift > 1e-10).all()


def test_z_reaches_the_decoder_only_through_the_chosen_injections():
    memory_only = _decoder(**INJECTIONS["memory"])
    assert memory_only.z_to_embedding is None and memory_only.z_to_memory is not None
    # with the memory projection zeroed, z has no path left: the outputs stop depending on it
    torch.nn.init.zeros_(memory_only.z_to_memory.weight)
    torch.nn.init.zeros_(memory_only.z_to_memory.bias)
    tokens = _tokens(2, 5, 1)
    with torch.no_grad():
        torch.testing.assert_close(memory_only(tokens, torch.zeros(2, 3)), memory_only(tokens, torch.ones(2, 3)))
    with pytest.raises(TextVAEError, match="both are off"):
        _decoder(z_memory=False, z_embedding=False)
    language_model = _decoder(latent_dim=0)  # no z: neither projection exists
    assert language_model.z_to_memory is None and language_model.z_to_embedding is None


def test_padding_after_a_sentence_changes_none_of_its_logits():
    decoder = _decoder()
    batch = collate([[1, 4, 5, 6, 2], [1, 7, 8, 9, 10, 11, 12, 2]], [0, 1], VOCAB.pad_id)
    z = torch.randn(2, 3, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        padded = decoder.logits(decoder(batch.decoder_inputs, z))  # row 0 padded with 3 PADs
        alone = decoder.logits(decoder(batch.decoder_inputs[:1, :4], z[:1]))
    torch.testing.assert_close(padded[0, :4], alone[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("injection", ["memory", "embedding", "both", "lm"])
def test_cached_generation_equals_the_full_pass(injection):
    decoder = _decoder(latent_dim=0) if injection == "lm" else _decoder(**INJECTIONS[injection])
    batch, max_len = 3, 25
    z = None if injection == "lm" else torch.randn(batch, 3, generator=torch.Generator().manual_seed(3))
    cached = decode(decoder, z, batch, VOCAB.bos_id, VOCAB.eos_id, DecodeSettings(max_len=max_len))
    assert cached == _uncached_greedy(decoder, z, batch, max_len)
    fed = _tokens(batch, max_len, 4)
    state, tokens, step_logits = decoder.initial_state(z, batch), torch.full((batch,), VOCAB.bos_id), []
    for t in range(max_len):
        logits, state = decoder.step(tokens, state, z)
        step_logits.append(logits)
        tokens = fed[:, t]
    inputs = torch.cat([torch.full((batch, 1), VOCAB.bos_id), fed[:, :-1]], dim=1)
    with torch.no_grad():
        full = decoder.logits(decoder(inputs, z))  # (B, T, V)
    torch.testing.assert_close(torch.stack(step_logits, dim=1), full, rtol=1e-5, atol=1e-5)


def test_beam_search_with_the_cache_equals_beam_search_recomputing_the_prefix():
    decoder = _decoder()
    z = torch.randn(3, 3, generator=torch.Generator().manual_seed(5))
    settings = DecodeSettings("beam", beam_size=4, max_len=15)
    cached = decode(decoder, z, 3, VOCAB.bos_id, VOCAB.eos_id, settings)
    assert cached == decode(Recomputing(decoder), z, 3, VOCAB.bos_id, VOCAB.eos_id, settings)
    sampled = DecodeSettings("sample", top_p=0.9, max_len=15)
    first = decode(decoder, z, 3, VOCAB.bos_id, VOCAB.eos_id, sampled, torch.Generator().manual_seed(7))
    again = decode(Recomputing(decoder), z, 3, VOCAB.bos_id, VOCAB.eos_id, sampled, torch.Generator().manual_seed(7))
    assert first == again


def test_bad_settings_and_lengths_beyond_the_position_table():
    with pytest.raises(TextVAEError, match="not divisible by num_heads"):
        _decoder(hidden_dim=10, num_heads=3)
    decoder = _decoder(max_positions=6)
    with pytest.raises(TextVAEError, match="covers 6 positions, asked for 7"):
        decoder(_tokens(1, 7, 0), torch.zeros(1, 3))
    with pytest.raises(TextVAEError, match="covers 6 positions"):
        decode(decoder, torch.zeros(1, 3), 1, VOCAB.bos_id, VOCAB.eos_id, DecodeSettings(max_len=10))


def _save_pretrained(directory, vocab_size=13, tokens=None):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    torch.manual_seed(11)
    config = GPT2Config(vocab_size=vocab_size, n_positions=40, n_embd=12, n_layer=2, n_head=3)
    GPT2LMHeadModel(config).save_pretrained(directory)
    if tokens is not None:
        word_level = Tokenizer(WordLevel({t: i for i, t in enumerate(tokens)}, unk_token="<unk>"))
        PreTrainedTokenizerFast(tokenizer_object=word_level).save_pretrained(directory)
    return GPT2LMHeadModel.from_pretrained(directory)


def test_pretrained_weights_load_offline_and_must_match_the_recipe(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    saved = _save_pretrained(tmp_path / "gpt2", tokens=VOCAB.words)
    decoder = _decoder(pretrained=str(tmp_path / "gpt2"), dropout=0.3)
    assert decoder.gpt2.config.attn_pdrop == 0.3  # dropout is the recipe's, the architecture the directory's
    for name, value in saved.state_dict().items():
        torch.testing.assert_close(decoder.gpt2.state_dict()[name], value, msg=name)
    torch.nn.init.zeros_(decoder.gpt2.transformer.h[0].mlp.c_fc.weight)
    decoder.reinitialize()  # a pretrained decoder's fresh weights are the pretrained ones
    torch.testing.assert_close(decoder.gpt2.transformer.h[0].mlp.c_fc.weight, saved.transformer.h[0].mlp.c_fc.weight)
    # through a model, the vocabulary is checked token by token against the directory's tokenizer
    spec = {"type": "vae", "latent_dim": 3, "encoder": {"type": "lstm", "embed_dim": 5, "hidden_dim": 6}}
    spec["decoder"] = {"type": "gpt2", **TINY, "pretrained": str(tmp_path / "gpt2")}
    assert isinstance(build_model(spec, VOCAB).decoder, GPT2Decoder)
    with pytest.raises(TextVAEError, match=r"num_layers = 3 but the pretrained model .* has 2"):
        _decoder(pretrained=str(tmp_path / "gpt2"), num_layers=3)
    _save_pretrained(tmp_path / "other", tokens=("!", *VOCAB.words[1:]))
    with pytest.raises(TextVAEError, match=r"token 0 is '!' in .* but '<pad>' in the textvae vocabulary"):
        build_model({**spec, "decoder": {**spec["decoder"], "pretrained": str(tmp_path / "other")}}, VOCAB)
    _save_pretrained(tmp_path / "bigger", vocab_size=50)
    with pytest.raises(TextVAEError, match="has 50 tokens, the textvae vocabulary 13"):
        _decoder(pretrained=str(tmp_path / "bigger"))
    with pytest.raises(TextVAEError, match="is not a directory"):
        _decoder(pretrained=str(tmp_path / "missing"))


def test_reinitialize_draws_fresh_random_weights():
    decoder = _decoder()
    before = {k: v.clone() for k, v in decoder.state_dict().items()}
    decoder.reinitialize()
    after = decoder.state_dict()
    assert not torch.equal(
        before["gpt2.transformer.h.0.attn.c_attn.weight"], after["gpt2.transformer.h.0.attn.c_attn.weight"]
    )
    assert not torch.equal(before["z_to_memory.weight"], after["z_to_memory.weight"])
    assert after["gpt2.transformer.h.0.attn.c_attn.weight"].std() == pytest.approx(0.02, rel=0.3)  # GPT-2's init


def _corpus(tmp_path):
    root = tmp_path / "corpus"
    root.mkdir()
    sentences = [" ".join(words) for words in itertools.permutations("abcdef", 4)][:120]
    for split in ("train", "valid", "test"):
        (root / f"{split}.txt").write_text("\n".join(sentences) + "\n")
    return root


def _transformer_vae_spec() -> dict:
    return {
        "type": "vae",
        "latent_dim": 4,
        "encoder": {"type": "lstm", "embed_dim": 8, "hidden_dim": 8, "weight_init_range": 0.1},
        "decoder": {"type": "gpt2", **TINY},
    }


def test_a_tiny_transformer_vae_learns_a_batch():
    """Adam on one batch: the negative ELBO falls far below its start, and the gradient reaches every part."""
    torch.manual_seed(0)
    model = build_model(_transformer_vae_spec(), VOCAB)
    batch = collate([[1, *map(int, _tokens(1, n, n)[0]), 2] for n in (3, 5, 8)], [0, 1, 2], VOCAB.pad_id)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(25):
        terms = elbo_terms(model(batch))
        loss = (terms.rec + terms.kl).mean()
        optimizer.zero_grad()
        loss.backward()
        if not losses:
            for name in ("encoder.to_params.weight", "decoder.z_to_memory.weight", "decoder.z_to_embedding.weight"):
                assert model.get_parameter(name).grad.abs().sum() > 0, name
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


ALL_REMEDIES = [
    {"type": "kl_annealing", "schedule": "linear", "warmup": 10.0},
    {"type": "free_bits", "threshold": 0.1},
    {"type": "word_dropout", "keep_prob": 0.7},
    {"type": "bow_loss", "hidden_dim": 8},
    {"type": "bn_vae", "gamma": 0.5},
    {"type": "iaf", "steps": 2, "hidden_dim": 8},
]


def test_each_remedy_runs_with_the_transformer_decoder():
    batch = collate([[1, 4, 5, 6, 7, 2], [1, 8, 9, 2], [1, 10, 2]], [0, 1, 2], VOCAB.pad_id)
    for remedy in ALL_REMEDIES:
        torch.manual_seed(0)
        model = build_model(_transformer_vae_spec(), VOCAB, [remedy]).train()
        out = model(batch, generator=torch.Generator().manual_seed(1))
        terms = elbo_terms(out)
        loss = training_objective(model.remedies, out, terms, batch, step=3, steps_per_epoch=5).loss()
        loss.backward()
        assert math.isfinite(float(loss.detach())), remedy["type"]
        assert model.decoder.z_to_memory.weight.grad.abs().sum() > 0, remedy["type"]


@pytest.mark.parametrize(
    "strategy",
    [
        {"type": "standard"},
        {"type": "aggressive", "max_inner_steps": 3, "check_every": 1},
        {"type": "pretrain_reset", "pretrain_steps": 2},
    ],
    ids=lambda s: s["type"],
)
def test_all_remedies_with_each_strategy_train_save_and_evaluate(tmp_path, strategy):
    root = _corpus(tmp_path)
    recipe = recipe_from_dict(
        {
            "data": {"dataset": "files", "root": str(root), "cache_dir": str(tmp_path / "cache")},
            "model": _transformer_vae_spec(),
            "remedies": ALL_REMEDIES,
            "strategy": strategy,
            "train": {
                "optimizer": "adam",
                "lr": 0.01,
                "batch_size": 8,
                "max_steps": 4,
                "progress_bar": False,
                "validate_every_steps": 2,
                "max_valid_sentences": 16,
                "threads": 1,
            },
        },
        source="test",
    )
    run_dir = tmp_path / strategy["type"]
    summary = train(recipe, run_dir)
    assert summary.progress.step == 4 and summary.progress.skipped_steps == 0
    loaded = textvae.load(run_dir)
    split = encode_split(recipe.data, "test", loaded.vocab)
    settings = EvalSettings(iw_samples=3, max_sentences=16, progress_bar=False)
    result = evaluate(loaded.model, split, loaded.vocab.pad_id, settings)
    for key in ("elbo", "iw_nll", "kl", "au", "mi_full"):
        assert math.isfinite(result.metrics[key]), key
    assert len(loaded.sample(2, strategy="beam", beam_size=2, max_len=8)) == 2


def test_state_dict_round_trip_keeps_the_tied_output_layer():
    decoder, other = _decoder(), GPT2Decoder(len(VOCAB), 3, VOCAB.pad_id, **TINY).eval()
    assert decoder.gpt2.lm_head.weight is decoder.gpt2.transformer.wte.weight  # GPT-2 ties them
    other.load_state_dict(decoder.state_dict())
    assert other.gpt2.lm_head.weight is other.gpt2.transformer.wte.weight
    tokens, z = _tokens(2, 5, 1), torch.randn(2, 3)
    with torch.no_grad():
        torch.testing.assert_close(other.logits(other(tokens, z)), decoder.logits(decoder(tokens, z)))
