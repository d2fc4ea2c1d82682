import pytest
import torch
import torch.nn.functional as F

from tests.conftest import tiny_vae_spec
from textvae.data.batching import collate
from textvae.models import build_model
from textvae.models.cross_entropy import sequence_nll


@pytest.mark.parametrize("z_init_state,z_concat_input", [(True, True), (True, False), (False, True)])
def test_lstm_decoder_is_causal(vocab, z_init_state, z_concat_input):
    torch.manual_seed(0)
    model = build_model(tiny_vae_spec(z_init_state=z_init_state, z_concat_input=z_concat_input), vocab).eval()
    tokens = torch.tensor([[1, 4, 5, 6, 7, 8, 9]])  # (1, T=7)
    z = torch.randn(1, 4)
    reference = model.decoder.logits(model.decoder(tokens, z))  # (1, T, V)
    for t in range(tokens.shape[1]):
        changed = tokens.clone()
        changed[0, t] = 10 if tokens[0, t] != 10 else 4
        logits = model.decoder.logits(model.decoder(changed, z))
        torch.testing.assert_close(logits[:, :t], reference[:, :t])  # nothing before t moves
        assert not torch.allclose(logits[:, t], reference[:, t])  # position t does


def test_z_changes_the_decoder_output(tiny_vae):
    tokens = torch.tensor([[1, 4, 5, 6]])
    first = tiny_vae.decoder(tokens, torch.zeros(1, 4))
    second = tiny_vae.decoder(tokens, torch.ones(1, 4))
    assert not torch.allclose(first, second)


def test_encoder_ignores_padding(tiny_vae, vocab, batch):
    together = tiny_vae.encode(batch)
    for b in range(len(batch)):
        length = int(batch.lengths[b])
        alone = tiny_vae.encode(collate([batch.tokens[b, :length].tolist()], [0], vocab.pad_id))
        torch.testing.assert_close(alone.mean[0], together.mean[b])
        torch.testing.assert_close(alone.logvar[0], together.logvar[b])


def test_bidirectional_encoder_ignores_padding(vocab, batch):
    torch.manual_seed(0)
    spec = tiny_vae_spec()
    spec["encoder"].update(bidirectional=True, num_layers=2)
    model = build_model(spec, vocab).eval()
    together = model.encode(batch)
    alone = model.encode(collate([batch.tokens[2, :3].tolist()], [0], vocab.pad_id))
    torch.testing.assert_close(alone.mean[0], together.mean[2])


def test_sequence_nll_matches_cross_entropy_over_full_logits(tiny_vae, batch):
    z = torch.randn(3, 4)
    hidden = tiny_vae.decoder(batch.decoder_inputs, z)  # (B, T, H)
    nll = sequence_nll(tiny_vae.decoder.logits, hidden, batch.targets, batch.target_mask)
    full = F.cross_entropy(tiny_vae.decoder.logits(hidden).transpose(1, 2), batch.targets, reduction="none")  # (B, T)
    torch.testing.assert_close(nll, (full * batch.target_mask).sum(1))
    with torch.no_grad():  # the sliced evaluation path gives the same numbers
        torch.testing.assert_close(
            sequence_nll(tiny_vae.decoder.logits, hidden, batch.targets, batch.target_mask), nll.detach()
        )


def test_log_likelihood_of_k_samples_matches_one_at_a_time(tiny_vae, batch):
    z = torch.randn(5, 3, 4)  # (K, B, D)
    together = tiny_vae.log_likelihood(batch, z)  # (K, B)
    assert together.shape == (5, 3)
    for k in range(5):
        torch.testing.assert_close(together[k], -tiny_vae.reconstruction_nll(batch, z[k]))


def test_language_model_has_no_latent(tiny_lm, batch):
    out = tiny_lm(batch)
    assert out.posterior is None and out.z is None
    assert out.rec.shape == (3,)
    assert tiny_lm.log_likelihood(batch).shape == (3,)


@pytest.mark.parametrize("num_layers", [1, 2])
def test_lstm_encoder_summary_is_the_state_at_the_last_real_token(num_layers):
    """The unpacked fast path gives the packed pass's final state: padding never reaches the summary."""
    from torch.nn.utils.rnn import pack_padded_sequence

    from textvae.models.encoders import LSTMEncoder

    torch.manual_seed(0)
    encoder = LSTMEncoder(20, 4, 0, embed_dim=5, hidden_dim=6, num_layers=num_layers, weight_init_range=0.5).eval()
    lengths = torch.tensor([7, 4, 2])
    tokens = torch.randint(1, 20, (3, 7))
    tokens[torch.arange(7).unsqueeze(0) >= lengths.unsqueeze(1)] = 0  # pad after each sentence
    _, summary = encoder(tokens, lengths)
    packed = pack_padded_sequence(encoder.embedding(tokens), lengths, batch_first=True, enforce_sorted=False)
    _, (h_n, _) = encoder.lstm(packed)  # (layers, B, H)
    torch.testing.assert_close(summary, h_n[-1])
    longer = torch.cat([tokens, torch.randint(1, 20, (3, 2))], dim=1)  # different tokens after the end
    torch.testing.assert_close(encoder(longer, lengths)[1], summary)
