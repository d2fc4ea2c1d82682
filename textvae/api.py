"""The Python API: ``textvae.load(run_dir)`` → a TextModel that encodes, scores and generates text."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from textvae.checkpoint import load_weights, read_checkpoint_strict, resolve_checkpoint
from textvae.config import Recipe, recipe_from_dict
from textvae.data.batching import Batch, collate
from textvae.data.corpus import sentence_tokens
from textvae.data.vocab import Vocab
from textvae.distributions import DiagGaussian
from textvae.errors import TextVAEError
from textvae.evaluation.device import module_device, resolve_device
from textvae.generation.decoding import DecodeSettings, decode
from textvae.hub.model_dir import WEIGHTS, is_export_dir, load_export
from textvae.hub.shipped import resolve_model
from textvae.models import build_model

log = logging.getLogger(__name__)


@dataclass
class LoadedCheckpoint:
    recipe: Recipe
    vocab: Vocab
    model: torch.nn.Module
    payload: dict[str, Any]


def load_checkpoint(path: Path) -> LoadedCheckpoint:
    """Rebuild the model from the checkpoint's own config and vocab and load its weights strictly.

    A damaged file is an error here, never silently replaced by an older one: the error names the
    ``.prev`` copy training kept, if there is one, so the user can evaluate that one on purpose."""
    payload = read_checkpoint_strict(path)
    try:
        recipe = recipe_from_dict(json.loads(payload["config"]), source=f"{path} (config)")
        vocab = Vocab.from_json(payload["vocab"])
    except (json.JSONDecodeError, TypeError) as err:
        raise TextVAEError(f"{path}: checkpoint config or vocab is not valid JSON ({err})") from None
    model = load_weights(build_model(recipe.model, vocab, recipe.remedies), payload["model"], path, "config/vocab")
    return LoadedCheckpoint(recipe, vocab, model, payload)


def load_model(path: str | Path, which: str | None = None) -> tuple[LoadedCheckpoint, Path]:
    """The model of a run directory (its ``{which}.pt``, ``best.pt`` when None), a checkpoint file, a
    directory written by ``textvae export`` or a model shipped with textvae by name (``"kjv"``), on the
    CPU in eval mode, and the file its weights came from. An exported or shipped model holds one set of
    weights: a ``which`` given for it is logged as not applying, not an error."""
    path = resolve_model(path)
    if is_export_dir(path):
        if which is not None:
            log.warning("%s holds one weights file (model.safetensors): the %r choice does not apply", path, which)
        recipe, vocab, model, metadata = load_export(path)
        payload = {"format": metadata["format"], "metadata": metadata}  # no checkpoint: the safetensors metadata
        return LoadedCheckpoint(recipe, vocab, model, payload), path / WEIGHTS
    checkpoint = resolve_checkpoint(path, which)
    return load_checkpoint(checkpoint), checkpoint


class TextModel:
    """A trained model with its vocabulary and the tokenization of its training corpus."""

    def __init__(self, model, vocab, recipe):
        self.model = model.eval()
        self.vocab = vocab
        self.recipe = recipe

    @classmethod
    def from_checkpoint(cls, path: str | Path, which: str | None = None, device: str | None = "cpu") -> TextModel:
        """The model of a run directory (``{which}.pt``, ``best.pt`` when None), checkpoint file, exported
        directory (``textvae export``) or shipped model name (``textvae.api.load_model``) on ``device``:
        ``cpu``, ``cuda``, ``auto`` (the GPU when CUDA is available)
        or None (the recipe's ``eval.device``)."""
        loaded, _ = load_model(path, which)  # weights mapped to the CPU first
        choice, what = (loaded.recipe.eval.device, "eval.device") if device is None else (device, "--device")
        return cls(loaded.model.to(resolve_device(choice, what)), loaded.vocab, loaded.recipe)

    @property
    def device(self) -> torch.device:
        return module_device(self.model)

    @property
    def has_latent(self) -> bool:
        return self.model.has_latent

    @property
    def latent_dim(self) -> int:
        return self.model.latent_dim

    def batch(self, sentences: Sequence[str]) -> Batch:
        """BOS + word ids + EOS for each sentence, padded; unknown words become unk."""
        if isinstance(sentences, str):
            raise TextVAEError("expected a list of sentences, got a single string")
        rows = []
        for number, sentence in enumerate(sentences, start=1):
            words = sentence_tokens(self.recipe.data, sentence)
            if not words:
                raise TextVAEError(f"sentence {number} is empty")
            rows.append([self.vocab.bos_id, *self.vocab.encode(words), self.vocab.eos_id])
        if not rows:
            raise TextVAEError("no sentences given")
        return collate(rows, range(len(rows)), self.vocab.pad_id)

    def _require_latent(self, what: str) -> None:
        if not self.has_latent:
            raise TextVAEError(f"{what} needs a model with a latent variable; this one is a language model")

    @torch.no_grad()
    def encode(self, sentences: Sequence[str]) -> DiagGaussian:
        """The posterior q(z|x) of each sentence: ``.mean`` and ``.logvar`` are (N, D)."""
        self._require_latent("encode")
        return self.model.encode(self.batch(sentences).to(self.device))

    @torch.no_grad()
    def log_likelihood(self, sentences: Sequence[str], z: Tensor | None = None) -> Tensor:
        """log p(x|z) per sentence: z (N, D) → (N,), or z (K, N, D) → (K, N). For an LM, log p(x)."""
        batch = self.batch(sentences).to(self.device)
        if not self.has_latent:
            return self.model.log_likelihood(batch)
        if z is None:
            raise TextVAEError("log_likelihood needs z for a VAE")
        single = z.dim() == 2
        z = z.unsqueeze(0) if single else z
        if z.shape[-2:] != (len(batch), self.latent_dim):
            raise TextVAEError(f"z must be ({len(batch)}, {self.latent_dim}), got {tuple(z.shape)}")
        scores = self.model.log_likelihood(batch, z.to(self.device))
        return scores[0] if single else scores

    def _decode(self, z: Tensor | None, count: int, settings: DecodeSettings, seed: int) -> list[str]:
        device = next(self.model.parameters()).device  # z and the sampling generator live with the model
        generator = torch.Generator(device=device).manual_seed(seed)
        z = None if z is None else z.to(device)
        vocab = self.vocab
        ids = decode(self.model.decoder, z, count, vocab.bos_id, vocab.eos_id, settings, generator, vocab.unk_id)
        return [vocab.detokenize(row) for row in ids]

    def generate(self, z: Tensor | None, seed: int = 0, **settings) -> list[str]:
        """Decode one sentence per row of z (N, D); ``settings`` are DecodeSettings fields."""
        if self.has_latent:
            if z is None or z.dim() != 2 or z.shape[1] != self.latent_dim:
                raise TextVAEError(f"z must be (N, {self.latent_dim})")
            return self._decode(z, z.shape[0], DecodeSettings(**settings), seed)
        if z is not None:
            raise TextVAEError("a language model takes no z")
        raise TextVAEError("use sample(n) for a language model")

    def sample(self, num: int, seed: int = 0, **settings) -> list[str]:
        """``num`` sentences from the prior: z ~ N(0, I) (or from the LM itself)."""
        if num < 1:
            raise TextVAEError(f"number of samples must be ≥ 1, got {num}")
        generator = torch.Generator(device=self.device).manual_seed(seed)
        z = torch.randn(num, self.latent_dim, generator=generator, device=self.device) if self.has_latent else None
        return self._decode(z, num, DecodeSettings(**settings), seed + 1)

    def reconstruct(
        self, sentences: Sequence[str], use_mean: bool = True, seed: int = 0, shift: Tensor | None = None, **settings
    ) -> list[str]:
        """Encode then decode: z = the posterior mean, or one sample z ~ q(z|x); plus ``shift`` (D,) when given
        (an attribute vector times a scale: ``attribute_vectors``)."""
        posterior = self.encode(sentences)
        z = posterior.mean if use_mean else posterior.rsample(generator=torch.Generator(self.device).manual_seed(seed))
        z = z if shift is None else z + shift.to(z.device)
        return self._decode(z, z.shape[0], DecodeSettings(**settings), seed)

    def interpolate(
        self, first: str, second: str, steps: int = 5, seed: int = 0, shift: Tensor | None = None, **settings
    ) -> list[str]:
        """Decode points on the line between the two posterior means (a homotopy), endpoints included."""
        z = self.interpolation_path(first, second, steps, shift)
        return self._decode(z, steps, DecodeSettings(**settings), seed)

    def interpolation_path(self, first: str, second: str, steps: int = 5, shift: Tensor | None = None) -> Tensor:
        """z(t) = (1 − t) μ₁ + t μ₂ (+ ``shift``) at ``steps`` evenly spaced t in [0, 1]: (S, D)."""
        if steps < 2:
            raise TextVAEError(f"steps must be ≥ 2, got {steps}")
        means = self.encode([first, second]).mean  # (2, D)
        weights = torch.linspace(0, 1, steps, device=means.device).unsqueeze(1)  # (S, 1)
        z = (1 - weights) * means[0] + weights * means[1]  # (S, D)
        return z if shift is None else z + shift.to(z.device)

    def attribute_vectors(self, pairs: Sequence[tuple[str, str]], batch_size: int = 256):
        """Per-label mean posterior codes of (label, sentence) pairs and their differences ``a_to_b``
        (``textvae.latent.attributes.AttributeVectors``): ``model.generate(z + s * vectors.vector("0_to_1"))``."""
        from textvae.latent.attributes import attribute_vectors

        return attribute_vectors(self, pairs, batch_size)
