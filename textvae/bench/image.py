"""The image MLP's training throughput: Burda et al. 2015's MNIST VAE (784-200-200-50 and back, tanh,
Bernoulli decoder; ``recipes/image/mnist/burda2015_vae.toml``), images/s at the paper's batch of 20
and at a large batch, eager (the image loop's step: ``loss_terms``, then ``strategies.apply_update``)
and graphed (the toolkit's sync-free step, ``textvae.cuda.sync_free_step``, replayed from a CUDA graph;
"needs CUDA" on a CPU, "not available" without that module). The images are random binary 28×28
pictures: the speed of an MLP does not depend on the pixels, and no data file is read.

Target (issue 17, one H200): ≥ 100,000 images/s.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable

import torch

from textvae.engine.state import make_optimizer
from textvae.families import load_image_recipe
from textvae.image.checkpoint import build_image_model
from textvae.strategies import StepContext, apply_update

from .clock import Clock
from .graphs import graphed_sync_free
from .models import Sizes
from .references import REPO

log = logging.getLogger(__name__)

RECIPE = REPO / "recipes" / "image" / "mnist" / "burda2015_vae.toml"
IMAGE_TARGET = 100_000  # images/s, one H200 (issue 17)


def _model_and_optimizer(device: torch.device):
    recipe = load_image_recipe(RECIPE)
    torch.manual_seed(0)
    model = build_image_model(recipe).to(device).train()
    return model, make_optimizer(model, recipe.train), recipe.train.grad_clip


def _images(batch_size: int, count: int, device: torch.device) -> list[torch.Tensor]:
    generator = torch.Generator(device=device).manual_seed(0)
    shape = (batch_size, 1, 28, 28)
    return [(torch.rand(shape, generator=generator, device=device) < 0.5).float() for _ in range(count)]


def eager_run(images: list[torch.Tensor], device: torch.device) -> Callable[[], None]:
    """The image loop's step (loss_terms → apply_update) over ``images``."""
    model, optimizer, grad_clip = _model_and_optimizer(device)
    context = StepContext(model, optimizer, grad_clip, 0, len(images), None)

    def run() -> None:
        for x in images:
            apply_update(context, model.loss_terms(x, step=context.step).loss)

    return run


def graphed_run(images: list[torch.Tensor], device: torch.device, fake_capture=None) -> Callable[[], None]:
    """The toolkit's graphed step (``graphs.graphed_sync_free``) on ``images`` (ImportError without it)."""
    graph_step = importlib.import_module("textvae.cuda.sync_free_step")
    model, optimizer, grad_clip = _model_and_optimizer(device)

    def loss_fn(x, state):
        out = model.loss_terms(x)
        rec, kl = out.terms["rec"].detach().sum().double(), out.terms["kl"].detach().sum().double()
        count = torch.full_like(state.step, float(x.shape[0]))
        return out.loss, torch.stack([rec + kl, rec, kl, count, count * 784])

    step = graph_step.SyncFreeStep(model, optimizer, loss_fn, grad_clip=grad_clip)
    graphed = graphed_sync_free(step, images[0], fake_capture)

    def run() -> None:
        for x in images:
            graphed(x)

    return run


def bench_image(clock: Clock, sizes: Sizes) -> dict:
    """Images/s of the eager and graphed steps at each of ``sizes.image_batches``."""
    device = clock.device
    runs, rows = {}, {}
    for batch_size in sizes.image_batches:
        images = _images(batch_size, sizes.image_steps, device)
        for kind, make in (("eager", eager_run), ("graphed", graphed_run)):
            name = f"{kind}_{batch_size}"
            if kind == "graphed" and device.type != "cuda":
                rows[name] = {"missing": "needs CUDA"}
                continue
            try:
                runs[name] = make(images, device)
            except ImportError as err:
                rows[name] = {"missing": f"not available ({err})"}
            except Exception as err:  # a failed capture is a row of the table, not the end of the bench
                log.exception("image %s", name)
                rows[name] = {"missing": f"failed: {type(err).__name__}: {err}"}
    best = clock.interleaved(runs, sizes.rounds)
    for name, seconds in best.items():
        batch_size = int(name.rsplit("_", 1)[1])
        rows[name] = {"images_per_s": batch_size * sizes.image_steps / seconds}
    return {"rows": rows, "batches": list(sizes.image_batches), "target": IMAGE_TARGET}
