"""ablate --executor slurm against a fake Slurm on PATH (tests/fake_slurm.py): what is submitted, a
preempted job requeued through submitit's own test hook, --status, no resubmission of held rows,
and the errors that stop a submission."""

from __future__ import annotations

import json
import os
import time

import pytest

from tests import fake_slurm, test_ablation
from tests.test_ablation import _write_ablation
from textvae.cli import main

submitit = pytest.importorskip("submitit")
corpus = test_ablation.corpus  # the tiny corpus fixture

# rows long enough to be interrupted mid-training: ~280 steps (they stop after 5 lr decays), a checkpoint every 10
LONG = ["--set", "train.max_steps=300", "--set", "train.checkpoint_every_steps=10", "--set", "train.log_every_steps=50"]
ROWS = ["--seeds", "1", "--only", "LM", "--only", "VAE"]


@pytest.fixture
def slurm(tmp_path, monkeypatch):
    """The fake commands on PATH; their state (and every call) in tmp_path/slurm."""
    from textvae.executors import submit

    state = tmp_path / "slurm"
    fake_slurm.install(tmp_path / "bin", state)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_DIR", str(state))
    monkeypatch.setattr(submit, "LOCAL_ONLY", ())  # pytest's tmp_path is under /tmp, which a real Slurm run refuses
    submitit.SlurmJob.watcher.clear()
    return state


def _numbers(out) -> list[dict]:
    rows = json.loads((out / "results.json").read_text())
    return [{k: v for k, v in row.items() if k not in ("train_seconds", "eval_seconds", "date")} for row in rows]


def _wait_for(condition, seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def test_slurm_submission_requeue_status_and_no_resubmission(tmp_path, corpus, slurm, monkeypatch, capsys):
    path = _write_ablation(tmp_path, corpus)
    assert main(["ablate", str(path), "--out", str(tmp_path / "reference"), *ROWS, *LONG]) == 0
    out = tmp_path / "out"
    (tmp_path / "site.toml").write_text('partition = "cpu"\naccount = "lab"\nqos = "high"\ncpus_per_job = 3\n')
    submit_args = [
        *("ablate", str(path), "--out", str(out), *ROWS, *LONG, "--executor", "slurm", "--rows-per-job", "1"),
        *("--executor-config", str(tmp_path / "site.toml"), "--slurm-partition", "gpu", "--slurm-time", "30"),
        *("--slurm-setup", "export TEXTVAE_SETUP_RAN=1"),
    ]

    # submitted while the cluster is full: the array waits
    monkeypatch.setenv("FAKE_SLURM_HOLD", "1")
    assert main([*submit_args, "--detach"]) == 0
    (sbatch,) = fake_slurm.calls(slurm, "sbatch")
    script = sbatch["script"]
    for line in (
        "#SBATCH --array=0-1%2",  # one array task per group of rows
        "#SBATCH --partition=gpu",  # the flag over the file's "cpu"
        "#SBATCH --account=lab",
        "#SBATCH --qos=high",
        "#SBATCH --cpus-per-task=3",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --time=30",
        "#SBATCH --signal=USR2@120",  # the preemption/timeout signal, 2 minutes before the kill
        "export TEXTVAE_SETUP_RAN=1",
    ):
        assert line in script.splitlines(), line
    assert f"export PYTHONPATH={out / 'jobs' / 'code'}" in script and "PYTHONSAFEPATH=1" in script
    jobs = json.loads((out / "jobs" / "jobs.json").read_text())
    assert [(job["id"], job["rows"]) for job in jobs] == [("100_0", [["LM", 0]]), ("100_1", [["VAE", 0]])]
    capsys.readouterr()
    assert main([*submit_args[:4], *ROWS, "--status"]) == 0
    status = capsys.readouterr().out
    assert "| LM | 0 | queued | 100_0 |" in status and "| VAE | 0 | queued | 100_1 |" in status
    monkeypatch.setenv("FAKE_SLURM_NO_ACCOUNTING", "1")  # sacct lists nothing: squeue answers
    submitit.SlurmJob.watcher.clear()
    assert main([*submit_args[:4], *ROWS, "--status"]) == 0
    assert "| LM | 0 | queued | 100_0 |" in capsys.readouterr().out
    assert [c["argv"][-1] for c in fake_slurm.calls(slurm, "squeue")] == ["--jobs=100_0,100_1"]
    monkeypatch.delenv("FAKE_SLURM_NO_ACCOUNTING")
    submitit.SlurmJob.watcher.clear()

    # ablate again: the queued rows are not submitted twice
    assert main([*submit_args, "--detach"]) == 0
    assert len(fake_slurm.calls(slurm, "sbatch")) == 1

    # the jobs start; the LM row's job is preempted after its first checkpoint (submitit's test hook:
    # SIGTERM, then the USR2 signal), checkpoints, asks for a requeue and runs again, resuming the row
    monkeypatch.delenv("FAKE_SLURM_HOLD")
    fake_slurm.release(slurm)
    _wait_for(lambda: (out / "lm" / "seed0" / "last.pt").is_file())
    submitit.SlurmJob(out / "jobs", "100_0")._interrupt()
    assert main([*submit_args, "--poll-seconds", "0.5"]) == 0  # waits for both rows, then the table
    assert len(fake_slurm.calls(slurm, "sbatch")) == 1
    assert [c["argv"] for c in fake_slurm.calls(slurm, "scontrol")] == [["requeue", "100_0"]]
    job_log = (out / "jobs" / "100_0_0_log.err").read_text()
    assert "this job is preempted" in job_log and "Requeued job 100_0" in job_log and "resuming" in job_log
    assert _numbers(out) == _numbers(tmp_path / "reference")
    capsys.readouterr()
    assert main([*submit_args[:4], *ROWS, "--status"]) == 0
    assert "2 done, 0 running, 0 queued, 0 failed of 2 rows" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("/tmp/textvae-ablation", "/tmp is local to each node"),
        ("/dev/shm/ablation", "/dev/shm is local to each node"),
    ],
)
def test_slurm_refuses_a_node_local_out_directory(tmp_path, corpus, capsys, out, message, monkeypatch):
    state = tmp_path / "slurm"
    fake_slurm.install(tmp_path / "bin", state)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_DIR", str(state))
    path = _write_ablation(tmp_path, corpus)
    assert main(["ablate", str(path), "--out", out, "--executor", "slurm"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert fake_slurm.calls(state) == [] and not os.path.exists(out)


def test_slurm_without_sbatch_on_path_is_an_error(tmp_path, corpus, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    path = _write_ablation(tmp_path, corpus)
    assert main(["ablate", str(path), "--out", str(tmp_path / "out"), "--executor", "slurm"]) == 2
    err = capsys.readouterr().err
    assert "sbatch is not on PATH" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_a_job_slurm_lists_nowhere_waits_only_for_a_while(tmp_path, slurm, monkeypatch):
    """Neither sacct nor squeue knows the job (accounting lags, or the job is long gone): it counts as
    queued for ACCOUNTING_LAG_S after its submission, then as over, so that its rows are resubmitted."""
    from textvae.executors import jobs

    monkeypatch.setenv("FAKE_SLURM_NO_ACCOUNTING", "1")
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    entries = [
        {"id": "7_0", "executor": "slurm", "rows": [["a", 0]], "submitted": now},
        {"id": "8_0", "executor": "slurm", "rows": [["b", 0]], "submitted": "2026-01-01T00:00:00Z"},
    ]
    assert jobs.scheduler_states(tmp_path, entries) == {"7_0": "queued", "8_0": "over"}
