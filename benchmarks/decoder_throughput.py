"""Training throughput of each dilated-CNN preset against the LSTM decoder at the same width; prints a table.

    python benchmarks/decoder_throughput.py [--width 512] [--steps 30] [--threads N] [--json OUT]

Every row is a VAE with the same LSTM encoder (embedding 256, hidden 256, latent 32) and a decoder
of width ``--width`` (LSTM hidden size = CNN channels, embedding 256), trained with Adam on the
same length-bucketed PTB training batches of 32 sentences (``--warmup`` untimed steps, then
``--steps`` timed ones, as ``benchmarks/train_throughput.py`` times them). Tokens are target
tokens (words + EOS). Weights are untrained; throughput does not depend on their values.
Timings use ``time.perf_counter`` and are reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import DEFAULT_DATA_ROOT, cpu_model_name, train_throughput

from textvae.config import recipe_from_dict
from textvae.data.corpus import build_vocab, encode_split, load_text
from textvae.models.cnn_decoder import PRESETS, receptive_field

log = logging.getLogger("decoder_throughput")


def decoder_specs(width: int) -> dict[str, dict]:
    specs = {"LSTM": {"type": "lstm", "embed_dim": 256, "hidden_dim": width}}
    for preset in PRESETS:
        specs[preset.upper()] = {"type": "dilated_cnn", "preset": preset, "embed_dim": 256, "channels": width}
    return specs


def recipe_for(decoder: dict, data_root: Path):
    return recipe_from_dict(
        {
            "data": {"dataset": "ptb", "root": str(data_root)},
            "model": {
                "type": "vae",
                "latent_dim": 32,
                "encoder": {"type": "lstm", "embed_dim": 256, "hidden_dim": 256},
                "decoder": decoder,
            },
            "train": {"optimizer": "adam", "lr": 1e-3, "batch_size": 32, "grad_clip": 5.0},
        },
        source="benchmarks/decoder_throughput.py",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT, help="directory with ptb.*.txt")
    parser.add_argument("--width", type=int, default=512, help="LSTM hidden size = CNN channels")
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per decoder")
    parser.add_argument("--warmup", type=int, default=3, help="untimed training steps before timing")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw numbers here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    specs = decoder_specs(args.width)
    first = recipe_for(specs["LSTM"], args.data_root)
    train_text = load_text(first.data, "train")
    vocab = build_vocab(first.data, train_text)
    train_split = encode_split(first.data, "train", vocab, train_text)
    rows = []
    for name, decoder in specs.items():
        result = train_throughput(
            recipe_for(decoder, args.data_root), vocab, train_split, warmup=args.warmup, steps=args.steps
        )
        field = "whole prefix" if name == "LSTM" else str(receptive_field(3, PRESETS[name.lower()]))
        rows.append({"decoder": name, "receptive_field": field, **result})
    lstm_rate = rows[0]["tokens_per_s"]
    lines = [
        f"| decoder (width {args.width}) | receptive field (words) | timed | seconds | tokens/s | vs LSTM |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['decoder']} | {row['receptive_field']} | {row['steps']} steps, {row['tokens']:,} tokens "
            f"| {row['seconds']:.1f} | {row['tokens_per_s']:,.0f} | {row['tokens_per_s'] / lstm_rate:.2f}× |"
        )
    load = os.getloadavg()[0]
    footer = (
        f"CPU: {cpu_model_name()}; torch {torch.__version__} with {torch.get_num_threads()} threads; "
        f"1-min load average {load:.2f} at the end; Adam, batch 32, PTB train, VAE with an LSTM encoder (256)."
    )
    sys.stdout.write("\n".join(lines) + "\n\n" + footer + "\n")
    if args.json is not None:
        args.json.write_text(json.dumps({"rows": rows, "width": args.width}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
