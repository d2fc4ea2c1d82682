import torch

from textvae.remedies.bow_loss import BagOfWordsLoss


def test_bag_of_words_loss_matches_its_definition_and_ignores_padding():
    torch.manual_seed(0)
    remedy = BagOfWordsLoss(latent_dim=4, vocab_size=11, hidden_dim=5)
    z = torch.randn(3, 4)
    targets = torch.tensor([[4, 5, 6, 2], [7, 2, 0, 0], [8, 8, 2, 0]])
    mask = targets != 0
    nll = remedy.bow_nll(z, targets, mask)
    log_probs = remedy.predictor(z).log_softmax(-1)
    expected = torch.stack([-sum(log_probs[b, t] for t in targets[b][mask[b]]) for b in range(3)])
    torch.testing.assert_close(nll, expected)
    changed = targets.clone()
    changed[~mask] = 9  # whatever stands in the padding does not count
    torch.testing.assert_close(remedy.bow_nll(z, changed, mask), nll)


def test_bow_is_an_extra_reported_term_with_its_weight(tiny_vae, vocab, batch):
    from tests.conftest import tiny_vae_spec
    from textvae.models import build_model
    from textvae.objective import elbo_terms
    from textvae.remedies.base import training_objective

    model = build_model(tiny_vae_spec(), vocab, [{"type": "bow_loss", "hidden_dim": 7, "weight": 0.5}])
    out = model(batch)
    terms = elbo_terms(out)
    objective = training_objective(model.remedies, out, terms, batch, step=0, steps_per_epoch=1)
    assert set(objective.terms) == {"rec", "kl", "bow"} and objective.weights["bow"] == 0.5
    expected = (terms.rec + terms.kl + 0.5 * objective.terms["bow"]).mean()
    torch.testing.assert_close(objective.loss(), expected)
