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

# The output layer runs on chunks of rows, so that evaluation memory does not grow with the number
# of tokens: at most LOGIT_CHUNK_ROWS rows and LOGIT_CHUNK_BYTES of logits (1,638 rows at PTB's
# 10,002 words). The softmax is one fused pass per row, so a chunk need not fit in a cache, and
# larger chunks make the product faster (2 threads, 3,200 rows of PTB logits without a gradient:
# 0.77 of the matmul peak in chunks of 512 rows, 0.89 in chunks of 1,600; a training batch of
# 864 rows: 0.90 in two chunks, 0.92 in one). On a CPU the buffers are reused (``_BufferPool``).
LOGIT_CHUNK_ROWS = 4096
LOGIT_CHUNK_BYTES = 64 * 2**20
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
            self.free = [flat for flat in self.free if flat is not smallest]  # by identity: == compares elements
            return smallest
        self.free = [flat for flat in self.free if flat.dtype != like.dtype or flat.device != like.device]
        return like.new_empty(numel)

    def give_back(self, flat: Tensor) -> None:
        kept = sum(buffer.numel() * buffer.element_size() for buffer in self.free)
        if flat.device.type == "cpu" and kept + flat.numel() * flat.element_size() <= self.max_bytes:
            self.free.append(flat)


_POOL = _BufferPool(POOL_BYTES)
_POOL_ROWS = 256


def _padded(rows: int, width: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """An uninitialized contiguous (rows, W) matrix, W = ``width`` rounded up to a multiple of 16
    elements, and the flat buffer it lies in (on a CPU from the pool, to hand back with
    ``_POOL.give_back``). Its first ``width`` columns hold a (rows, width) matrix at a 64-byte-aligned
    row stride: BLAS writes rows of an odd width (PTB's 10,002 words) more slowly than aligned rows
    (here, one thread: 26.5 against 35.5 GFLOP/s for 512 rows)."""
    stride = _aligned_width(width)
    if like.device.type == "cpu":
        flat = _POOL.take(-(-max(rows, 1) // _POOL_ROWS) * _POOL_ROWS * stride, like)
    else:
        flat = like.new_empty(rows * stride)
    return flat[: rows * stride].view(rows, stride), flat


def _logit_scratch(rows: int, width: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """A (rows, W) ``_padded`` matrix whose padding columns are −inf: once a chunk's logits are
    written into its first ``width`` columns, a softmax over whole rows of W is the softmax over the
    ``width`` real columns (exp(−inf) = 0), taken by PyTorch's fused row kernel on contiguous rows."""
    scratch, flat = _padded(rows, width, like)
    scratch[:, width:].fill_(float("-inf"))
    return scratch, flat


def _most_chunk_rows(width: int, like: Tensor) -> int:
    """The most rows in a chunk of logits of this width: ``LOGIT_CHUNK_ROWS``, or fewer to stay
    under ``LOGIT_CHUNK_BYTES``."""
    row_bytes = _aligned_width(width) * like.element_size()
    return max(1, min(LOGIT_CHUNK_ROWS, LOGIT_CHUNK_BYTES // row_bytes))


def _chunk_rows(num_rows: int, width: int, like: Tensor) -> int:
    """Rows per chunk of logits: at most ``_most_chunk_rows``, spread evenly (at most 1,638: 3,400
    rows make 3 chunks of 1,134, not 2 of 1,638 and one of 124)."""
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


def _softmax_rows(logits: Tensor, targets: Tensor, width: int, out: Tensor, sync_free: bool) -> Tensor:
    """out ← softmax(logits) row by row; returns −log softmax(logits)[y] per row, (c,).

    ``logits`` and ``out`` are (c, W) ``_logit_scratch`` / ``_padded`` rows (the real columns first,
    −inf padding in ``logits``), ``targets`` (c, 1). On a CPU the softmax is one fused pass per row
    and the loss is −log p_y, read from it; the rare row whose p_y underflows (below the smallest
    normal float, where its logarithm would lose digits or be −inf) gets logsumexp(logits) − logit_y
    from its logits instead. With ``sync_free`` (on a GPU, where asking which rows underflowed would
    stop the host) log_softmax is written and exponentiated in place: exact without a
    synchronisation, one more pass over the chunk."""
    real = out[:, :width]
    if sync_free:
        torch.log_softmax(logits, dim=1, out=out)
        nll = real.gather(1, targets).neg_().squeeze(1)
        out.exp_()
        return nll
    torch.softmax(logits, dim=1, out=out)
    target_probs = real.gather(1, targets).squeeze(1)  # (c,)
    nll = target_probs.log().neg_()
    underflow = target_probs < torch.finfo(target_probs.dtype).tiny
    if underflow.any():
        rows = underflow.nonzero().squeeze(1)
        row_logits = logits[rows, :width]  # (u, V)
        nll[rows] = torch.logsumexp(row_logits, dim=1) - row_logits.gather(1, targets[rows]).squeeze(1)
    return nll


def _log_softmax_rows(logits: Tensor, targets: Tensor, width: int, out: Tensor) -> Tensor:
    """out ← log_softmax(logits) row by row (one fused pass per row); returns −out[y] per row, (c,)."""
    torch.log_softmax(logits, dim=1, out=out)
    return out[:, :width].gather(1, targets).neg_().squeeze(1)


class _LinearCrossEntropy(torch.autograd.Function):
    """nll_n = logsumexp(W h_n + b) − (W h_n + b)[y_n], with the gradient of the logits kept.

    Forward, chunk by chunk of rows: the logits into a reused scratch chunk (``_logit_scratch``), its
    softmax written into the chunk's rows of one (N, V) buffer, which then becomes G_n =
    ∂nll_n/∂logits_n = softmax_n − onehot(y_n). Backward never touches G elementwise and runs as
    three matrix products over all N rows at once: with g = ∂L/∂nll (N,),
        ∂L/∂h = g ⊙ (G W),   ∂L/∂W = Gᵀ (g ⊙ h),   ∂L/∂b = Gᵀ g.
    (One product of inner size N runs faster than several of the chunks' size: here 168 against 155
    GFLOP/s for ∂L/∂W of a PTB batch.) Same values and gradients as
    ``F.cross_entropy(F.linear(h, W, b), y, reduction="none")``, up to float rounding; the memory
    kept for backward is the (N, V) of G, as the unfused path keeps its (N, V) log-softmax, and the
    scratch chunk (at most ``LOGIT_CHUNK_BYTES``) goes back to the pool when forward ends.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_rows):
        num_rows, width = hidden.shape[0], weight.shape[0]
        nll = hidden.new_empty(num_rows)  # (N,)
        padded_grad, flat = _padded(num_rows, width, hidden)  # G and its padding, (N, W)
        scratch, scratch_flat = _logit_scratch(min(chunk_rows, num_rows), width, hidden)  # (c, W)
        sync_free = hidden.device.type != "cpu"
        for start in range(0, num_rows, chunk_rows):
            rows = slice(start, start + chunk_rows)
            logits = scratch[: padded_grad[rows].shape[0]]  # (c, W)
            _chunk_logits(hidden[rows], weight, bias, logits[:, :width])
            chunk_targets = targets[rows].unsqueeze(1)  # (c, 1)
            nll[rows] = _softmax_rows(logits, chunk_targets, width, padded_grad[rows], sync_free)
            padded_grad[rows].scatter_add_(1, chunk_targets, logits.new_full(chunk_targets.shape, -1.0))  # − onehot
        if hidden.device.type == "cpu":
            _POOL.give_back(scratch_flat)
        ctx.save_for_backward(hidden, weight)
        ctx.grad_logits, ctx.buffer, ctx.has_bias = padded_grad[:, :width], flat, bias is not None
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
    num_rows, width = hidden.shape[0], weight.shape[0]
    nll = hidden.new_empty(num_rows)  # (N,)
    if num_rows == 0:
        return nll
    scratch, scratch_flat = _logit_scratch(min(chunk_rows, num_rows), width, hidden)  # (c, W), reused
    log_probs, flat = _padded(min(chunk_rows, num_rows), width, hidden)  # (c, W), reused
    with torch.no_grad():
        for start in range(0, num_rows, chunk_rows):
            rows = slice(start, start + chunk_rows)
            chunk_hidden = hidden[rows]
            logits = scratch[: chunk_hidden.shape[0]]  # (c, W)
            _chunk_logits(chunk_hidden, weight, bias, logits[:, :width])
            nll[rows] = _log_softmax_rows(logits, targets[rows].unsqueeze(1), width, log_probs[: logits.shape[0]])
    if hidden.device.type == "cpu":
        _POOL.give_back(scratch_flat)
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


def sequence_nll(logits_fn, hidden: Tensor, targets: Tensor, mask: Tensor, dense: bool | None = None) -> Tensor:
    """Negative log-likelihood of each sequence, summed over its real target tokens, (B,).

    ``hidden`` is (B, T, H), ``targets`` and ``mask`` (B, T). Only real (unmasked) positions go
    through the output layer ``logits_fn`` (H → V) and the cross-entropy (``token_nll``), so
    padding costs nothing.

    Selecting the real positions (``hidden[mask]``) makes the host wait for the device to count
    them, which a CUDA graph cannot capture. So when training on a GPU (``dense`` by default: a
    non-CPU device with gradients on) every position goes through the output layer and the padded
    ones are zeroed: the same sums (bit for bit on a CPU when nothing is padded; equal-length
    batches are the training default), at the cost of computing the padding's logits.
    """
    if dense is None:
        dense = hidden.device.type != "cpu" and torch.is_grad_enabled()
    rows = torch.arange(targets.shape[0], device=targets.device).unsqueeze(1).expand_as(targets)  # (B, T)
    if dense:
        nll = token_nll(logits_fn, hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1))  # (B·T,)
        nll = torch.where(mask.reshape(-1), nll, torch.zeros_like(nll))
        return hidden.new_zeros(targets.shape[0]).index_add_(0, rows.reshape(-1), nll)
    nll = token_nll(logits_fn, hidden[mask], targets[mask])  # (N,)
    return hidden.new_zeros(targets.shape[0]).index_add_(0, rows[mask], nll)
