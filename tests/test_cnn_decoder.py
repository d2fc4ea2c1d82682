"""The dilated-CNN decoder (Yang et al. 2017): causality and receptive field of every preset,
cached generation equal to recomputing the prefix (for it and for the LSTM), the CNN language model."""

import pytest
import torch

from textvae.data.vocab import Vocab
from textvae.errors import TextVAEError
from textvae.generation.decoding import DecodeSettings, decode
from textvae.models import build_model
from textvae.models.cnn_decoder import PRESETS, DilatedCNNDecoder, receptive_field

VOCAB_SIZE = 13


def _cnn(**kwargs) -> DilatedCNNDecoder:
    torch.manual_seed(0)
    return DilatedCNNDecoder(VOCAB_SIZE, latent_dim=3, pad_id=0, embed_dim=6, channels=8, **kwargs).eval()


def test_receptive_fields_of_the_presets():
    assert {name: receptive_field(3, d) for name, d in PRESETS.items()} == {
        "scnn": 15,
        "mcnn": 63,
        "lcnn": 125,
        "vlcnn": 187,
    }
    assert receptive_field(2, (1, 1, 1)) == 4


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_is_causal_with_exactly_its_receptive_field(preset, monkeypatch):
    """Changing the input at position p changes the outputs at p .. p + R − 1 and no other.

    ReLU can zero a path by chance, so the connectivity is checked with a leaky ReLU in its place
    (causality, the first and last assertions, is checked with the ReLU too)."""
    decoder = _cnn(preset=preset)
    tokens = torch.randint(1, VOCAB_SIZE, (2, decoder.receptive_field + 12), generator=torch.Generator().manual_seed(1))
    z = torch.randn(2, 3, generator=torch.Generator().manual_seed(2))
    changed = tokens.clone()
    changed[:, 5] = (tokens[:, 5] % (VOCAB_SIZE - 1)) + 1
    with torch.no_grad():
        moved = (decoder(tokens, z) - decoder(changed, z)).abs().amax(dim=(0, 2)) > 0
    assert not moved[:5].any() and not moved[5 + decoder.receptive_field :].any()
    monkeypatch.setattr(torch.nn.functional, "relu", lambda x: torch.nn.functional.leaky_relu(x, 0.1))
    decoder = decoder.double()  # in float32 a far path's contribution can round away against the residual
    field = decoder.receptive_field
    length, p = field + 12, 5
    tokens = torch.randint(1, VOCAB_SIZE, (2, length), generator=torch.Generator().manual_seed(1))
    z = torch.randn(2, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    changed = tokens.clone()
    changed[:, p] = (tokens[:, p] % (VOCAB_SIZE - 1)) + 1  # a different real token
    with torch.no_grad():
        before, after = decoder(tokens, z), decoder(changed, z)  # (B, T, C)
    moved = (before - after).abs().amax(dim=(0, 2)) > 0  # (T,)
    assert not moved[:p].any()  # the past never sees the future
    assert moved[p : p + field].all()  # every position inside the window sees it
    assert not moved[p + field :].any()  # and nothing beyond the window does


def test_custom_dilations_and_bad_settings():
    assert _cnn(dilations=[1, 3], kernel_size=2).receptive_field == 5
    with pytest.raises(TextVAEError, match="dilations must be"):
        _cnn(dilations=[1, 0])
    with pytest.raises(TextVAEError, match="kernel_size must be"):
        _cnn(dilations=[1], kernel_size=1)


def _uncached_greedy(decoder, z, batch_size, max_len):
    """Greedy decoding that recomputes the whole prefix with the full forward pass at every token."""
    prefix = torch.full((batch_size, 1), VOCAB.bos_id, dtype=torch.long)
    for _ in range(max_len):
        logits = decoder.logits(decoder(prefix, z)[:, -1])  # (B, V)
        prefix = torch.cat([prefix, logits.argmax(-1, keepdim=True)], dim=1)
    ids = prefix[:, 1:].tolist()
    return [row[: row.index(VOCAB.eos_id)] if VOCAB.eos_id in row else row for row in ids]


def _cached_logits(decoder, z, bos_id, max_len, tokens_to_feed):
    state = decoder.initial_state(z, tokens_to_feed.shape[0])
    tokens, logits = torch.full((tokens_to_feed.shape[0],), bos_id, dtype=torch.long), []
    for t in range(max_len):
        step_logits, state = decoder.step(tokens, state, z)
        logits.append(step_logits)
        tokens = tokens_to_feed[:, t]
    return logits


VOCAB = Vocab(words=("<pad>", "<s>", "</s>", "<unk>", *"abcdefghi"))
DECODERS = {
    "lstm": {"type": "lstm", "embed_dim": 6, "hidden_dim": 8},
    "scnn": {"type": "dilated_cnn", "preset": "scnn", "embed_dim": 6, "channels": 8},
    "mcnn": {"type": "dilated_cnn", "preset": "mcnn", "embed_dim": 6, "channels": 8},
}


@pytest.mark.parametrize("name", list(DECODERS))
@pytest.mark.parametrize("model_type", ["vae", "lm"])
def test_cached_generation_equals_recomputing_the_prefix(name, model_type):
    torch.manual_seed(0)
    spec = {"type": model_type, "decoder": DECODERS[name]}
    if model_type == "vae":
        spec |= {"latent_dim": 3, "encoder": {"type": "lstm", "embed_dim": 6, "hidden_dim": 8}}
    model = build_model(spec, VOCAB).eval()
    decoder = model.decoder
    z = torch.randn(4, 3, generator=torch.Generator().manual_seed(3)) if model_type == "vae" else None
    batch = 4
    max_len = 30
    uncached = _uncached_greedy(decoder, z, batch, max_len)
    cached = decode(decoder, z, batch, VOCAB.bos_id, VOCAB.eos_id, DecodeSettings(max_len=max_len))
    assert cached == uncached
    # and step by step, fed the same tokens, the logits agree to float precision
    fed = torch.randint(4, len(VOCAB), (batch, max_len), generator=torch.Generator().manual_seed(4))
    step_logits = _cached_logits(decoder, z, VOCAB.bos_id, max_len, fed)
    inputs = torch.cat([torch.full((batch, 1), VOCAB.bos_id), fed[:, :-1]], dim=1)
    with torch.no_grad():
        full = decoder.logits(decoder(inputs, z))  # (B, T, V)
    for t, logits in enumerate(step_logits):
        torch.testing.assert_close(logits, full[:, t], rtol=1e-5, atol=1e-5)


class Recomputing:
    """A decoder whose ``step`` runs the full forward pass over the prefix it carries (no cache)."""

    def __init__(self, decoder):
        self.decoder = decoder

    def initial_state(self, z, batch_size):
        return torch.zeros(batch_size, 0, dtype=torch.long)

    def step(self, tokens, prefix, z):
        prefix = torch.cat([prefix, tokens.unsqueeze(1)], dim=1)
        return self.decoder.logits(self.decoder(prefix, z)[:, -1]), prefix

    def reorder_state(self, prefix, index):
        return prefix[index]


@pytest.mark.parametrize("name", ["scnn", "lstm"])
def test_beam_search_with_cached_state_equals_beam_search_recomputing_the_prefix(name):
    """Beam search reorders the cached histories (CNN) or states (LSTM) correctly."""
    torch.manual_seed(0)
    spec = {"type": "vae", "latent_dim": 3, "encoder": DECODERS["lstm"], "decoder": DECODERS[name]}
    model = build_model(spec, VOCAB).eval()
    z = torch.randn(3, 3, generator=torch.Generator().manual_seed(5))
    settings = DecodeSettings("beam", beam_size=4, max_len=15)
    cached = decode(model.decoder, z, 3, VOCAB.bos_id, VOCAB.eos_id, settings)
    recomputed = decode(Recomputing(model.decoder), z, 3, VOCAB.bos_id, VOCAB.eos_id, settings)
    assert cached == recomputed


def test_the_cnn_language_model_and_vae_report_the_receptive_field(caplog):
    caplog.set_level("INFO", logger="textvae")
    build_model({"type": "lm", "decoder": {**DECODERS["mcnn"]}}, VOCAB)
    assert "receptive field 63 words" in caplog.text
    with pytest.raises(TextVAEError, match="'xlcnn' is not one of"):
        build_model({"type": "lm", "decoder": {**DECODERS["mcnn"], "preset": "xlcnn"}}, VOCAB)
