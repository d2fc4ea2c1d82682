"""Text or image: the one place that tells a recipe, a recipe file or a run directory of one family from
the other. A recipe is an image recipe when its model is an image model
(``textvae.image.config.is_image_config``); a run is an image run when its config (or its checkpoint's) is one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from textvae.checkpoint import read_checkpoint
from textvae.config import Recipe, apply_override, read_recipe_tables, recipe_from_dict
from textvae.errors import TextVAEError
from textvae.image.checkpoint import FAMILY
from textvae.image.config import ImageRecipe, image_recipe_from_dict, is_image_config


def any_recipe_from_dict(raw: Mapping[str, Any], source: str) -> Recipe | ImageRecipe:
    """An image recipe when the model is an image model, else a text recipe (``recipe_from_dict``)."""
    if is_image_config(raw):
        return image_recipe_from_dict(raw, source)
    return recipe_from_dict(raw, source)


def load_any_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Recipe | ImageRecipe:
    """Load a text or image recipe file (following ``base``), apply ``--set`` overrides, validate."""
    raw = read_recipe_tables(path)
    for assignment in overrides:
        apply_override(raw, assignment)
    return any_recipe_from_dict(raw, source=str(path))


def load_image_recipe(path: str | Path, overrides: Sequence[str] = ()) -> ImageRecipe:
    """Load a recipe that must be an image recipe."""
    recipe = load_any_recipe(path, overrides)
    if not isinstance(recipe, ImageRecipe):
        raise TextVAEError(f"{path}: not an image recipe ([model].type {recipe.model['type']!r} is a text model)")
    return recipe


def is_image_run(path: str | Path) -> bool:
    """Whether a run directory (or a checkpoint file) holds an image model: its ``config.json``
    decides, else the checkpoint's own config. Anything unreadable counts as not an image run,
    so that the text commands report it in their own words."""
    path = Path(path)
    config_path = path / "config.json" if path.is_dir() else path.parent / "config.json"
    try:
        if config_path.is_file():
            return is_image_config(json.loads(config_path.read_text(encoding="utf-8")))
        if path.is_file():
            payload = read_checkpoint(path)
            return payload.get("family") == FAMILY and is_image_config(json.loads(payload["config"]))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError, AttributeError, TextVAEError):
        return False
    return False
