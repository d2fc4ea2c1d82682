"""The spread of IW-NLL when only the importance draws vary, beside the standard errors that predict it.

One checkpoint, one fixed subset of sentences (``--subset-seed``), ``--repeats`` evaluations whose
draw seeds differ (1, 2, ...). Prints each evaluation's ``iw_nll`` and its standard errors, then the
standard deviation of ``iw_nll`` over the evaluations beside the mean of

- ``iw_nll_mean_mc_se``: the Monte-Carlo s.e. of the mean, sqrt(Σ se_i²) / N (predicts this spread);
- ``iw_nll_mc_se / sqrt(N)``: the mean per-sentence s.e. over sqrt(N) (understates it when the
  sentences' s.e.s differ: mean(se) ≤ sqrt(mean(se²)));
- ``iw_nll_se``: the s.e. over sentences (another sample of sentences, not other draws).

    python benchmarks/iw_nll_spread.py RUN/best.pt [--split test] [--sentences 200] [--iw-samples 100]
        [--repeats 8] [--subset-seed 0] [--threads N]
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import sys

log = logging.getLogger("iw_nll_spread")


def main(argv: list[str]) -> int:
    import torch

    from textvae.api import load_checkpoint
    from textvae.data.corpus import encode_split
    from textvae.evaluation.evaluate import EvalSettings, evaluate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--split", default="test")
    parser.add_argument("--sentences", type=int, default=200)
    parser.add_argument("--iw-samples", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--subset-seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_checkpoint(args.checkpoint)
    split = encode_split(loaded.recipe.data, args.split, loaded.vocab)
    results = []
    header = "| draw seed | iw_nll | iw_nll_mean_mc_se | iw_nll_mc_se / √N | iw_nll_se | KL |"
    lines = [header, "|---|---|---|---|---|---|"]
    for seed in range(1, args.repeats + 1):
        settings = EvalSettings(
            iw_samples=args.iw_samples,
            iw_chunk_size=min(args.iw_samples, 50),
            max_sentences=args.sentences,
            seed=seed,
            subset_seed=args.subset_seed,
            progress_bar=False,
        )
        m = evaluate(loaded.model, split, loaded.vocab.pad_id, settings).metrics
        n = m["num_sentences"]
        results.append(m)
        lines.append(
            f"| {seed} | {m['iw_nll']:.4f} | {m['iw_nll_mean_mc_se']:.4f} | {m['iw_nll_mc_se'] / math.sqrt(n):.4f} "
            f"| {m['iw_nll_se']:.3f} | {m['kl']:.3f} |"
        )
        log.info("draw seed %d: iw_nll %.4f", seed, m["iw_nll"])
    spread = statistics.stdev(m["iw_nll"] for m in results)
    n = results[0]["num_sentences"]
    predicted = statistics.mean(m["iw_nll_mean_mc_se"] for m in results)
    naive = statistics.mean(m["iw_nll_mc_se"] / math.sqrt(n) for m in results)
    between = statistics.mean(m["iw_nll_se"] for m in results)
    sys.stdout.write("\n".join(lines) + "\n\n")
    sys.stdout.write(
        f"{args.repeats} evaluations of the same {n} sentences, K = {args.iw_samples}: sd of iw_nll over the "
        f"draws {spread:.4f}; mean iw_nll_mean_mc_se {predicted:.4f} (ratio {spread / predicted:.2f}); "
        f"mean iw_nll_mc_se/√N {naive:.4f} (ratio {spread / naive:.2f}); mean iw_nll_se {between:.3f}\n"
    )
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    sys.exit(main(sys.argv[1:]))
