import math

import torch

from textvae.remedies.word_dropout import WordDropout


def test_rate_is_within_a_binomial_band_and_specials_are_never_replaced():
    torch.manual_seed(0)
    remedy = WordDropout(pad_id=0, bos_id=1, eos_id=2, unk_id=3, keep_prob=0.7)
    tokens = torch.randint(4, 50, (64, 40))
    tokens[:, 0] = 1
    tokens[:, 30] = 2
    tokens[:, 31:] = 0
    out = remedy.decoder_inputs(tokens)
    words = tokens >= 4
    replaced = out != tokens
    n = int(words.sum())
    expected, sd = n * 0.3, math.sqrt(n * 0.3 * 0.7)
    assert abs(int(replaced.sum()) - expected) < 4 * sd
    assert torch.all(out[replaced] == 3)
    assert torch.equal(out[~words], tokens[~words])  # PAD, BOS, EOS untouched


def test_keep_prob_zero_is_the_inputless_decoder_and_one_is_a_no_op():
    tokens = torch.tensor([[1, 5, 6, 7, 2, 0]])
    inputless = WordDropout(0, 1, 2, 3, keep_prob=0.0).decoder_inputs(tokens)
    assert inputless.tolist() == [[1, 3, 3, 3, 2, 0]]
    assert torch.equal(WordDropout(0, 1, 2, 3, keep_prob=1.0).decoder_inputs(tokens), tokens)


def test_off_at_evaluation(vocab, batch):
    from tests.conftest import tiny_vae_spec
    from textvae.models import build_model

    torch.manual_seed(0)
    spec = tiny_vae_spec(weight_init_range=0.5)  # large enough weights that the inputs visibly matter
    model = build_model(spec, vocab, [{"type": "word_dropout", "keep_prob": 0.0}]).eval()
    generator_a, generator_b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    plain = build_model(spec, vocab).eval()
    plain.load_state_dict(model.state_dict())
    torch.testing.assert_close(model(batch, generator=generator_a).rec, plain(batch, generator=generator_b).rec)
    model.train()
    assert not torch.allclose(
        model(batch, generator=torch.Generator().manual_seed(1)).rec,
        plain(batch, generator=torch.Generator().manual_seed(1)).rec,
    )
