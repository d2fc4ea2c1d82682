"""The ablation runner on a tiny corpus: rows, failures kept apart, resume, report, plots."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import REPO
from textvae.engine.machine import ROW_THREADS, cpu_name
from textvae.errors import TextVAEError
from textvae.faults import ENV_VAR
from textvae.reproduction.ablation import load_ablation, run_ablation

SENTENCES = [
    f"the {a} saw a {b} near the {c}"
    for a in ("cat", "dog", "man")
    for b in ("bird", "tree")
    for c in ("house", "river", "road", "field")
]


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "corpus"
    root.mkdir()
    for split in ("train", "valid", "test"):
        (root / f"{split}.txt").write_text("\n".join(SENTENCES) + "\n")
    return root


def _write_ablation(tmp_path, corpus, extra_variants: str = "") -> object:
    (tmp_path / "base.toml").write_text(f"""
[data]
dataset = "files"
root = "{corpus}"
cache_dir = "{tmp_path / "cache"}"
[model]
type = "vae"
latent_dim = 3
[model.encoder]
type = "lstm"
embed_dim = 6
hidden_dim = 7
[model.decoder]
type = "lstm"
embed_dim = 6
hidden_dim = 7
[train]
optimizer = "adam"
lr = 0.01
batch_size = 4
max_steps = 6
validate_every_steps = 3
log_every_steps = 2
checkpoint_every_steps = 2
progress_bar = false
[eval]
iw_samples = 4
iw_chunk_size = 2
""")
    (tmp_path / "lm.toml").write_text('base = "base.toml"\n[model]\ntype = "lm"\n[model.decoder]\ntype = "lstm"\n')
    path = tmp_path / "ablation.toml"
    path.write_text(f"""
base = "base.toml"
seeds = [0, 1]
[[variants]]
name = "LM"
recipe = "lm.toml"
[[variants]]
name = "VAE"
[variants.paper]
paper = "Test et al."
table = "Table 1"
row = "VAE"
tag = "V-text"
expected = {{iw_nll = 12.5}}
tolerance = {{iw_nll = 0.5}}
[[variants]]
name = "+free bits +annealing"
[[variants.remedies]]
type = "free_bits"
threshold = 0.5
[[variants.remedies]]
type = "kl_annealing"
warmup = 4
{extra_variants}
""")
    return path


def test_ablation_rows_tables_plots_and_resume(tmp_path, corpus):
    path = _write_ablation(tmp_path, corpus, '[[variants]]\nname = "broken"\n[variants.data]\nroot = "/nonexistent"\n')
    out = tmp_path / "out"
    rows = run_ablation(path, out)
    assert [(r["variant"], r["seed"]) for r in rows] == [
        (v, s) for v in ("LM", "VAE", "+free bits +annealing", "broken") for s in (0, 1)
    ]
    broken = [r for r in rows if r["variant"] == "broken"]
    assert all("error" in r and "/nonexistent" in r["error"] for r in broken)
    good = [r for r in rows if r["variant"] != "broken"]
    assert all("error" not in r for r in good)
    vae = [r for r in good if r["variant"] == "VAE"]
    for key in (
        "variant",
        "seed",
        "iw_nll",
        "ppl_iw",
        "elbo",
        "rec",
        "kl",
        "mi_batch",
        "mi_full",
        "au",
        "train_seconds",
    ):
        assert key in vae[0], key
    assert vae[0]["paper"]["expected"] == {"iw_nll": 12.5} and vae[0]["paper"]["tag"] == "V-text"
    assert vae[0]["verdict"]["status"] == "not comparable" and "capped at 6 steps" in vae[0]["verdict"]["reason"]
    assert vae[0]["train_epochs"] >= 1 and vae[0]["device"] == "cpu" and len(vae[0]["date"]) == 10
    assert vae[0]["iw_nll"] != vae[1]["iw_nll"]  # the seeds differ
    assert "nll" in good[0] and "iw_nll" not in good[0]  # the LM row reports its exact NLL
    table = (out / "results.md").read_text()
    assert "| VAE | 2 |" in table and "±" in table and "| published | verdict |" in table
    assert "IW-NLL 12.5 [V-text]" in table and "Test et al., Table 1, VAE" in table
    assert "broken: " in table
    csv_lines = (out / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("variant,seeds,failed,iw_nll_mean,iw_nll_std") and len(csv_lines) == 5
    for png in ("training_curves.png", "kl_per_dim.png", "active_units.png"):
        assert (out / png).stat().st_size > 1000
    assert len(json.loads((out / "results.json").read_text())) == 8

    # re-running: finished rows are read back, not retrained; the broken one is tried again
    before = (out / "vae" / "seed0" / "result.json").stat().st_mtime_ns
    again = run_ablation(path, out)
    assert (out / "vae" / "seed0" / "result.json").stat().st_mtime_ns == before
    assert [r.get("iw_nll") for r in again] == [r.get("iw_nll") for r in rows]


def test_report_re_renders_an_ablation_directory(tmp_path, corpus):
    path = _write_ablation(tmp_path, corpus)
    out = tmp_path / "out"
    run_ablation(path, out, seeds=[3])
    (out / "results.md").unlink()
    result = subprocess.run(
        [sys.executable, "-m", "textvae", "report", str(out)], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "| +free bits +annealing | 1 |" in result.stdout
    assert (out / "results.md").is_file()


def test_only_runs_the_named_variants(tmp_path, corpus):
    path = _write_ablation(tmp_path, corpus)
    rows = run_ablation(path, tmp_path / "out", seeds=[0], only=["VAE"])
    assert [r["variant"] for r in rows] == ["VAE"]
    with pytest.raises(TextVAEError, match="no variant named 'vae'"):
        run_ablation(path, tmp_path / "out", only=["vae"])


def _measured(rows: list[dict]) -> list[dict]:
    """A results.json row without what differs between two runs of the same rows: times, date, device."""
    return [{k: v for k, v in row.items() if not k.endswith("_seconds")} for row in rows]


def test_jobs_1_and_jobs_2_give_identical_rows_on_one_thread_each(tmp_path, corpus):
    # each row runs on ROW_THREADS (one) intra-op thread whatever --jobs is, and says so in its row: the
    # in-process rows of --jobs 1 once ran on all cores (torch's default), those of --jobs N on cores/N
    path = _write_ablation(tmp_path, corpus)
    threads_before = torch.get_num_threads()
    serial = run_ablation(path, tmp_path / "serial", seeds=[0])
    assert torch.get_num_threads() == threads_before  # the in-process rows leave the process as it was
    parallel = run_ablation(path, tmp_path / "parallel", jobs=2, seeds=[0])
    assert _measured(parallel) == _measured(serial)
    assert {(r["threads"], r["cpu"], r["cpu_capability"]) for r in serial} == {
        (ROW_THREADS, cpu_name(), torch.backends.cpu.get_cpu_capability())
    }
    on_file = json.loads((tmp_path / "parallel" / "results.json").read_text())
    assert _measured(on_file) == _measured(parallel)


def test_a_recipes_own_threads_set_its_rows_threads(tmp_path, corpus):
    path = _write_ablation(tmp_path, corpus)
    rows = run_ablation(path, tmp_path / "out", seeds=[0], only=["VAE"], overrides=["train.threads=2"])
    assert rows[0]["threads"] == 2


@pytest.mark.parametrize(
    "text,message",
    [
        ('base = "base.toml"\nseed = [1]\n[[variants]]\nname = "a"\n', "unknown key 'seed'"),
        ('base = "base.toml"\n', "no [[variants]]"),
        ('base = "base.toml"\n[[variants]]\nname = "a"\n[[variants]]\nname = "A"\n', "used twice"),
        ('base = "base.toml"\n[[variants]]\nname = "a"\n[variants.train]\nlrate = 1\n', "unknown key 'lrate'"),
        (
            'base = "base.toml"\n[[variants]]\nname = "a"\n[[variants.remedies]]\ntype = "free_bitz"\n',
            "unknown remedy type 'free_bitz'",
        ),
    ],
)
def test_bad_ablation_files_fail_before_anything_runs(tmp_path, corpus, text, message):
    _write_ablation(tmp_path, corpus)
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(TextVAEError, match=message.replace("[", r"\[")):
        load_ablation(path)
    assert not (tmp_path / "out").exists()


def test_every_shipped_ablation_validates():
    paths = [p for p in sorted((REPO / "recipes").rglob("*.toml")) if "[[variants]]" in p.read_text(encoding="utf-8")]
    assert any(p.name == "candidates.toml" for p in paths)  # recipes/kjv/: an ablation by its [[variants]]
    for path in paths:
        variants, seeds = load_ablation(path)
        assert variants and seeds


def test_a_killed_ablation_resumes_mid_variant_to_the_uninterrupted_rows(tmp_path, corpus):
    """SIGKILL after step 4 of the first row (its last checkpoint: step 4); re-running the same
    command resumes that row from its checkpoint and runs the rest: every number equals an
    uninterrupted ablation's."""
    path = _write_ablation(tmp_path, corpus)

    def ablate(out, fault=None):
        env = {k: v for k, v in os.environ.items() if k != ENV_VAR} | ({ENV_VAR: fault} if fault else {})
        args = [sys.executable, "-m", "textvae", "ablate", str(path), "--out", str(out), "--set", "train.threads=1"]
        return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)

    assert ablate(tmp_path / "reference").returncode == 0
    killed = ablate(tmp_path / "out", fault="after_step:5")
    assert killed.returncode == -signal.SIGKILL
    assert json.loads((tmp_path / "out" / "lm" / "seed0" / "metrics.jsonl").read_text().splitlines()[-1])["step"] <= 5
    resumed = ablate(tmp_path / "out")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr

    def numbers(out):
        rows = json.loads((out / "results.json").read_text())
        return [{k: v for k, v in row.items() if not k.endswith("_seconds")} for row in rows]

    assert numbers(tmp_path / "out") == numbers(tmp_path / "reference")


def _children(pid: int) -> list[int]:
    path = f"/proc/{pid}/task/{pid}/children"
    return [int(c) for c in open(path).read().split()] if os.path.exists(path) else []


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs Linux /proc to list child processes")
def test_killing_a_parallel_ablation_stops_its_workers_too(tmp_path, corpus):
    """``ablate --jobs 2`` killed with SIGKILL: its worker processes end within seconds instead of
    training on, unseen, into the run directories."""
    path = _write_ablation(tmp_path, corpus)
    args = [sys.executable, "-m", "textvae", "ablate", str(path), "--out", str(tmp_path / "out"), "--jobs", "2"]
    process = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    workers: list[int] = []
    while time.monotonic() < deadline and not list((tmp_path / "out").glob("*/seed*/metrics.jsonl")):
        time.sleep(0.05)
    workers = _children(process.pid)
    assert workers, "the ablation started no worker process"
    process.kill()
    process.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{w}") and _alive(w) for w in workers):
        time.sleep(0.1)
    assert not any(os.path.exists(f"/proc/{w}") and _alive(w) for w in workers)


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        return open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize(
    ("events", "epochs"),
    [
        ([("train", 0), ("train", 0), ("valid", 1)], 1),  # stopped at the end of epoch 1: its validation says 1
        ([("train", 0), ("valid", 1), ("train", 1), ("stopped", None), ("valid", 1)], 2),  # capped inside epoch 2
    ],
)
def test_a_rows_budget_counts_the_epochs_it_started(tmp_path, events, epochs):
    from types import SimpleNamespace

    from textvae.reproduction.ablation import _budget

    lines = [{"event": e, **({"epoch": n} if n is not None else {})} for e, n in events]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    variant = SimpleNamespace(recipe=SimpleNamespace(train=SimpleNamespace(device="cpu")))
    assert _budget(variant, tmp_path)["train_epochs"] == epochs
