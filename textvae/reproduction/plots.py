"""PNG figures of an ablation's results (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from textvae.engine.metrics_log import read_metrics
from textvae.evaluation.plots import plt  # matplotlib with the headless backend already chosen


def plot_ablation(out_dir: Path, rows: Sequence[dict], slugs: dict[str, str]) -> None:
    """Three PNGs for an ablation directory: KL, MI and AU over training (every variant in one
    figure), the final KL per dimension (a heatmap, variants × dimensions) and the final KL and active
    units per variant, with the published values (◆) and verdicts of the rows that cite a paper.
    Curves come from each variant's first seed with a training log; the heatmap and bars average the seeds."""
    finished = [r for r in rows if "error" not in r]
    names = list(dict.fromkeys(r["variant"] for r in finished))
    if not names:
        return
    latent = [n for n in names if any(r.get("kl_per_dim") for r in finished if r["variant"] == n)]
    legend_rows = (len(latent) + 2) // 3
    figure, (kl_axes, mi_axes, au_axes) = plt.subplots(1, 3, figsize=(17, 4.2 + 0.25 * legend_rows))
    palette = plt.get_cmap("tab20").colors  # 20 distinct colours; beyond that the line style changes too
    for index, name in enumerate(latent):  # a language model has neither KL nor MI to show
        style = {"color": palette[index % 20], "linestyle": "-" if index < 20 else "--"}
        seeds = sorted(r["seed"] for r in finished if r["variant"] == name)
        logged = [s for s in seeds if (out_dir / slugs[name] / f"seed{s}" / "metrics.jsonl").is_file()]
        seed = (logged or seeds)[0]  # the first seed that kept its training log (a reused row may not)
        records = read_metrics(out_dir / slugs[name] / f"seed{seed}" / "metrics.jsonl")
        train = [r for r in records if r["event"] == "train"]
        valid = [r for r in records if r["event"] == "valid" and "mi" in r]
        if train:
            kl_axes.plot([r["step"] for r in train], [r["kl"] for r in train], label=name, **style)
        if valid:
            mi_axes.plot([r["step"] for r in valid], [r["mi"] for r in valid], marker="o", **style)
        with_au = [r for r in valid if "au" in r]  # validation records carry AU since 2026-12-04
        if with_au:
            au_axes.plot([r["step"] for r in with_au], [r["au"] for r in with_au], marker="o", **style)
    kl_axes.set_yscale("symlog", linthresh=0.1)  # collapsed rows (KL < 0.1) and large KLs both readable
    kl_axes.set(xlabel="step", ylabel="KL (nats, training batches; log above 0.1)", title="KL over training")
    mi_axes.set(xlabel="step", ylabel="I(x; z) (nats, validation)", title="mutual information over training")
    au_axes.set(xlabel="step", ylabel="active units (δ = 0.01, validation)", title="active units over training")
    for axes in (kl_axes, mi_axes, au_axes):
        axes.grid(alpha=0.3)
    handles, labels = kl_axes.get_legend_handles_labels()
    if handles:  # one legend for both panels, under them
        figure.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0.02 + 0.04 * legend_rows, 1, 1))  # room for the legend
    figure.savefig(out_dir / "training_curves.png", dpi=110)
    plt.close(figure)

    if latent:
        matrix = []
        for name in latent:
            per_seed = [r["kl_per_dim"] for r in finished if r["variant"] == name]
            matrix.append([sum(values) / len(per_seed) for values in zip(*per_seed, strict=True)])
        width = max(len(row) for row in matrix)
        padded = [row + [float("nan")] * (width - len(row)) for row in matrix]
        figure, axes = plt.subplots(figsize=(max(6.0, 0.3 * width + 3), 0.4 * len(latent) + 1.5))
        image = axes.imshow(padded, aspect="auto", cmap="viridis")
        axes.set_yticks(range(len(latent)), latent, fontsize=8)
        axes.set_xlabel("latent dimension")
        axes.set_title("final KL per dimension (nats)")
        figure.colorbar(image, ax=axes)
        figure.tight_layout()
        figure.savefig(out_dir / "kl_per_dim.png", dpi=110)
        plt.close(figure)

        _plot_final_values(out_dir / "active_units.png", finished, latent)


def _plot_final_values(path: Path, finished: Sequence[dict], latent: list[str]) -> None:
    """Final KL and AU per variant (seed means) as bars; a published value as a red diamond and
    each cited row's verdict under its name (✓ reproduced, ✗ not reproduced, ~ not comparable)."""
    marks = {"reproduced": "✓", "not reproduced": "✗", "not comparable": "~"}
    figure, all_axes = plt.subplots(1, 2, figsize=(max(10.0, 1.2 * len(latent) + 4), 3.8))
    for axes, key, label in zip(all_axes, ("kl", "au"), ("final KL (nats)", "active units (δ = 0.01)"), strict=True):
        values, published, names = [], [], []
        for name in latent:
            group = [r for r in finished if r["variant"] == name]
            values.append(sum(r.get(key) or 0.0 for r in group) / len(group))
            spec = group[0].get("paper") or {}
            published.append(spec.get("expected", {}).get(key))
            verdict = (group[0].get("verdict") or {}).get("status")
            names.append(f"{name} {marks[verdict]}" if verdict in marks else name)
        axes.bar(range(len(latent)), values, color="tab:green" if key == "au" else "tab:blue")
        points = [(i, v) for i, v in enumerate(published) if v is not None]
        if points:
            axes.scatter(*zip(*points, strict=True), marker="D", color="tab:red", zorder=3, label="published")
            axes.legend(fontsize=8)
        axes.set_xticks(range(len(latent)), names, rotation=30, ha="right", fontsize=8)
        axes.set_ylabel(label)
    all_axes[0].set_title("final KL per variant")
    all_axes[1].set_title("active units per variant")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
