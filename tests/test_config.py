import pytest

from tests.conftest import REPO
from textvae.config import load_recipe
from textvae.errors import TextVAEError
from textvae.models import build_model

RECIPES = sorted(  # the text recipes; recipes/image/ is checked by tests/test_image_framework.py
    p
    for p in (REPO / "recipes").rglob("*.toml")
    if "_base" not in p.parts
    and "image" not in p.parts
    and p.name != "base.toml"
    and "[[variants]]" not in p.read_text(encoding="utf-8")  # an ablation file (tests/test_ablation.py)
)


@pytest.mark.parametrize("path", RECIPES, ids=[str(p.relative_to(REPO / "recipes")) for p in RECIPES])
def test_every_recipe_loads_validates_and_builds(path, vocab):
    recipe = load_recipe(path)
    model = build_model(recipe.model, vocab)
    assert sum(p.numel() for p in model.parameters()) > 0
    assert recipe.to_dict()["model"]["type"] in ("vae", "lm")


def test_recipes_exist():
    names = {str(p.relative_to(REPO / "recipes")) for p in RECIPES}
    assert {"ptb/lstm_vae.toml", "ptb/lstm_lm.toml", "quickstart/vae.toml", "quickstart/lm.toml"} <= names


def test_ptb_recipe_is_the_li_et_al_setting():
    recipe = load_recipe(REPO / "recipes/ptb/lstm_vae.toml")
    assert recipe.model["latent_dim"] == 32
    assert recipe.model["encoder"]["embed_dim"] == recipe.model["decoder"]["embed_dim"] == 256
    assert recipe.model["encoder"]["hidden_dim"] == recipe.model["decoder"]["hidden_dim"] == 256
    assert recipe.train.batch_size == 32 and recipe.train.optimizer == "sgd" and recipe.train.lr == 1.0
    assert recipe.train.grad_clip == 5.0


def test_base_merge_and_overrides(tmp_path):
    (tmp_path / "base.toml").write_text(
        '[model]\ntype = "lm"\n[model.decoder]\ntype = "lstm"\nhidden_dim = 8\n[train]\nlr = 0.5\nbatch_size = 4\n'
    )
    (tmp_path / "child.toml").write_text('base = "base.toml"\n[train]\nlr = 2\n')
    recipe = load_recipe(tmp_path / "child.toml", ["train.batch_size=9", "model.decoder.embed_dim=3"])
    assert recipe.train.lr == 2.0 and isinstance(recipe.train.lr, float)  # int accepted for a float, cast
    assert recipe.train.batch_size == 9
    assert recipe.model["decoder"] == {"type": "lstm", "hidden_dim": 8, "embed_dim": 3}


def test_a_new_component_type_does_not_inherit_the_base_keys(tmp_path):
    (tmp_path / "base.toml").write_text('[model]\ntype = "lm"\n[model.decoder]\ntype = "lstm"\nhidden_dim = 8\n')
    (tmp_path / "child.toml").write_text(
        'base = "base.toml"\n[model]\ntype = "vae"\n[model.encoder]\ntype = "lstm"\n[model.decoder]\ntype = "lstm"\n'
    )
    recipe = load_recipe(tmp_path / "child.toml")
    assert recipe.model["type"] == "vae" and "hidden_dim" not in recipe.model["decoder"]


@pytest.mark.parametrize(
    "text,message",
    [
        (
            '[model]\ntype = "lm"\n[model.decoder]\ntype = "lstm"\n[train]\nlearning_rate = 1\n',
            "unknown key 'learning_rate'",
        ),
        ('[model]\ntype = "lm"\n[model.decoder]\ntype = "lstm"\nhiden_dim = 3\n', "unknown key 'hiden_dim'"),
        ('[model]\ntype = "lm"\n[model.decoder]\ntype = "lstm"\n[train]\nbatch_size = 3.5\n', "expected an integer"),
        ('[model]\ntype = "lm"\n[model.decoder]\ntype = "lstm"\n[train]\noptimizer = "rmsprop"\n', "not one of"),
        ('[model]\ntype = "transformer_xl"\n', "unknown model type"),
        ('[model]\ntype = "lm"\n', "missing required key 'decoder'"),
        ("[train]\nlr = 1.0\n", "missing [model]"),
        ('base = "nowhere.toml"\n', "recipe file not found"),
    ],
)
def test_bad_recipes_fail_at_load_with_the_file_named(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(TextVAEError, match=message.replace("[", r"\[")) as err:
        load_recipe(path)
    assert "\n" not in str(err.value)


def test_unknown_key_error_lists_the_valid_keys(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[model]\ntype = "lm"\n[model.decoder]\ntype = "lstm"\n[train]\nlearning_rate = 1\n')
    with pytest.raises(TextVAEError) as err:
        load_recipe(path)
    assert str(path) in str(err.value) and "batch_size" in str(err.value) and "max_steps" in str(err.value)
