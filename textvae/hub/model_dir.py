"""The exported model directory: what ``textvae export`` writes and ``textvae.load`` reads back.

The layout is the one the Hugging Face hub and ``huggingface_hub`` uploads use, readable without
textvae's code:

- ``config.json``: the resolved recipe, as a run directory's ``config.json``;
- ``model.safetensors``: the model's weights only (no optimizer state, no training position: an
  exported model is not resumable). Its metadata names the format, textvae's version and the
  SHA-256 of the tensor bytes, so a damaged byte is found on load;
- ``vocab.json``: the vocabulary as a run directory's ``vocab.json``, plus the tokenizer's own file
  when there is one (``tokenizer.json`` of a pretrained tokenizer, ``sentencepiece.model``);
- ``README.md``: the model card (``textvae.hub.card``).
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import torch

from textvae import __version__
from textvae.checkpoint import resolve_checkpoint
from textvae.config import Recipe, recipe_from_dict
from textvae.data.vocab import Vocab
from textvae.errors import TextVAEError

FORMAT = "textvae-export-1"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
VOCAB = "vocab.json"
CARD = "README.md"


def is_export_dir(path: Path) -> bool:
    """A directory with ``model.safetensors`` (and no checkpoint to prefer): an exported model."""
    path = Path(path)
    return path.is_dir() and (path / WEIGHTS).is_file() and not (path / "best.pt").is_file()


def weights_bytes(model: torch.nn.Module, extra: dict[str, str]) -> bytes:
    """The model's ``state_dict`` as safetensors, with the format, version and data checksum in its metadata.
    Every tensor is copied (contiguous, unshared): safetensors refuses tensors that share memory."""
    from safetensors.torch import save

    tensors = {name: tensor.detach().cpu().contiguous().clone() for name, tensor in model.state_dict().items()}
    plain = save(tensors)
    metadata = {"format": FORMAT, "textvae_version": __version__, "data_sha256": _data_digest(plain), **extra}
    data = save(tensors, metadata)
    if _data_digest(data) != metadata["data_sha256"]:  # the data section does not depend on the header
        raise TextVAEError("safetensors wrote different tensor bytes with metadata; cannot checksum the export")
    return data


def _split(data: bytes, path: Path) -> tuple[dict[str, Any], bytes]:
    """(header, tensor bytes) of a safetensors file: 8 bytes of header length, the JSON header, the data."""
    if len(data) < 8:
        raise TextVAEError(f"{path}: damaged or not a safetensors file (only {len(data)} bytes)")
    (size,) = struct.unpack("<Q", data[:8])
    try:
        header = json.loads(data[8 : 8 + size].decode("utf-8")) if 8 + size <= len(data) else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        header = None
    if not isinstance(header, dict):
        raise TextVAEError(f"{path}: damaged or not a safetensors file (unreadable header)")
    return header, data[8 + size :]


def _data_digest(data: bytes) -> str:
    return hashlib.sha256(_split(data, Path("model.safetensors"))[1]).hexdigest()


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of an exported ``model.safetensors``; a one-line error when it is
    damaged (truncated, a changed byte) or foreign (not written by ``textvae export``)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    data = path.read_bytes()
    header, tensor_bytes = _split(data, path)
    metadata = header.get("__metadata__") or {}
    if metadata.get("format") != FORMAT:
        raise TextVAEError(f"{path}: not a textvae export (its metadata has no format {FORMAT!r})")
    if hashlib.sha256(tensor_bytes).hexdigest() != metadata.get("data_sha256"):
        raise TextVAEError(f"{path}: damaged model file (checksum mismatch)")
    try:
        tensors = load(data)
    except (SafetensorError, ValueError, RuntimeError) as err:
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0][:120]
        raise TextVAEError(f"{path}: damaged or not a safetensors file ({first_line})") from None
    return tensors, metadata


def weights_path(path: str | Path, which: str | None = None) -> Path:
    """The file that holds a model's weights: an exported directory's ``model.safetensors`` (``which`` does
    not apply), a run directory's ``{which}.pt`` (None: ``best.pt``), or the checkpoint file given."""
    path = Path(path)
    return path / WEIGHTS if is_export_dir(path) else resolve_checkpoint(path, which)


def load_export(folder: Path) -> tuple[Recipe, Vocab, torch.nn.Module, dict[str, str]]:
    """Rebuild the model of an exported directory from its ``config.json`` and ``vocab.json`` and load
    ``model.safetensors`` strictly: (recipe, vocabulary, model on the CPU in eval mode, the safetensors
    metadata). ``textvae.api.load_model`` loads any model folder."""
    from textvae.models import build_model

    folder = Path(folder)
    for name in (CONFIG, VOCAB, WEIGHTS):
        if not (folder / name).is_file():
            raise TextVAEError(f"{folder}: not an exported textvae model (no {name})")
    try:
        config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
        recipe = recipe_from_dict(config, source=str(folder / CONFIG))
        vocab = Vocab.from_json((folder / VOCAB).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError) as err:
        raise TextVAEError(f"{folder}: config.json or vocab.json is not valid JSON ({err})") from None
    tensors, metadata = read_weights(folder / WEIGHTS)
    model = build_model(recipe.model, vocab, recipe.remedies)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as err:
        reason = str(err).strip().splitlines()[0][:160]
        raise TextVAEError(f"{folder / WEIGHTS}: weights do not fit config.json/vocab.json ({reason})") from None
    model.eval()
    return recipe, vocab, model, metadata


def tokenizer_files(vocab: Vocab) -> dict[str, bytes]:
    """The tokenizer's own files, for tools other than textvae: ``tokenizer.json`` (a pretrained fast
    tokenizer) or ``sentencepiece.model``; a word vocabulary has none beyond ``vocab.json``."""
    if vocab.tokenizer_json is not None:
        return {"tokenizer.json": vocab.tokenizer_json.encode("utf-8")}
    if vocab.sentencepiece is not None:
        return {"sentencepiece.model": vocab.sentencepiece}
    return {}
