"""What the bench measures: its sizes, the model (He et al. 2019's PTB LSTM VAE widened to hidden
512), the remedy settings and the optimizers, built as ``textvae train`` builds them."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from textvae.config import TrainConfig
from textvae.engine.state import make_optimizer
from textvae.models import build_model

ADAM_LR = 1e-3  # the recipe's lr 1.0 is an SGD rate; Adam gets its usual default


# the quickstart ablation's settings of each remedy (recipes/quickstart/ablation.toml), stacked
REMEDY_STACK = (
    {"type": "kl_annealing", "schedule": "linear", "warmup": 660},
    {"type": "word_dropout", "keep_prob": 0.5},
    {"type": "free_bits", "threshold": 0.25},
    {"type": "bow_loss", "hidden_dim": 128},
)
IAF = ({"type": "iaf", "steps": 2, "hidden_dim": 64},)
AGGRESSIVE = {"type": "aggressive", "max_inner_steps": 10, "check_every": 5}  # the quickstart's cap


@dataclass(frozen=True)
class Sizes:
    """Model sizes and how much work each measurement does."""

    embed_dim: int = 256
    hidden_dim: int = 512
    latent_dim: int = 32
    batch_size: int = 32
    cnn_width: int = 512
    cnn_encoder_hidden: int = 256
    matmul_size: int = 2048
    rounds: int = 5  # interleaved timing rounds; each run keeps its best
    train_steps: int = 20  # steps per round, training rows
    remedy_steps: int = 8  # steps per round, remedy rows
    aggressive_steps: int = 3  # outer steps of aggressive training (each up to 11 updates)
    cnn_steps: int = 8  # steps per round, decoder rows
    iw_samples: int = 500
    iw_small_samples: int = 50
    iw_chunk: int = 100
    iw_batches: int = 2  # batches of the length-sorted test split, drawn at random
    iw_batch_size: int = 32  # sentences per encoder pass (textvae eval's default)
    iw_repeats: int = 2  # timings of each IW batch (each run keeps its best)
    memory_steps: int = 10
    corpus_scale: int = 10
    synthetic_base: int = 0  # > 0: a synthetic base corpus of this many sentences instead of PTB (tests)
    graph_steps: int = 10  # steps per round, eager and graphed rows (batches of one length)
    process_counts: tuple[int, ...] = (1, 4, 8)  # processes stepping at once, aggregate rows
    process_seconds: float = 2.0  # how long each process steps, aggregate rows
    process_on_cpu: bool = False  # the aggregate rows on a CPU too, eager (tests: the harness without a GPU)
    process_model: tuple[int, int, int, int] = (256, 256, 32, 32)  # E, H, D, B: the PTB paper rows' model
    image_batches: tuple[int, ...] = (20, 1000)  # the Burda et al. 2015 batch, and a large one
    image_steps: int = 20  # steps per round, image rows


FULL = Sizes()
QUICK = replace(
    FULL,
    rounds=3,
    train_steps=4,
    remedy_steps=3,
    aggressive_steps=1,
    cnn_steps=3,
    iw_batches=1,
    iw_batch_size=8,
    iw_repeats=1,
    memory_steps=3,
    graph_steps=4,
    process_seconds=1.0,
    image_steps=8,
)
TINY = Sizes(  # for tests: every code path in seconds
    embed_dim=8,
    hidden_dim=12,
    latent_dim=4,
    batch_size=4,
    cnn_width=12,
    cnn_encoder_hidden=8,
    matmul_size=64,
    rounds=2,
    train_steps=2,
    remedy_steps=2,
    aggressive_steps=1,
    cnn_steps=2,
    iw_samples=10,
    iw_small_samples=3,
    iw_chunk=4,
    iw_batches=1,
    iw_batch_size=3,
    iw_repeats=1,
    memory_steps=2,
    synthetic_base=300,
    graph_steps=2,
    process_counts=(1, 2),
    process_seconds=0.2,
    process_model=(8, 12, 4, 4),
    image_batches=(3, 7),
    image_steps=2,
)
SIZES = {"full": FULL, "quick": QUICK, "tiny": TINY}


def vae_spec(sizes: Sizes, decoder: dict | None = None, encoder_hidden: int | None = None) -> dict:
    """He et al. 2019's LSTM VAE (recipes/_base/lstm_vae.toml) at the bench's sizes."""
    default_decoder = {
        "type": "lstm",
        "embed_dim": sizes.embed_dim,
        "hidden_dim": sizes.hidden_dim,
        "dropout_in": 0.5,
        "dropout_out": 0.5,
    }
    return {
        "type": "vae",
        "latent_dim": sizes.latent_dim,
        "encoder": {"type": "lstm", "embed_dim": sizes.embed_dim, "hidden_dim": encoder_hidden or sizes.hidden_dim},
        "decoder": decoder or default_decoder,
    }


def seeded_model(spec: dict, vocab, device: torch.device, remedies=(), seed: int = 0):
    torch.manual_seed(seed)
    return build_model(spec, vocab, list(remedies)).to(device).train()


def optimizer_for(model, name: str) -> torch.optim.Optimizer:
    """What ``textvae train`` builds: SGD lr 1.0 as He et al. 2019 (no momentum), or Adam lr 1e-3."""
    return make_optimizer(model, TrainConfig(optimizer=name, lr=1.0 if name == "sgd" else ADAM_LR))
