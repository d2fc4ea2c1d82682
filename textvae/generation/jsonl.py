"""``textvae generate``: many sentences to a JSONL file, streamed, resumable after a kill.

Each line is one JSON object: ``index``, ``text``, ``source`` (reconstructions only), ``z_norm`` (‖z‖₂),
``log_likelihood`` (log p(x, EOS | z) of the generated tokens, nats; EOS is left out when the output
was cut at max_len), and the run's settings (``mode``, ``seed``, ``batch_size``, ``decode``).

Batch b draws its z (prior samples) and its sampling noise from generators seeded with (seed, b),
so a batch's lines depend only on the settings and b. Lines are written a batch at a time, flushed
and fsynced; a resumed run keeps the whole batches already in the file (a partial last batch, cut by
a kill, is dropped) and continues with the next batch, so its output equals an uninterrupted run's.
Everything runs on the model's device.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from textvae.data.batching import collate
from textvae.errors import TextVAEError
from textvae.faults import kill_point
from textvae.generation.decoding import DecodeSettings, decode


def _generator(device: torch.device, *key: int) -> torch.Generator:
    seed = int(np.random.SeedSequence(list(key)).generate_state(1, dtype=np.uint64)[0] >> 1)
    return torch.Generator(device=device).manual_seed(seed)


def _resume_point(out: Path, header: dict, batch_size: int) -> int:
    """Records kept from an earlier run (whole batches written with the same settings); truncates the rest."""
    if not out.exists():
        return 0
    data = out.read_bytes()
    lines = data.split(b"\n")[:-1]  # a last line without its newline is incomplete
    if not lines:
        out.write_bytes(b"")
        return 0
    try:
        first = json.loads(lines[0])
    except ValueError:
        raise TextVAEError(f"{out} exists and is not a textvae generate file; choose another --out") from None
    if {key: first.get(key) for key in header} != header:
        raise TextVAEError(f"{out} was written with other settings; choose another --out or remove it to start over")
    total = header["num"]
    keep = len(lines) if len(lines) == total else len(lines) // batch_size * batch_size
    size = sum(len(line) + 1 for line in lines[:keep])
    with open(out, "r+b") as handle:
        handle.truncate(size)
    return keep


def _batch_records(model, z: Tensor, settings: DecodeSettings, generator, start: int) -> list[dict]:
    """Decode one batch from z (B, D) and score each output under the model: log p(ids, EOS | z)."""
    vocab, decoder = model.vocab, model.model.decoder
    ids = decode(decoder, z, z.shape[0], vocab.bos_id, vocab.eos_id, settings, generator, vocab.unk_id)
    rows = [[vocab.bos_id, *row, vocab.eos_id] for row in ids]
    batch = collate(rows, range(len(rows)), vocab.pad_id).to(z.device)
    scores = model.model.log_likelihood(batch, z.unsqueeze(0))[0]  # (B,)
    cut = torch.tensor([len(row) >= settings.max_len for row in ids], device=z.device)  # no EOS was generated
    if cut.any():  # the EOS appended above was not generated: remove its log-probability
        logits = decoder.logits(decoder(batch.decoder_inputs, z))  # (B, T, V)
        eos_logp = logits.log_softmax(-1)[torch.arange(len(rows)), batch.lengths - 2, vocab.eos_id]  # (B,)
        scores = torch.where(cut, scores - eos_logp, scores)
    norms = torch.linalg.vector_norm(z, dim=1)  # (B,)
    return [
        {"index": start + i, "text": vocab.detokenize(row), "z_norm": norm, "log_likelihood": score}
        for i, (row, norm, score) in enumerate(zip(ids, norms.tolist(), scores.tolist(), strict=True))
    ]


@torch.no_grad()
def generate_jsonl(
    model,
    out: Path,
    settings: DecodeSettings,
    *,
    num: int | None = None,
    sentences: Sequence[str] | None = None,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool = True,
) -> int:
    """Write ``num`` prior samples (or one reconstruction, from the posterior mean, per sentence) to ``out``;
    returns the number of lines the file holds. ``model`` is a ``textvae.api.TextModel`` with a latent."""
    if not model.has_latent:
        raise TextVAEError("textvae generate needs a model with a latent variable; this one is a language model")
    if (num is None) == (sentences is None):
        raise TextVAEError("give either a number of samples or sentences to reconstruct")
    total = num if sentences is None else len(sentences)
    if total < 1 or batch_size < 1:
        raise TextVAEError(f"need at least one sentence and a batch size ≥ 1, got {total} and {batch_size}")
    mode = "sample" if sentences is None else "reconstruct"
    header = {"mode": mode, "num": total, "seed": seed, "batch_size": batch_size, "decode": asdict(settings)}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = _resume_point(out, header, batch_size)
    device = model.device
    bar = tqdm(total=total, initial=done, unit="sent", file=sys.stderr, disable=not progress)
    with open(out, "ab") as handle:
        for start in range(done, total, batch_size):
            count = min(batch_size, total - start)
            batch_index = start // batch_size
            if sentences is None:
                z = torch.randn(
                    count, model.latent_dim, generator=_generator(device, seed, batch_index, 0), device=device
                )
            else:
                z = model.encode(list(sentences[start : start + count])).mean
            records = _batch_records(model, z, settings, _generator(device, seed, batch_index, 1), start)
            if sentences is not None:
                records = [{**r, "source": sentences[r["index"]]} for r in records]
            text = "".join(json.dumps({**r, **header}, ensure_ascii=False) + "\n" for r in records)
            handle.write(text.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
            bar.update(count)
            kill_point("generate_batch")
    bar.close()
    return total
