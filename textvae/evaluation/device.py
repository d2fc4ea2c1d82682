"""Where and how precisely evaluation runs: the device, the matmul precision, and the size of a decoder pass.

- ``resolve_device``: ``auto`` takes the GPU when CUDA is available (like ``train.device``); ``cuda``
  without CUDA is a one-line error.
- ``matmul_precision``: ``fp32`` (the default) evaluates in full float32, with TF32 off for cuBLAS
  and cuDNN (PyTorch's cuDNN default allows it); ``tf32`` lets every float32 matmul and cuDNN op use
  TF32 tensor cores; ``bf16`` runs the output layer of IW-NLL's decoder passes (H → V, nine tenths
  of their FLOPs on PTB) under bfloat16 autocast. The recurrence, the log-softmax, the log-sum-exp,
  log q, log p(z) and every sum stay float32 or float64 whatever the precision.
- ``pass_rows``: how many (sample, sentence) rows one decoder pass of IW-NLL may hold: on a CUDA
  device, from the free memory (``torch.cuda.mem_get_info``) and the decoder's sizes; elsewhere
  ``None`` (the CPU path keeps its fixed chunks, so CPU numbers do not change).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch

from textvae.errors import TextVAEError

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "tf32", "bf16")
MEMORY_FRACTION = 0.5  # of the free device memory, for one IW decoder pass (the rest: the allocator, the encoder)
MAX_PASS_ROWS = 65536  # (sample, sentence) rows per decoder pass: larger passes are no faster on an H200
MAX_LOGIT_BYTES = 2**30  # logits (and their log-softmax) of one output-layer chunk on a GPU


def resolve_device(choice: str, what: str = "eval.device", local_rank: int | None = None) -> torch.device:
    """The one device resolver (training, evaluation, the API): ``auto`` takes a CUDA device when CUDA is
    available, else the CPU; ``cuda`` needs CUDA. The CUDA device is this process's own under torchrun
    (``local_rank``, spread over the visible devices), else the current one."""
    if choice not in DEVICES:
        raise TextVAEError(f"{what} must be one of {', '.join(DEVICES)}, got {choice!r}")
    if choice == "cuda" and not torch.cuda.is_available():
        setting = f"{what} cuda" if what.startswith("--") else f"{what} = 'cuda'"
        raise TextVAEError(f"{setting}: no CUDA device is available on this machine")
    if choice == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    if local_rank is not None:
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cuda", torch.cuda.current_device())


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter (or buffer); the CPU for a module without either."""
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


@contextlib.contextmanager
def matmul_precision(precision: str, device: torch.device) -> Iterator[None]:
    """Float32 matmuls and cuDNN ops at ``precision`` (``fp32`` or ``tf32``) inside the block; the
    global settings are restored after it. ``bf16`` is the caller's autocast (``decoder_autocast``),
    with full float32 elsewhere."""
    if precision not in PRECISIONS:
        raise TextVAEError(f"matmul precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    saved = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    tf32 = precision == "tf32"
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    torch.backends.cudnn.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(saved[0])
        torch.backends.cudnn.allow_tf32 = saved[1]


def decoder_autocast(precision: str, device: torch.device):
    """bfloat16 autocast for the output layer of a decoder pass when ``precision`` is ``bf16``, else nothing."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _row_bytes(decoder, max_length: int) -> int:
    """Bytes one (sample, sentence) row of an IW decoder pass holds at once, float32, an over-estimate.

    The LSTM decoder's step-by-step pass (``sample_hidden_steps``) keeps per row its layers' h and c,
    the gates (4H), z's share of them (4H), one step's hidden state and its copy (2H) and, when a
    whole step's rows share one output-layer chunk, two rows of logits (2V); a decoder without it
    decodes every row through all ``max_length`` steps, so its activations are counted per step."""
    width = getattr(decoder, "hidden_dim", None) or getattr(decoder, "channels", None) or 512
    layers = getattr(decoder, "num_layers", 1)
    vocab = getattr(getattr(decoder, "output", None), "out_features", 0) or 32768
    floats = 2 * layers * width + 10 * width + 2 * vocab
    if getattr(decoder, "sample_hidden_steps", None) is None:
        floats += 8 * width * max_length  # activations of every step, kept by a whole-sequence decoder
    return 4 * floats


def pass_rows(model, device: torch.device, max_length: int) -> int | None:
    """(sample, sentence) rows an IW decoder pass may hold on ``device``: half the free CUDA memory over
    ``_row_bytes``, at most ``MAX_PASS_ROWS``; ``None`` off CUDA (fixed chunks of samples)."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    rows = int(free * MEMORY_FRACTION) // _row_bytes(model.decoder, max_length)
    return max(1, min(MAX_PASS_ROWS, rows))


def logit_chunk_rows(model, device: torch.device) -> int | None:
    """Rows per output-layer chunk on a CUDA device (``MAX_LOGIT_BYTES`` of logits and as much
    log-softmax), so a pass's step needs few chunks; ``None`` elsewhere (``cross_entropy``'s default)."""
    if device.type != "cuda":
        return None
    vocab = getattr(getattr(model.decoder, "output", None), "out_features", None)
    return None if not vocab else max(1, MAX_LOGIT_BYTES // (4 * vocab))


def device_index(indices: np.ndarray, device: torch.device) -> torch.Tensor:
    """Host indices as an int64 tensor on ``device``, copied without waiting for the device."""
    index = torch.from_numpy(np.ascontiguousarray(indices, dtype=np.int64))
    return index if device.type == "cpu" else index.pin_memory().to(device, non_blocking=True)
