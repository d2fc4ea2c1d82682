"""Image checkpoints: the text side's atomic, checksummed files, marked ``family = "image"``, and the
model rebuilt from the recipe saved in them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from textvae import __version__, registry
from textvae.checkpoint import FORMAT, load_weights, read_checkpoint_strict, write_checkpoint_payload
from textvae.errors import TextVAEError
from textvae.image.config import ImageRecipe, image_recipe_from_dict, is_image_config
from textvae.image.data import image_shape

FAMILY = "image"  # the checkpoint field that tells an image run from a text run


def build_image_model(recipe: ImageRecipe) -> torch.nn.Module:
    """The recipe's ``image_model``, given ``image_shape`` = (C, H, W) of its data and ``load_run``, which a
    two-stage model (``vqvae_prior``) reads its trained stage one with (``IMAGE_CONTEXT``)."""
    shape = image_shape(recipe.data)
    return registry.build("image_model", recipe.model, "model", image_shape=shape, load_run=load_image_checkpoint)


def save_image_checkpoint(
    path: Path, *, recipe: ImageRecipe, model: torch.nn.Module, keep_previous: bool = False, **state: Any
) -> None:
    """Model weights with the recipe that built them, plus any training ``state`` (atomic, checksummed)."""
    payload = {
        "format": FORMAT,
        "textvae_version": __version__,
        "family": FAMILY,
        "config": json.dumps(recipe.to_dict()),
        "vocab": None,  # the checkpoint format requires the key; images have no vocabulary
        "model": model.state_dict(),
        **state,
    }
    write_checkpoint_payload(path, payload, keep_previous)


@dataclass
class LoadedImageCheckpoint:
    recipe: ImageRecipe
    model: torch.nn.Module
    payload: dict[str, Any]


def load_image_checkpoint(path: Path) -> LoadedImageCheckpoint:
    """Rebuild the model from the checkpoint's own recipe and load its weights strictly (eval mode).
    A damaged file is an error (naming the ``.prev`` copy, if any), never silently replaced."""
    path = Path(path)
    payload = read_checkpoint_strict(path)
    try:
        config = json.loads(payload["config"])
    except (json.JSONDecodeError, TypeError) as err:
        raise TextVAEError(f"{path}: checkpoint config is not valid JSON ({err})") from None
    if payload.get("family") != FAMILY or not is_image_config(config):
        raise TextVAEError(f"{path}: a text model's checkpoint, not an image run")
    recipe = image_recipe_from_dict(config, source=f"{path} (config)")
    model = load_weights(build_image_model(recipe), payload["model"], path, "config")
    return LoadedImageCheckpoint(recipe, model, payload)
