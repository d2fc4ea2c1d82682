"""The MPS daemon context manager, with an injected command runner: no GPU, no binary needed."""

from __future__ import annotations

import logging
import subprocess

import pytest
import torch

from textvae.cuda import mps
from textvae.cuda.mps import MPSDaemon, cuda_wanted
from textvae.reproduction.ablation import run_ablation

BINARY = "/usr/bin/nvidia-cuda-mps-control"


class FakeControl:
    """``nvidia-cuda-mps-control`` as a runner: records each call as ``-d`` or the stdin command."""

    def __init__(self, *, running: bool = False, start_ok: bool = True, raises: type[Exception] | None = None):
        self.running, self.start_ok, self.raises = running, start_ok, raises
        self.calls: list[str] = []

    def __call__(self, argv, *, input=None, **kwargs) -> subprocess.CompletedProcess:
        assert argv[0] == BINARY and kwargs["timeout"] > 0
        call = " ".join(argv[1:]) or input.strip()
        self.calls.append(call)
        if self.raises is not None:
            raise self.raises("boom")
        if call == "-d":
            self.running = self.start_ok
            return subprocess.CompletedProcess(argv, 0 if self.start_ok else 1, "", "")
        if call == "quit":
            self.running = False
            return subprocess.CompletedProcess(argv, 0, "", "")
        if self.running:
            return subprocess.CompletedProcess(argv, 0, "1234\n", "")
        return subprocess.CompletedProcess(argv, 1, "", "Cannot find MPS control daemon process\n")


def _daemon(control: FakeControl, *, cuda: bool = True, jobs: int = 4, binary: str | None = BINARY) -> MPSDaemon:
    return MPSDaemon(cuda=cuda, jobs=jobs, run=control, which=lambda name: binary)


def test_starts_the_daemon_for_several_cuda_processes_and_stops_it_after():
    control = FakeControl()
    with _daemon(control) as daemon:
        assert daemon.started and daemon.shared and control.running
        assert control.calls == ["get_server_list", "-d"]
    assert control.calls[-1] == "quit" and not control.running and not daemon.started


@pytest.mark.parametrize("cuda,jobs", [(False, 4), (True, 1), (False, 1)])
def test_starts_nothing_without_cuda_or_with_one_process(cuda, jobs):
    control = FakeControl()
    with _daemon(control, cuda=cuda, jobs=jobs) as daemon:
        assert not daemon.started and not daemon.shared
    assert control.calls == []


def test_leaves_a_daemon_it_did_not_start_running():
    control = FakeControl(running=True)
    with _daemon(control) as daemon:
        assert daemon.shared and not daemon.started
    assert control.calls == ["get_server_list"] and control.running


def test_stops_the_daemon_after_an_error_or_ctrl_c():
    for error in (RuntimeError, KeyboardInterrupt):
        control = FakeControl()
        with pytest.raises(error), _daemon(control):
            raise error()
        assert control.calls[-1] == "quit" and not control.running


def test_without_the_binary_it_warns_that_rows_time_slice(caplog):
    control = FakeControl()
    with caplog.at_level(logging.WARNING, logger="textvae.cuda.mps"), _daemon(control, binary=None) as daemon:
        assert not daemon.started and not daemon.shared
    assert control.calls == []
    assert "time-slice" in caplog.text


@pytest.mark.parametrize("raises", [FileNotFoundError, PermissionError, subprocess.TimeoutExpired])
def test_a_failing_binary_never_raises(raises, caplog):
    control = FakeControl(raises=(lambda message: raises("cmd", 1)) if raises is subprocess.TimeoutExpired else raises)
    with caplog.at_level(logging.WARNING, logger="textvae.cuda.mps"), _daemon(control) as daemon:
        assert not daemon.started
    assert "time-slice" in caplog.text and "quit" not in control.calls


def test_a_daemon_that_will_not_start_is_not_stopped(caplog):
    control = FakeControl(start_ok=False)
    with caplog.at_level(logging.WARNING, logger="textvae.cuda.mps"), _daemon(control) as daemon:
        assert not daemon.started and not daemon.shared
    assert control.calls == ["get_server_list", "-d"] and "time-slice" in caplog.text


def test_cuda_is_wanted_unless_every_process_asks_for_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert cuda_wanted(["cpu", "auto"]) and cuda_wanted(["cuda"])
    assert not cuda_wanted(["cpu", "cpu"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not cuda_wanted(["auto", "cuda"])


def test_ablate_with_jobs_runs_its_rows_inside_the_daemon(tmp_path, monkeypatch):
    """``run_ablation(jobs=2)`` on a machine that looks like it has CUDA: the daemon starts before the
    rows and stops after them (the rows themselves fail fast: their corpus does not exist)."""
    control = FakeControl()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(mps.shutil, "which", lambda name: BINARY)
    monkeypatch.setattr(mps.subprocess, "run", control)
    (tmp_path / "base.toml").write_text(f"""
[data]
dataset = "files"
root = "{tmp_path / "missing"}"
[model]
type = "lm"
[model.decoder]
type = "lstm"
embed_dim = 4
hidden_dim = 5
[train]
device = "cpu"
""")
    (tmp_path / "ablation.toml").write_text(
        'base = "base.toml"\n[[variants]]\nname = "a"\n[variants.train]\ndevice = "auto"\n[[variants]]\nname = "b"\n'
    )
    rows = run_ablation(tmp_path / "ablation.toml", tmp_path / "out", jobs=2, seeds=[0])
    assert [row["variant"] for row in rows] == ["a", "b"] and all("error" in row for row in rows)
    assert control.calls == ["get_server_list", "-d", "quit"]


def test_daemon_running_asks_the_daemon_and_is_false_without_the_binary():
    assert mps.daemon_running(run=FakeControl(running=True), which=lambda name: BINARY)
    assert not mps.daemon_running(run=FakeControl(running=False), which=lambda name: BINARY)
    control = FakeControl(running=True)
    assert not mps.daemon_running(run=control, which=lambda name: None) and control.calls == []
