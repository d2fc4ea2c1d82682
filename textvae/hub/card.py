"""The model card: the ``README.md`` of an exported model directory.

It says what the model is (recipe, data, training budget), how well it does (the evaluation table
of ``textvae eval`` with the published value and the verdict where the recipe cites a published
row, KL per dimension and active units), how to reproduce it, and which textvae wrote it. Every
number comes from the run directory's own files; nothing is measured here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from textvae import __version__
from textvae.config import Recipe, load_recipe
from textvae.errors import TextVAEError


def reproduce_command(recipe: Recipe) -> list[str]:
    """``textvae train RECIPE --set ...`` that resolves to ``recipe`` again: its source file plus one
    ``--set`` per value that differs from it; empty when the source file cannot be read here."""
    try:
        fresh = load_recipe(recipe.source).to_dict()
    except (TextVAEError, OSError):
        return []
    resolved = json.loads(json.dumps(recipe.to_dict()))
    fresh = json.loads(json.dumps(fresh))
    sets = [f"--set {key}={_toml(value)}" for key, value in _differences(fresh, resolved) if key != "source"]
    if any(s.endswith("=None") or s.startswith("--set remedies") for s in sets):
        return []  # a value --set cannot spell (none, or a changed remedy list): config.json is the recipe
    return [f"textvae train {recipe.source} --out RUN", *(f"  {s}" for s in sets)]


def _differences(fresh: Mapping, resolved: Mapping, prefix: str = "") -> list[tuple[str, Any]]:
    found = []
    for key, value in resolved.items():
        other = fresh.get(key)
        if isinstance(value, Mapping) and isinstance(other, Mapping) and value.get("type") == other.get("type"):
            found += _differences(other, value, f"{prefix}{key}.")
        elif value != other:
            found.append((f"{prefix}{key}", value))
    return found


def _toml(value: Any) -> str:
    """A value as ``--set`` reads it (TOML; JSON spells numbers, booleans, strings and arrays the same)."""
    return "None" if value is None else json.dumps(value)


def _components(recipe: Recipe) -> list[str]:
    model = recipe.model
    latent = f", latent dimension {model['latent_dim']}" if "latent_dim" in model else ""
    lines = [f"- model: `{model['type']}`{latent}"]
    for part in ("encoder", "decoder"):
        if isinstance(model.get(part), Mapping):
            table = ", ".join(f"{k} {v}" for k, v in model[part].items() if k != "type")
            lines.append(f"- {part}: `{model[part].get('type')}` ({table})")
    remedies = [r["type"] for r in recipe.remedies]
    lines.append(f"- remedies: {', '.join(f'`{r}`' for r in remedies) if remedies else 'none'}")
    lines.append(f"- training strategy: `{recipe.strategy['type']}`")
    return lines


def _data(recipe: Recipe, vocab_size: int) -> list[str]:
    data = recipe.data
    lines = [f"- dataset: `{data.dataset}`" + (f" (files in `{data.root}` when exported)" if data.root else "")]
    lines.append(f"- tokenizer: `{data.tokenizer}`, {vocab_size} tokens including the specials")
    if data.max_len is not None:
        lines.append(f"- sentences truncated to {data.max_len} words")
    return lines


def _budget(recipe: Recipe, progress: Mapping[str, Any], which: str) -> list[str]:
    train = recipe.train
    limits = [f"{train.epochs} epochs"]
    limits += [f"at most {train.max_steps} steps"] if train.max_steps is not None else []
    limits += [f"at most {train.max_minutes:g} minutes"] if train.max_minutes is not None else []
    best = ""
    if "best_valid" in progress and which == "best":
        best = f" (best validation loss {progress['best_valid']:.4f}, at step {progress.get('best_step')})"
    elif which == "last":
        best = f" (the end of training, step {progress.get('step', '?')})"
    lines = [
        f"- trained {progress.get('step', '?')} steps ({progress.get('epoch', '?')} full epochs) of batch size "
        f"{train.batch_size}, optimizer `{train.optimizer}` at lr {train.lr:g}; the recipe allows {', '.join(limits)}",
        f"- exported weights: `{which}.pt` of the run{best}",
    ]
    if progress.get("stopped_on_time"):
        lines.append("- stopped by `train.max_minutes` before the recipe's own stopping rule")
    if progress.get("skipped_steps"):
        lines.append(f"- {progress['skipped_steps']} steps skipped (non-finite loss or gradient)")
    return lines


def _kl_table(result: Mapping[str, Any]) -> list[str]:
    kl = result.get("kl_per_dim") or []
    if not kl:
        return ["This model has no latent variable (a language model)."]
    variances = result.get("posterior_mean_variance")
    threshold = result.get("au_threshold", 0.01)
    au = result.get("au")
    lines = [
        f"Active units: **{au}** of {len(kl)} (a dimension is active when the variance over the data of its "
        f"posterior mean is ≥ {threshold:g}).",
        "",
        "| dimension | KL (nats) |" + (" Var(E[z_d]) | active |" if variances else ""),
        "|---|---|" + ("---|---|" if variances else ""),
    ]
    for d, value in enumerate(kl):
        row = f"| {d} | {value:.4f} |"
        if variances:
            row += f" {variances[d]:.4f} | {'yes' if variances[d] >= threshold else 'no'} |"
        lines.append(row)
    return lines


def _evaluation(
    evaluations: Sequence[tuple[str, Mapping[str, Any]]], validation: Mapping[str, Any] | None
) -> list[str]:
    """The evaluation table (``textvae eval``'s, else the training log's validation) and KL per dimension."""
    from textvae.reproduction.tables import markdown_table

    lines: list[str] = []
    if evaluations:
        rows = [(split, result) for split, result in evaluations]
        sizes = "; ".join(f"{s}: {r.get('num_sentences')} sentences, K = {r.get('iw_samples')}" for s, r in rows)
        lines += [
            f"`textvae eval` of the exported weights ({sizes} importance samples for IW-NLL):",
            "",
            markdown_table(rows, name_header="split"),
            "",
        ]
        kl_source = evaluations[0][1]
        kl_from = f"the {evaluations[0][0]} split"
    elif validation:
        lines += [
            "No `textvae eval` results were in the run directory; the validation during training at the "
            f"exported step ({validation.get('step')}):",
            "",
            markdown_table([("valid (training log)", validation)], name_header="split"),
            "",
        ]
        kl_source, kl_from = validation, "validation during training"
    else:
        lines += ["Not evaluated: run `textvae eval OUT_DIR --split test` (give `--data-root` if the data moved).", ""]
        kl_source, kl_from = {}, None
    if kl_from is not None:
        lines += [f"### KL per dimension and active units ({kl_from})", "", *_kl_table(kl_source), ""]
    return lines


CARD_METRICS = (  # the evaluation numbers the front matter carries at full precision, for tools and tests
    *("elbo", "rec", "kl", "iw_nll", "ppl_iw", "au", "mi_batch", "mi_full", "bleu_rec"),
    *("keep_rate", "overlap_own", "overlap_other", "homotopy_distinct_mean", "homotopy_three_or_more"),
)


def _front_matter(name: str, recipe: Recipe, evaluations: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """YAML front matter: the library and tags, and the evaluation as a Hugging Face ``model-index``
    (each metric at full precision, the evaluation's settings as the dataset's ``args``)."""
    lines = ["---", "library_name: textvae", "tags: [text-vae, variational-autoencoder, posterior-collapse]"]
    if evaluations:
        lines += ["model-index:", f"- name: {json.dumps(name)}", "  results:"]
    for split, result in evaluations:
        args = {"sentences": result.get("num_sentences"), "iw_samples": result.get("iw_samples")}
        args |= {"seed": result.get("seed"), "mi_samples": result.get("mi_samples")}
        dataset = {"type": recipe.data.dataset, "name": recipe.data.dataset, "split": split, "args": args}
        lines += ["  - task: {type: text-generation}", f"    dataset: {json.dumps(dataset)}", "    metrics:"]
        for key in CARD_METRICS:
            if isinstance(result.get(key), int | float):
                lines.append(f"    - {json.dumps({'type': key, 'value': result[key]})}")
    return [*lines, "---"]


def _checksums(checksums: Mapping[str, str]) -> list[str]:
    if not checksums:
        return []
    return [
        "## Checksums",
        "",
        "SHA-256 of the files beside this card:",
        "",
        *(f"- `{name}`: `{digest}`" for name, digest in checksums.items()),
        "",
    ]


def _code_use(evaluations: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """``textvae eval --code-use``'s checks and examples, when the evaluation ran them."""
    from textvae.evaluation.code_use import code_use_summary

    found = [(split, r) for split, r in evaluations if "keep_rate" in r]
    if not found:
        return []
    split, result = found[0]
    lines = ["### Does the decoder use z?", "", f"On the {split} split (`textvae eval --code-use`):", ""]
    lines += [f"- {line}" for line in code_use_summary(result).splitlines()]
    examples = result.get("code_use_examples") or {}
    if examples.get("reconstructions"):
        lines += ["", "Reconstructions (greedy, posterior mean) of held-out sentences drawn by the seed:", ""]
        lines += [f"- `{x}`  \n  → `{y}`" for x, y in examples["reconstructions"]]
    for number, homotopy in enumerate(examples.get("homotopies") or [], start=1):
        lines += ["", f"Homotopy {number}: from `{homotopy['from']}` to `{homotopy['to']}`", ""]
        lines += [f"{step}. {text}" for step, text in enumerate(homotopy["path"], start=1)]
    return [*lines, ""]


def model_card(
    name: str,
    recipe: Recipe,
    vocab_size: int,
    progress: Mapping[str, Any],
    which: str,
    evaluations: Sequence[tuple[str, Mapping[str, Any]]],
    validation: Mapping[str, Any] | None,
    files: Sequence[str],
    checksums: Mapping[str, str] | None = None,
    notes: str | None = None,
) -> str:
    """The card's Markdown. ``evaluations`` are (split, ``textvae eval`` results) of the exported
    checkpoint; ``validation`` the training log's validation record at the exported step (used when
    there are none); ``checksums`` the SHA-256 of the files written beside the card; ``notes`` the
    exporter's own Markdown (``textvae export --notes``), shown as its own section."""
    description = f"{recipe.model['type']} text model" + (
        f" with a {recipe.model['latent_dim']}-dimensional latent variable" if "latent_dim" in recipe.model else ""
    )
    lines = [
        *_front_matter(name, recipe, evaluations),
        f"# {name}",
        "",
        f"A {description}, trained and exported by textvae {__version__}.",
        "",
        "## Recipe",
        "",
        f"From `{recipe.source}`; `config.json` holds the whole resolved recipe.",
        "",
        *_components(recipe),
        "",
        "## Data",
        "",
        *_data(recipe, vocab_size),
        "",
        "## Training budget",
        "",
        *_budget(recipe, progress, which),
        "",
        "## Evaluation",
        "",
    ]
    lines += _evaluation(evaluations, validation)
    lines += _code_use(evaluations)
    if notes:
        lines += ["## Notes", "", notes.strip(), ""]
    command = reproduce_command(recipe)
    lines += ["## Reproduce", ""]
    if command:
        lines += ["```bash", " \\\n".join(command), "textvae eval RUN --split test", "```", ""]
    else:
        lines += [
            f"The recipe file `{recipe.source}` is not at hand or differs in a way `--set` cannot spell:",
            "`config.json` is the resolved recipe to train from.",
            "",
        ]
    lines += [
        "## Use",
        "",
        "```python",
        "import textvae",
        "",
        'model = textvae.load("THIS_DIRECTORY")',
        *(
            ["model.sample(5)", 'model.reconstruct(["a sentence to encode"])']
            if "latent_dim" in recipe.model
            else ["model.sample(5)"]
        ),
        "```",
        "",
        "The command line takes this directory wherever it takes a run directory: `textvae sample`, "
        "`reconstruct`, `interpolate`, `generate`, `neighbours`, `attribute` and `eval` (given the data).",
        "It holds the weights only (no optimizer state or training position): it is **not resumable**; "
        "train on from the run directory it was exported from.",
        "",
        "## Files",
        "",
        *(f"- `{f}`" for f in files),
        "",
        *_checksums(checksums or {}),
    ]
    return "\n".join(lines)
