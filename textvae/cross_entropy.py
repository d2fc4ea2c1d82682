"""The output layer and the cross-entropy, fused: −log softmax(W h + b)[y] for real tokens only.

Every reconstruction term is Σ_t −log p(x_t | x_<t, z); ``sequence_nll`` computes it for the real
(unpadded) target tokens only, and when the decoder's output is a plain linear layer it runs the
layer and the softmax fused, chunk by chunk of rows (``_LinearCrossEntropy``), so that neither the
logits nor their log-softmax exist at full size and the backward pass is three matrix products.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# The output layer runs on chunks of rows: each chunk's logits (rows, V) stay in the CPU's cache
# while the softmax is taken (here 512 rows beat 384, 640, 768 and 1,024 in training and in
# IW-NLL), and evaluation memory does not grow with the number of tokens. On a CPU the logit
# buffers are reused from step to step (``_BufferPool``).
LOGIT_CHUNK_ROWS = 512
LOGIT_CHUNK_BYTES = 24 * 2**20
# Most bytes of free logit buffers the pool keeps between steps.
POOL_BYTES = 256 * 2**20
# Tokens per slice of the unfused evaluation path (an output that is not a plain linear layer).
EVAL_LOGIT_SLICE = 8192
_ROW_ALIGNMENT = 16  # floats: rows of logits start on 64-byte boundaries


def _aligned_width(width: int) -> int:
    return -(-width // _ROW_ALIGNMENT) * _ROW_ALIGNMENT


class _BufferPool:
    """Flat logit buffers kept from one step to the next (CPU only).

    A training step's G (softmax − one-hot, ~30 MB for a PTB batch) lives from the forward pass to
    the backward pass. Freed and allocated afresh every step, its pages go back to the operating
    system (glibc trims the top of its heap) and are faulted in again, zero-filled: ~4,000 page
    faults a step, a few ms. Backward hands the buffer back here and the next forward takes it.
    A new buffer's rows are rounded up to a multiple of ``_POOL_ROWS``; when none of the free ones
    fits, they are dropped before a larger one is made, so the pool holds about one buffer of the
    largest batch's size (never more than ``POOL_BYTES`` free). On a GPU the caching allocator
    already does this.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.free: list[Tensor] = []

    def take(self, numel: int, like: Tensor) -> Tensor:
        """A flat uninitialized buffer of at least ``numel`` elements of ``like``'s dtype and device."""
        fitting = [
            flat
            for flat in self.free
            if flat.dtype == like.dtype and flat.device == like.device and flat.numel() >= numel
        ]
        if fitting:
            smallest = min(fitting, key=Tensor.numel)
            self.free.remove(smallest)
            return smallest
        self.free = [flat for flat in self.free if flat.dtype != like.dtype or flat.device != like.device]
        return like.new_empty(numel)

    def give_back(self, flat: Tensor) -> None:
        kept = sum(buffer.numel() * buffer.element_size() for buffer in self.free)
        if flat.device.type == "cpu" and kept + flat.numel() * flat.element_size() <= self.max_bytes:
            self.free.append(flat)


_POOL = _BufferPool(POOL_BYTES)
_POOL_ROWS = 256


def _row_aligned(rows: int, width: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """An uninitialized (rows, width) matrix whose row stride is a multiple of 16 elements, and the
    flat buffer it lies in (on a CPU from the pool, to hand back with ``_POOL.give_back``).

    BLAS writes rows of an odd width (PTB's 10,002 words) more slowly than rows at a 64-byte-aligned
    stride (here, one thread: 26.5 against 35.5 GFLOP/s for 512 rows); the padding is never read."""
    stride = _aligned_width(width)
    if like.device.type == "cpu":
        flat = _POOL.take(-(-max(rows, 1) // _POOL_ROWS) * _POOL_ROWS * stride, like)
    else:
        flat = like.new_empty(rows * stride)
    return flat[: rows * stride].view(rows, stride)[:, :width], flat


def _most_chunk_rows(width: int, like: Tensor) -> int:
    """The most rows in a chunk of logits of this width: ``LOGIT_CHUNK_ROWS``, or fewer to stay
    under ``LOGIT_CHUNK_BYTES``."""
    row_bytes = _aligned_width(width) * like.element_size()
    return max(1, min(LOGIT_CHUNK_ROWS, LOGIT_CHUNK_BYTES // row_bytes))


def _chunk_rows(num_rows: int, width: int, like: Tensor) -> int:
    """Rows per chunk of logits: at most ``_most_chunk_rows``, spread evenly (3,200 rows: 7 chunks
    of 458, not 6 of 512 and one of 128)."""
    most = _most_chunk_rows(width, like)
    chunks = max(1, -(-num_rows // most))
    return -(-num_rows // chunks) if num_rows else most


def output_layer_of(logits_fn) -> nn.Linear | None:
    """The ``nn.Linear`` that ``logits_fn`` applies, when that is all it does: the layer itself, or a
    decoder's ``logits`` method when the decoder declares it as ``logits_layer``."""
    if isinstance(logits_fn, nn.Linear):
        return logits_fn
    layer = getattr(getattr(logits_fn, "__self__", None), "logits_layer", None)
    return layer if isinstance(layer, nn.Linear) else None


def _chunk_logits(hidden: Tensor, weight: Tensor, bias: Tensor | None, out: Tensor) -> Tensor:
    """out ← hidden Wᵀ + b, written in place: (c, H) → (c, V)."""
    if bias is None:
        return torch.mm(hidden, weight.t(), out=out)
    return torch.addmm(bias, hidden, weight.t(), out=out)


def _softmax_in_place(logits: Tensor, targets: Tensor, normalize: bool = True) -> Tensor:
    """−log softmax(logits)[y] per row, (c,), for ``logits`` (c, V) and ``targets`` (c, 1); the
    logits become exp(logits − max), divided by their sum when ``normalize`` (the softmax). In place,
    with no (c, V) temporary: logsumexp = max + log Σ exp(logits − max)."""
    target_logits = logits.gather(1, targets)  # (c, 1)
    row_max = logits.amax(dim=1, keepdim=True)  # (c, 1)
    exp_sum = logits.sub_(row_max).exp_().sum(dim=1, keepdim=True)  # (c, 1)
    if normalize:
        logits.div_(exp_sum)
    return (exp_sum.log_() + row_max - target_logits).squeeze(1)


class _LinearCrossEntropy(torch.autograd.Function):
    """nll_n = logsumexp(W h_n + b) − (W h_n + b)[y_n], with the gradient of the logits kept.

    Forward, chunk by chunk of rows: the logits into an aligned buffer, the softmax taken in place
    while the chunk is in cache, so that the buffer becomes G_n = ∂nll_n/∂logits_n = softmax_n −
    onehot(y_n). The chunks are row blocks of one (N, V) buffer, so backward never touches G
    elementwise and runs as three matrix products over all N rows at once: with g = ∂L/∂nll (N,),
        ∂L/∂h = g ⊙ (G W),   ∂L/∂W = Gᵀ (g ⊙ h),   ∂L/∂b = Gᵀ g.
    (One product of inner size N runs faster than several of the chunks' size: here 168 against 155
    GFLOP/s for ∂L/∂W of a PTB batch.) Same values and gradients as
    ``F.cross_entropy(F.linear(h, W, b), y, reduction="none")``, up to float rounding; the memory
    kept for backward is the (N, V) of G, as the unfused path keeps its (N, V) log-softmax.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_rows):
        num_rows = hidden.shape[0]
        nll = hidden.new_empty(num_rows)  # (N,)
        grad_logits, flat = _row_aligned(num_rows, weight.shape[0], hidden)  # G, (N, V)
        for start in range(0, num_rows, chunk_rows):
            rows = slice(start, start + chunk_rows)
            logits = _chunk_logits(hidden[rows], weight, bias, grad_logits[rows])  # (c, V)
            chunk_targets = targets[rows].unsqueeze(1)  # (c, 1)
            nll[rows] = _softmax_in_place(logits, chunk_targets)  # logits → softmax
            logits.scatter_add_(1, chunk_targets, logits.new_full(chunk_targets.shape, -1.0))  # − onehot
        ctx.save_for_backward(hidden, weight)
        ctx.grad_logits, ctx.buffer, ctx.has_bias = grad_logits, flat, bias is not None
        return nll

    @staticmethod
    def backward(ctx, grad_nll):
        hidden, weight = ctx.saved_tensors
        grad_logits = ctx.grad_logits  # G, (N, V)
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        scale = grad_nll.unsqueeze(1)  # (N, 1)
        grad_hidden = torch.mm(grad_logits, weight).mul_(scale) if need_hidden else None  # (N, H)
        grad_weight = torch.mm(grad_logits.t(), hidden * scale) if need_weight else None  # (V, H)
        grad_bias = torch.mv(grad_logits.t(), grad_nll) if need_bias and ctx.has_bias else None  # (V,)
        ctx.grad_logits = None
        if hidden.device.type == "cpu":
            _POOL.give_back(ctx.buffer)
        ctx.buffer = None
        return grad_hidden, grad_weight, grad_bias, None, None


def linear_cross_entropy(hidden: Tensor, layer: nn.Linear, targets: Tensor, chunk_rows: int | None = None) -> Tensor:
    """−log softmax(layer(h_n))[y_n] per row, (N,), for ``hidden`` (N, H) and ``targets`` (N,).

    The output layer and the cross-entropy run fused, ``chunk_rows`` rows at a time (default:
    ``_chunk_rows``; see ``_LinearCrossEntropy``); without a gradient only one chunk of logits
    exists at a time.
    """
    weight, bias = layer.weight, layer.bias
    chunk_rows = chunk_rows or _chunk_rows(hidden.shape[0], weight.shape[0], hidden)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (hidden, weight, bias)):
        return _LinearCrossEntropy.apply(hidden, weight, bias, targets, chunk_rows)
    num_rows = hidden.shape[0]
    nll = hidden.new_empty(num_rows)  # (N,)
    if num_rows == 0:
        return nll
    buffer, flat = _row_aligned(min(chunk_rows, num_rows), weight.shape[0], hidden)  # (c, V), reused
    with torch.no_grad():
        for start in range(0, num_rows, chunk_rows):
            rows = slice(start, start + chunk_rows)
            chunk_hidden = hidden[rows]
            logits = _chunk_logits(chunk_hidden, weight, bias, buffer[: chunk_hidden.shape[0]])  # (c, V)
            nll[rows] = _softmax_in_place(logits, targets[rows].unsqueeze(1), normalize=False)
    if hidden.device.type == "cpu":
        _POOL.give_back(flat)
    return nll


def token_nll(logits_fn, hidden: Tensor, targets: Tensor) -> Tensor:
    """−log softmax(logits_fn(h_n))[y_n] for ``hidden`` (N, H) and ``targets`` (N,): (N,).

    When ``logits_fn`` is a plain linear layer (``output_layer_of``), the layer and the
    cross-entropy run fused and chunked (``linear_cross_entropy``); otherwise the logits of all rows
    are made at once with a gradient, and in slices of ``EVAL_LOGIT_SLICE`` rows without one.
    """
    layer = output_layer_of(logits_fn)
    fusable = layer is not None and hidden.dtype == layer.weight.dtype
    if fusable and not torch.is_autocast_enabled(hidden.device.type):
        return linear_cross_entropy(hidden, layer, targets)
    if torch.is_grad_enabled():
        return F.cross_entropy(logits_fn(hidden), targets, reduction="none")
    if targets.numel() == 0:
        return hidden.new_zeros(0)
    slices = zip(hidden.split(EVAL_LOGIT_SLICE), targets.split(EVAL_LOGIT_SLICE), strict=True)
    return torch.cat([F.cross_entropy(logits_fn(h), t, reduction="none") for h, t in slices])


def sequence_nll(logits_fn, hidden: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """Negative log-likelihood of each sequence, summed over its real target tokens, (B,).

    ``hidden`` is (B, T, H), ``targets`` and ``mask`` (B, T). Only real (unmasked) positions go
    through the output layer ``logits_fn`` (H → V) and the cross-entropy (``token_nll``), so
    padding costs nothing.
    """
    rows = torch.arange(targets.shape[0], device=targets.device).unsqueeze(1).expand_as(targets)[mask]  # (N,)
    nll = token_nll(logits_fn, hidden[mask], targets[mask])  # (N,)
    return hidden.new_zeros(targets.shape[0]).index_add_(0, rows, nll)
