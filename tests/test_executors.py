"""ablate --executor local (submitit's local executor) against the pool, a crashed job rerun, --status,
the GPU a row records, and the one-line errors of the executors' options."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time

import pytest

from tests import test_ablation
from tests.conftest import REPO
from tests.test_ablation import _write_ablation
from textvae.cli import main
from textvae.faults import ENV_VAR
from textvae.reproduction.ablation import load_ablation, run_rows

pytest.importorskip("submitit")
corpus = test_ablation.corpus  # the tiny corpus fixture

QUICK = [  # quickstart rows cut to 20 steps (a checkpoint every 5) and a small evaluation
    "--set",
    "train.max_steps=20",
    "--set",
    "train.checkpoint_every_steps=5",
    "--set",
    "train.validate_every_steps=20",
    "--set",
    "train.max_valid_sentences=20",
    "--set",
    "eval.max_sentences=20",
    "--set",
    "eval.iw_samples=5",
    "--set",
    "eval.iw_chunk_size=5",
]


def _numbers(out) -> list[dict]:
    """Every row of results.json without what depends on when and where it ran."""
    rows = json.loads((out / "results.json").read_text())
    drop = ("train_seconds", "eval_seconds", "date")
    return [{k: v for k, v in row.items() if k not in drop} for row in rows]


def _job_process(controller: int) -> int:
    """The process that runs a local job's callable: a descendant of the job's controller (its id)."""
    from pathlib import Path

    def descendants(pid: int) -> list[int]:
        path = Path(f"/proc/{pid}/task/{pid}/children")
        children = [int(c) for c in path.read_text().split()] if path.exists() else []
        return children + [d for c in children for d in descendants(c)]

    (task,) = [d for d in descendants(controller) if b"core._submit" in Path(f"/proc/{d}/cmdline").read_bytes()]
    return task


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="finds the job's process through Linux /proc")
def test_local_executor_gives_the_pools_numbers_through_a_preemption(tmp_path):
    """Two quickstart rows: ``--jobs 2`` on this machine, and submitit's local executor with both rows in
    one job (trained at the same time, as on a GPU under MPS). The job is preempted after the first
    checkpoint (the USR2 signal submitit's handler catches; ``LocalJob._interrupt`` of submitit 1.5.4
    signals the job's controller, which dies of it, so the test signals the job's own process): it
    stops its rows, is requeued and resumes them. The same results.json numbers as the pool."""
    ablation = REPO / "recipes" / "quickstart" / "ablation.toml"
    only = ["--only", "VAE", "--only", "+free bits"]
    pool, local = tmp_path / "pool", tmp_path / "local"
    assert main(["ablate", str(ablation), "--out", str(pool), "--jobs", "2", *only, *QUICK]) == 0
    args = ["ablate", str(ablation), "--out", str(local), "--executor", "local", "--rows-per-job", "2", *only, *QUICK]
    assert main([*args, "--detach"]) == 0
    (job,) = json.loads((local / "jobs" / "jobs.json").read_text())
    deadline = time.monotonic() + 300
    while not list(local.glob("*/seed0/last.pt")):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(_job_process(int(job["id"])), signal.SIGUSR2)
    assert main([*args, "--poll-seconds", "0.5"]) == 0  # the job is still held: waits for it, no resubmission
    assert _numbers(local) == _numbers(pool)
    assert [row["variant"] for row in _numbers(local)] == ["VAE", "+free bits"]
    assert len(json.loads((local / "jobs" / "jobs.json").read_text())) == 1
    log = (local / "jobs" / f"{job['id']}_0_log.err").read_text()
    assert "this job is preempted" in log and f"Requeued job {job['id']}" in log
    assert log.count("job rows: VAE seed 0, +free bits seed 0") == 2  # the job ran twice
    assert str(local / "jobs" / "code") in log  # the job imported the snapshot taken at submission


def test_a_killed_job_leaves_its_rows_failed_and_the_next_ablate_resumes_them(tmp_path, corpus, monkeypatch, capsys):
    """TEXTVAE_FAULT kills every job's process with SIGKILL after step 5 (no signal handler runs, so
    no requeue): ``ablate`` reports the rows failed and ``--status`` says which job; run again without
    the fault, the rows resume from their step-4 checkpoints and end with an uninterrupted run's numbers."""
    path = _write_ablation(tmp_path, corpus)
    seeds = ["--seeds", "1", "--only", "LM", "--only", "VAE"]
    assert main(["ablate", str(path), "--out", str(tmp_path / "reference"), *seeds]) == 0
    out = tmp_path / "out"
    args = ["ablate", str(path), "--out", str(out), "--executor", "local", "--rows-per-job", "1", *seeds]
    monkeypatch.setenv(ENV_VAR, "after_step:5")
    assert main([*args, "--poll-seconds", "0.5"]) == 2
    assert "2 of 2 runs failed" in capsys.readouterr().err
    monkeypatch.delenv(ENV_VAR)
    capsys.readouterr()
    assert main([*args[:4], *seeds, "--status"]) == 0
    status = capsys.readouterr().out
    jobs = json.loads((out / "jobs" / "jobs.json").read_text())
    for job in jobs:
        assert f"| {job['rows'][0][0]} | 0 | failed | {job['id']} | job {job['id']} ended without a result" in status
    assert "0 done, 0 running, 0 queued, 2 failed of 2 rows" in status
    assert all(
        not (out / v / "seed0" / "result.json").exists() and (out / v / "seed0" / "last.pt").exists()
        for v in ("lm", "vae")
    )
    assert main([*args, "--poll-seconds", "0.5"]) == 0
    assert len(json.loads((out / "jobs" / "jobs.json").read_text())) == 4  # the two failed rows, resubmitted
    resumed = "".join(p.read_text() for p in (out / "jobs").glob("*_log.err"))
    assert "resuming" in resumed
    assert _numbers(out) == _numbers(tmp_path / "reference")


def test_status_of_a_half_finished_pool_directory(tmp_path, corpus, capsys):
    """One row done, one interrupted (a checkpoint, no result), the rest not started: ``--status``
    says so without running or writing anything."""
    path = _write_ablation(tmp_path, corpus)
    out = tmp_path / "out"
    assert main(["ablate", str(path), "--out", str(out), "--seeds", "1", "--only", "VAE"]) == 0
    (out / "lm" / "seed0").mkdir(parents=True)
    shutil.copy(out / "vae" / "seed0" / "last.pt", out / "lm" / "seed0" / "last.pt")
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    capsys.readouterr()
    assert main(["ablate", str(path), "--out", str(out), "--seeds", "0,1", "--status"]) == 0
    status = capsys.readouterr().out
    assert "| LM | 0 | started | — |" in status and "| LM | 1 | pending | — |" in status
    assert "| VAE | 0 | done | — |" in status and "| VAE | 1 | pending | — |" in status
    assert "| +free bits +annealing | 0 | pending | — |" in status
    assert "1 done, 0 running, 0 queued, 0 failed of 6 rows (5 not submitted)" in status
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_a_row_records_the_gpu_its_worker_was_pinned_to(tmp_path, corpus, monkeypatch):
    """Two workers over a faked count of two GPUs (the rows still train on the CPU here)."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    variants, _ = load_ablation(_write_ablation(tmp_path, corpus))
    rows = run_rows(variants[:2], [0], tmp_path / "spread", 2, device_count=2)
    assert all(row["gpu"] in (0, 1) for row in rows)
    rows = run_rows(variants[:1], [0], tmp_path / "one", 1, gpus=[1], device_count=2)  # --jobs 1 --gpus 1
    assert [row["gpu"] for row in rows] == [1] and rows[0]["device"] == "cpu"


@pytest.mark.parametrize(
    ("extra", "config", "message"),
    [
        (["--executor", "local", "--rows-per-job", "0"], None, "--rows-per-job must be an integer ≥ 1, got 0"),
        (["--executor", "local", "--executor-config", "{config}"], "partitin = 'gpu'\n", "unknown key 'partitin'"),
        (["--executor", "local", "--executor-config", "{config}"], "setup = 'module load x'\n", "list of shell"),
        (["--gpus", "3"], None, "there is no GPU 3; this machine has no CUDA device"),
        (["--gpus", "a"], None, "--gpus a: expected device indices"),
        (["--rows-per-job", "2"], None, "--rows-per-job is for --executor local or slurm"),
        (["--executor", "local", "--jobs", "2"], None, "--jobs is for the pool executor"),
        (["--executor", "local", "--gpus", "0"], None, "--gpus is for the pool executor"),
    ],
)
def test_bad_executor_options_are_one_line_errors(tmp_path, corpus, capsys, extra, config, message):
    path = _write_ablation(tmp_path, corpus)
    if config is not None:
        (tmp_path / "site.toml").write_text(config)
    extra = [e.replace("{config}", str(tmp_path / "site.toml")) for e in extra]
    assert main(["ablate", str(path), "--out", str(tmp_path / "out"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()  # nothing written, nothing submitted
