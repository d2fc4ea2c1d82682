"""The contract every image-family model meets, so one training loop, one evaluator and one set of
figures serve them all.

Images are float tensors (B, C, H, W) in [0, 1] ({0, 1} when the data is binarized); sequence
models (TD-VAE) take (B, T, C, H, W). A model is a registered ``image_model`` component (its
constructor signature is its recipe schema); the framework supplies ``image_shape`` = (C, H, W)
as context, so a recipe never states it.

Required:
    loss_terms(x, step=...) -> LossTerms

Optional capabilities; the evaluator and the figure maker use those a model has (check with
``hasattr``), so a model offers only what it can honestly do:
    reconstruct(x) -> (B, C, H, W) in [0, 1]        mean of p(x|z) at the posterior mean / the code
    sample(num, generator) -> (N, C, H, W) in [0, 1] images from the (learned) prior
    encode(x) -> (B, ...) a code to interpolate in;  decode(code) -> images
    posterior(x) -> DiagGaussian (B, D)              KL per dimension, active units, mutual information
    log_importance_weights(x, num_samples, generator) -> (K, B)   log p(x, z_k) − log q(z_k|x), for IW-NLL
    code_indices(x) -> LongTensor (B, ...)            discrete codes (VQ models): usage histogram, perplexity
    figures(x, generator) -> {name: (rows, cols, C, H, W)}  model-specific image grids, saved as PNG
                                                     (TD-VAE's jumpy predictions, VQ-VAE-2's top/bottom views)
    end_of_step(step) -> dict[str, float]            work after the optimizer step (dead-code restart ...);
                                                     returns scalars to log
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

IMAGE_CONTEXT = ("image_shape", "load_run")  # what the framework passes to an image model's constructor
# load_run(path) → a loaded image checkpoint (.recipe, .model): how a two-stage model reads its stage one


@dataclass
class LossTerms:
    """One training step's result.

    ``loss``: the scalar the optimizer minimizes (the weighted objective: β, sparsity weight ...).
    ``terms``: honest, unweighted per-example quantities, each (B,), in nats unless the name says
    otherwise, e.g. ``rec`` (−log p(x|z) or the squared error), ``kl``, ``sparsity``, ``commitment``.
    Reported numbers come from ``terms``, never from ``loss``.
    ``stats``: batch-level scalars worth logging that are not per-example (codebook perplexity,
    dead codes restarted, current k of a k-sparse schedule).
    """

    loss: Tensor  # ()
    terms: dict[str, Tensor]  # name -> (B,)
    stats: dict[str, float] = field(default_factory=dict)
