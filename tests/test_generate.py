import pytest
import torch

from textvae.errors import TextVAEError
from textvae.generation.decoding import DecodeSettings, decode, filter_logits


def test_filter_logits_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(filter_logits(logits, top_k=2, top_p=None))
    assert kept.tolist() == [[True, True, False, False]]
    kept = torch.isfinite(filter_logits(logits, top_k=None, top_p=0.7))  # 0.5 < 0.7 ≤ 0.8: two tokens
    assert kept.tolist() == [[True, True, False, False]]
    kept = torch.isfinite(filter_logits(logits, top_k=None, top_p=0.4))  # the top token alone
    assert kept.tolist() == [[True, False, False, False]]
    shuffled = logits[:, [2, 0, 3, 1]]
    assert torch.isfinite(filter_logits(shuffled, None, 0.7)).tolist() == [[False, True, False, True]]


def test_greedy_is_deterministic_and_beam_of_one_equals_greedy(tiny_vae, vocab):
    z = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    greedy = decode(tiny_vae.decoder, z, 3, vocab.bos_id, vocab.eos_id, DecodeSettings(max_len=12))
    assert greedy == decode(tiny_vae.decoder, z, 3, vocab.bos_id, vocab.eos_id, DecodeSettings(max_len=12))
    beam = decode(tiny_vae.decoder, z, 3, vocab.bos_id, vocab.eos_id, DecodeSettings("beam", beam_size=1, max_len=12))
    assert beam == greedy


def test_beam_search_finds_at_least_the_greedy_score(tiny_vae, vocab):
    z = torch.randn(2, 4, generator=torch.Generator().manual_seed(1))

    def score(ids, row):
        tokens = torch.tensor([[vocab.bos_id, *ids]])
        targets = torch.tensor([[*ids, vocab.eos_id]])
        logp = tiny_vae.decoder.logits(tiny_vae.decoder(tokens, z[row : row + 1])).log_softmax(-1)
        return float(logp.gather(-1, targets.unsqueeze(-1)).sum())

    settings = DecodeSettings("beam", beam_size=8, length_penalty=0.0, max_len=12)
    greedy = decode(tiny_vae.decoder, z, 2, vocab.bos_id, vocab.eos_id, DecodeSettings(max_len=12))
    beam = decode(tiny_vae.decoder, z, 2, vocab.bos_id, vocab.eos_id, settings)
    for row in range(2):
        if len(greedy[row]) < 12:  # greedy finished with EOS: beam's best finished one is at least as likely
            assert score(beam[row], row) >= score(greedy[row], row) - 1e-5


def test_a_model_that_never_emits_eos_stops_at_max_len(tiny_vae, vocab):
    with torch.no_grad():
        tiny_vae.decoder.output.bias[vocab.eos_id] = -1e4
    z = torch.zeros(2, 4)
    for settings in (DecodeSettings(max_len=9), DecodeSettings("sample", max_len=9), DecodeSettings("beam", max_len=9)):
        outputs = decode(tiny_vae.decoder, z, 2, vocab.bos_id, vocab.eos_id, settings, torch.Generator().manual_seed(0))
        assert [len(o) for o in outputs] == [9, 9]


def test_sampling_is_seeded_and_respects_top_k(tiny_vae, vocab):
    z = torch.zeros(4, 4)
    settings = DecodeSettings("sample", top_k=1, max_len=10)
    greedy = decode(tiny_vae.decoder, z, 4, vocab.bos_id, vocab.eos_id, DecodeSettings(max_len=10))
    assert decode(tiny_vae.decoder, z, 4, vocab.bos_id, vocab.eos_id, settings, torch.Generator()) == greedy
    hot = DecodeSettings("sample", temperature=2.0, max_len=10)
    first = decode(tiny_vae.decoder, z, 4, vocab.bos_id, vocab.eos_id, hot, torch.Generator().manual_seed(3))
    again = decode(tiny_vae.decoder, z, 4, vocab.bos_id, vocab.eos_id, hot, torch.Generator().manual_seed(3))
    assert first == again


def test_language_model_generates_without_z(tiny_lm, vocab):
    outputs = decode(tiny_lm.decoder, None, 2, vocab.bos_id, vocab.eos_id, DecodeSettings("beam", max_len=5))
    assert len(outputs) == 2 and all(len(o) <= 5 for o in outputs)


@pytest.mark.parametrize(
    "kwargs", [{"temperature": 0}, {"top_p": 1.5}, {"top_k": 0}, {"beam_size": 0}, {"max_len": 0}, {"strategy": "x"}]
)
def test_bad_decode_settings_are_errors(kwargs):
    with pytest.raises(TextVAEError):
        DecodeSettings(**kwargs)
