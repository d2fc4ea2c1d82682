"""Decoding constraints on a decoder whose logits are known (a first-order Markov table), for greedy,
sampling and beam search; the EOS-aware length penalty against brute force; and cached decoding equal
to recomputing the prefix with every constraint on (LSTM, dilated CNN, GPT-2)."""

import itertools

import pytest
import torch
from torch import nn

from textvae.data.vocab import Vocab
from textvae.errors import TextVAEError
from textvae.generation.decoding import DecodeSettings, decode
from textvae.models import build_model
from textvae.models.transformer_decoder import GPT2Decoder

PAD, BOS, EOS, UNK, A, B, C = range(7)  # V = 7
NEG = -30.0


class MarkovDecoder(nn.Module):
    """next-token logits = ``table[last token]``: every step's logits are known exactly; z is ignored."""

    def __init__(self, table: dict[int, dict[int, float]], fill: float = NEG):
        super().__init__()
        logits = torch.full((7, 7), fill)
        for source, row in table.items():
            for target, value in row.items():
                logits[source, target] = value
        self.register_buffer("table", logits)

    def initial_state(self, z, batch_size):
        return None

    def step(self, tokens, state, z):
        return self.table[tokens], state

    def reorder_state(self, state, index):
        return state


# from BOS: unk is the best token; after a word: the same word again (a loop), then the next word
LOOPING = MarkovDecoder(
    {
        BOS: {UNK: 5.0, A: 4.0, EOS: 1.0},
        UNK: {UNK: 5.0, A: 4.0, EOS: 0.5},
        A: {A: 2.0, B: 1.5, EOS: 0.0},
        B: {B: 2.0, C: 1.5, A: 1.0, EOS: 0.0},
        C: {C: 2.0, A: 1.5, EOS: 0.5},
    }
)
Z = torch.zeros(2, 3)
STRATEGIES = [
    DecodeSettings,
    lambda **k: DecodeSettings("sample", top_k=2, **k),
    lambda **k: DecodeSettings("beam", **k),
]


def _decode(decoder, settings, unk_id=UNK, seed=0, rows=2):
    return decode(decoder, Z[:rows], rows, BOS, EOS, settings, torch.Generator().manual_seed(seed), unk_id=unk_id)


def test_unk_is_emitted_unless_forbidden():
    assert _decode(LOOPING, DecodeSettings(max_len=4, forbid_unk=False)) == [[UNK] * 4] * 2
    assert _decode(LOOPING, DecodeSettings(max_len=4), unk_id=None) == [[UNK] * 4] * 2  # scoring: no unk_id
    assert _decode(LOOPING, DecodeSettings(max_len=4)) == [[A] * 4] * 2
    for make in STRATEGIES:
        for seed in range(5):
            assert all(UNK not in row for row in _decode(LOOPING, make(max_len=8), seed=seed))


def test_unk_that_is_also_eos_is_not_suppressed():
    """A pretrained GPT-2 vocabulary spells BOS, EOS and unk with one token: banning it would ban EOS."""
    ends = MarkovDecoder({BOS: {EOS: 3.0, A: 1.0}})
    assert _decode(ends, DecodeSettings(max_len=4), unk_id=EOS) == [[], []]


@pytest.mark.parametrize("size", [1, 2, 3])
@pytest.mark.parametrize("make", STRATEGIES)
def test_no_repeat_ngram_never_repeats_an_ngram(size, make):
    unconstrained = _decode(LOOPING, make(max_len=12, min_len=11))
    assert any(len(set(zip(*[r[i:] for i in range(size)], strict=False))) < len(r) - size + 1 for r in unconstrained)
    for seed in range(3):
        for row in _decode(LOOPING, make(max_len=12, no_repeat_ngram_size=size), seed=seed):
            ngrams = list(zip(*[row[i:] for i in range(size)], strict=False))
            assert len(set(ngrams)) == len(ngrams), row


def test_no_repeat_bigram_greedy_output_is_the_predicted_one():
    # a a, (a,a) seen → b; b, (b,b) seen → c; c, (c,c) seen → a; then (a,a) and (a,b) seen: EOS
    assert _decode(LOOPING, DecodeSettings(max_len=12, no_repeat_ngram_size=2)) == [[A, A, B, B, C, C, A]] * 2


def test_repetition_penalty_divides_a_seen_positive_logit():
    """After ``a`` the logits are a 2.0, b 1.5: a penalty p keeps ``a`` while 2.0 / p > 1.5, i.e. p < 4/3."""
    mild = _decode(LOOPING, DecodeSettings(max_len=3, repetition_penalty=1.3))
    strong = _decode(LOOPING, DecodeSettings(max_len=3, repetition_penalty=1.4))
    assert mild == [[A, A, A]] * 2
    # b: 2.0 / 1.4 = 1.43 < c 1.5 → c; c: c 1.43 vs a 1.5 / 1.4 = 1.07 → c
    assert strong == [[A, B, C]] * 2


@pytest.mark.parametrize("make", STRATEGIES)
def test_min_len_bans_eos_until_that_many_words(make):
    """EOS is e⁹ times likelier than the one word allowed after each token (so sampling stops too)."""
    ends = MarkovDecoder({BOS: {EOS: 10.0, A: 1.0}, A: {EOS: 10.0, B: 1.0}, B: {EOS: 10.0, C: 1.0}, C: {EOS: 10.0}})
    assert _decode(ends, make(max_len=6)) == [[], []]
    assert _decode(ends, make(max_len=6, min_len=2)) == [[A, B]] * 2
    assert _decode(ends, make(max_len=6, min_len=3)) == [[A, B, C]] * 2


def _normalized_score(decoder, words, max_len, length_penalty):
    """The beam's ranking rule, by brute force: log p(words [+ EOS]) / length ** penalty, EOS counted."""
    tokens = [BOS, *words]
    steps = [*words, EOS] if len(words) < max_len else words
    logp = sum(float(decoder.table[tokens[i]].log_softmax(-1)[t]) for i, t in enumerate(steps))
    return logp / len(steps) ** length_penalty


@pytest.mark.parametrize("seed", range(12))
def test_beam_length_penalty_matches_brute_force(seed):
    """On random tables over {a, b, c, </s>} (other tokens impossible), an exhaustive beam returns the
    sequence that brute force ranks first, finished or cut at max_len, for each penalty."""
    values = torch.randn(4, 4, generator=torch.Generator().manual_seed(seed)) * 2  # (from, to) over BOS, a, b, c
    rows = {
        source: dict(zip((EOS, A, B, C), values[i].tolist(), strict=True)) for i, source in enumerate((BOS, A, B, C))
    }
    decoder = MarkovDecoder(rows, fill=float("-inf"))
    max_len = 4
    words = [list(w) for n in range(max_len + 1) for w in itertools.product((A, B, C), repeat=n)]
    for penalty in (0.0, 0.5, 1.0, 2.0):
        best = max(words, key=lambda w: _normalized_score(decoder, w, max_len, penalty))
        settings = DecodeSettings("beam", beam_size=len(words), max_len=max_len, length_penalty=penalty)
        assert _decode(decoder, settings, rows=1) == [best], penalty


def test_the_brute_force_cases_distinguish_the_penalties():
    """The seeds above are not all decided the same way by every penalty (else the test could not fail)."""
    max_len, winners = 4, set()
    words = [list(w) for n in range(max_len + 1) for w in itertools.product((A, B, C), repeat=n)]
    for seed in range(12):
        values = torch.randn(4, 4, generator=torch.Generator().manual_seed(seed)) * 2
        rows = {s: dict(zip((EOS, A, B, C), values[i].tolist(), strict=True)) for i, s in enumerate((BOS, A, B, C))}
        decoder = MarkovDecoder(rows, fill=float("-inf"))
        ranked = [max(words, key=lambda w, p=p: _normalized_score(decoder, w, max_len, p)) for p in (0.0, 1.0, 2.0)]
        winners.add(tuple(len(w) for w in ranked))
    assert any(len(set(lengths)) > 1 for lengths in winners)  # a penalty changes the winner's length
    assert any(max_len in lengths for lengths in winners)  # a hypothesis cut at max_len wins somewhere


def test_beam_keeps_unfinished_hypotheses_at_max_len_in_the_ranking():
    """Nothing finishes likely: the best live hypothesis at max_len wins over an unlikely finished one."""
    decoder = MarkovDecoder({BOS: {A: 3.0, EOS: 0.0}, A: {A: 3.0, EOS: 0.0}})
    assert _decode(decoder, DecodeSettings("beam", beam_size=3, max_len=3), rows=1) == [[A, A, A]]


@pytest.mark.parametrize(
    "kwargs", [{"min_len": 5, "max_len": 5}, {"min_len": -1}, {"no_repeat_ngram_size": -1}, {"repetition_penalty": 0}]
)
def test_bad_constraint_settings_are_errors(kwargs):
    with pytest.raises(TextVAEError):
        DecodeSettings(**kwargs)


class Recomputing(nn.Module):
    """A decoder whose ``step`` runs the full forward pass over the prefix it carries (no cache)."""

    def __init__(self, decoder):
        super().__init__()
        self.decoder = decoder

    def initial_state(self, z, batch_size):
        return torch.zeros(batch_size, 0, dtype=torch.long)

    def step(self, tokens, prefix, z):
        prefix = torch.cat([prefix, tokens.unsqueeze(1)], dim=1)
        return self.decoder.logits(self.decoder(prefix, z)[:, -1]), prefix

    def reorder_state(self, prefix, index):
        return prefix[index]


VOCAB = Vocab(words=("<pad>", "<s>", "</s>", "<unk>", *"abcdefghi"))  # V = 13
SMALL = {"embed_dim": 6, "hidden_dim": 8}
CONSTRAINED = {"min_len": 3, "no_repeat_ngram_size": 2, "repetition_penalty": 1.5, "max_len": 14}


def _real_decoder(name):
    torch.manual_seed(0)
    if name == "gpt2":
        tiny = {"num_layers": 2, "hidden_dim": 12, "num_heads": 3, "max_positions": 40, "dropout": 0.0}
        return GPT2Decoder(len(VOCAB), 3, VOCAB.pad_id, **tiny).eval()
    decoder = {
        "lstm": {"type": "lstm", **SMALL},
        "scnn": {"type": "dilated_cnn", "preset": "scnn", "embed_dim": 6, "channels": 8},
    }[name]
    spec = {"type": "vae", "latent_dim": 3, "encoder": {"type": "lstm", **SMALL}, "decoder": decoder}
    return build_model(spec, VOCAB).eval().decoder


@pytest.mark.parametrize("name", ["lstm", "scnn", "gpt2"])
@pytest.mark.parametrize("strategy", ["greedy", "sample", "beam"])
def test_cached_decoding_with_constraints_equals_recomputing(name, strategy):
    decoder = _real_decoder(name)
    z = torch.randn(3, 3, generator=torch.Generator().manual_seed(5))
    settings = DecodeSettings(strategy, beam_size=3, top_p=0.9 if strategy == "sample" else None, **CONSTRAINED)

    def run(d):
        return decode(d, z, 3, VOCAB.bos_id, VOCAB.eos_id, settings, torch.Generator().manual_seed(7), VOCAB.unk_id)

    cached = run(decoder)
    assert cached == run(Recomputing(decoder))
    for row in cached:
        bigrams = list(itertools.pairwise(row))
        assert len(row) >= 3 and VOCAB.unk_id not in row and len(set(bigrams)) == len(bigrams)
