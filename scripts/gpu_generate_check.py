"""Generation on a GPU: constrained decoding exact with the cache, the JSONL generator resuming to
identical output, and how fast it runs, on whatever device is given.

    PYTHONPATH=. python scripts/gpu_generate_check.py --device cuda --out generate_check.json
    PYTHONPATH=. python scripts/gpu_generate_check.py --device cpu --out /tmp/generate_check.json   # code paths

Rows (each in its own try/except: a failure prints its exception and the script goes on):
- ``cached_equals_recomputed/<decoder>/<strategy>``: untrained LSTM, dilated-CNN and GPT-2 decoders
  (V = 500) decode 8 random z with every constraint on (no unk, min_len 3, no-repeat bigrams,
  repetition penalty 1.3), once with the cache and once recomputing the prefix: same ids? (On a GPU the
  two paths run different kernels: a near-tie between two tokens may flip; the CPU test is exact.)
- ``generate_resume``: 200 prior samples in batches of 32 to JSONL; again, stopped after 3 batches
  and resumed (a partial line appended first): byte-identical files?
- ``generate_speed``: sentences/s of ``generate_jsonl`` (greedy and sampling, batch 256, max_len 30).
Prints one line per row (``ok`` / ``FAIL``) and writes everything to ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from textvae.config import recipe_from_dict
from textvae.data.vocab import Vocab
from textvae.generation.decoding import DecodeSettings, decode
from textvae.generation.jsonl import generate_jsonl
from textvae.models import build_model
from textvae.train import save_checkpoint

VOCAB = Vocab(words=("<pad>", "<s>", "</s>", "<unk>", *[f"w{i}" for i in range(496)]))
SMALL = {"embed_dim": 32, "hidden_dim": 64}
DECODERS = {
    "lstm": {"type": "lstm", **SMALL},
    "dilated_cnn": {"type": "dilated_cnn", "preset": "scnn", "embed_dim": 32, "channels": 64},
    "gpt2": {"type": "gpt2", "num_layers": 2, "hidden_dim": 64, "num_heads": 4, "max_positions": 64, "dropout": 0.0},
}
CONSTRAINED = {"min_len": 3, "no_repeat_ngram_size": 2, "repetition_penalty": 1.3, "max_len": 20}


class Recomputing(nn.Module):
    def __init__(self, decoder):
        super().__init__()
        self.decoder = decoder

    def initial_state(self, z, batch_size):
        return torch.zeros(batch_size, 0, dtype=torch.long, device=z.device)

    def step(self, tokens, prefix, z):
        prefix = torch.cat([prefix, tokens.unsqueeze(1)], dim=1)
        return self.decoder.logits(self.decoder(prefix, z)[:, -1]), prefix

    def reorder_state(self, prefix, index):
        return prefix[index]


def _spec(decoder: str) -> dict:
    return {"type": "vae", "latent_dim": 8, "encoder": {"type": "lstm", **SMALL}, "decoder": DECODERS[decoder]}


def cached_row(device, decoder_name: str, strategy: str) -> dict:
    torch.manual_seed(0)
    model = build_model(_spec(decoder_name), VOCAB).eval().to(device)
    z = torch.randn(8, 8, generator=torch.Generator().manual_seed(1)).to(device)
    settings = DecodeSettings(strategy, beam_size=4, top_p=0.9 if strategy == "sample" else None, **CONSTRAINED)

    def run(d):
        generator = torch.Generator(device=device).manual_seed(2)
        return decode(d, z, 8, VOCAB.bos_id, VOCAB.eos_id, settings, generator, VOCAB.unk_id)

    cached, recomputed = run(model.decoder), run(Recomputing(model.decoder))
    rules = all(len(r) >= 3 and VOCAB.unk_id not in r and len(set(itertools.pairwise(r))) == len(r) - 1 for r in cached)
    return {"ok": cached == recomputed and rules, "same_ids": cached == recomputed, "constraints_hold": rules}


def _model(device, root: Path):
    import textvae

    spec = _spec("lstm")
    recipe = recipe_from_dict({"data": {"dataset": "files", "root": str(root)}, "model": spec}, "gpu_generate_check")
    torch.manual_seed(0)
    run = root / "run"
    run.mkdir(exist_ok=True)
    save_checkpoint(run / "best.pt", recipe=recipe, vocab=VOCAB, model=build_model(spec, VOCAB))
    return textvae.load(run, device=str(device.type))


def resume_row(model, root: Path) -> dict:
    settings = DecodeSettings("sample", top_p=0.9, max_len=20, no_repeat_ngram_size=2)
    whole, cut = root / "whole.jsonl", root / "cut.jsonl"
    generate_jsonl(model, whole, settings, num=200, batch_size=32, progress=False)
    generate_jsonl(model, cut, settings, num=96, batch_size=32, progress=False)  # three batches
    lines = cut.read_bytes().splitlines(keepends=True)  # rewrite its header for num = 200, as a killed run has
    cut.write_bytes(b"".join(line.replace(b'"num": 96', b'"num": 200') for line in lines) + b'{"index": 96, "te')
    generate_jsonl(model, cut, settings, num=200, batch_size=32, progress=False)
    got, want = cut.read_bytes().splitlines(), whole.read_bytes().splitlines()
    row = {"ok": got == want, "lines": len(want), "resumed_lines": len(got)}
    differing = [i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b]
    if differing:  # what differs says why: the texts (sampling) or only the last digits of a number
        first = differing[0]
        row |= {
            "differing_lines": len(differing),
            "first": first,
            "resumed": got[first][:300].decode(),
            "whole": want[first][:300].decode(),
        }
    return row


def speed_row(model, root: Path) -> dict:
    result = {"ok": True}
    for strategy in ("greedy", "sample"):
        settings = DecodeSettings(strategy, max_len=30)
        out = root / f"speed_{strategy}.jsonl"
        generate_jsonl(model, out, settings, num=256, batch_size=256, progress=False)  # warm-up
        out.unlink()
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        generate_jsonl(model, out, settings, num=2048, batch_size=256, progress=False)
        result[f"{strategy}_sentences_per_s"] = round(2048 / (time.perf_counter() - start), 1)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    rows = {}
    for decoder_name in DECODERS:
        for strategy in ("greedy", "sample", "beam"):
            rows[f"cached_equals_recomputed/{decoder_name}/{strategy}"] = lambda d=decoder_name, s=strategy: cached_row(
                device, d, s
            )
    results = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "rows": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rows["generate_resume"] = lambda: resume_row(_model(device, root), root)
        rows["generate_speed"] = lambda: speed_row(_model(device, root), root)
        for name, row in rows.items():
            try:
                results["rows"][name] = row()
            except Exception as err:  # report and go on
                results["rows"][name] = {"ok": False, "error": f"{type(err).__name__}: {err}"}
            status = "ok" if results["rows"][name]["ok"] else "FAIL"
            sys.stdout.write(f"{status:4}  {name}  {json.dumps(results['rows'][name])}\n")
    args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0 if all(r["ok"] for r in results["rows"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
