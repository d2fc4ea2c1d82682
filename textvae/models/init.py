"""Uniform initialization as in He et al. 2019 (weights U(−0.01, 0.01), embeddings U(−0.1, 0.1))."""

from __future__ import annotations

from torch import nn


def uniform_init(module: nn.Module, weight_range: float | None, embed_range: float | None) -> None:
    """Re-initialize every parameter uniformly; ``None`` keeps PyTorch's default for that group."""
    for sub in module.modules():
        if isinstance(sub, nn.Embedding):
            if embed_range is not None:
                nn.init.uniform_(sub.weight, -embed_range, embed_range)
        elif weight_range is not None:
            for param in sub.parameters(recurse=False):
                nn.init.uniform_(param, -weight_range, weight_range)


def reinitialize(module: nn.Module, weight_range: float | None, embed_range: float | None) -> None:
    """Fresh weights for every submodule, as at construction: PyTorch's reset, then ``uniform_init``
    (Li et al. 2019 reset the decoder after pretraining)."""
    for sub in module.modules():
        if sub is not module and hasattr(sub, "reset_parameters"):
            sub.reset_parameters()
    uniform_init(module, weight_range, embed_range)
