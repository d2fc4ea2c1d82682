"""A fake Slurm for the tests of ``ablate --executor slurm``: sbatch, sacct, scancel, scontrol and srun
as small scripts on PATH that run the jobs on this machine.

``install(bin_dir, state_dir)`` writes the commands; every call is logged to ``state_dir/calls.jsonl``
(command, arguments, and for sbatch the script). ``sbatch`` gives the array job an id and starts one
"node" process per array task, unless ``FAKE_SLURM_HOLD`` is set (the tasks stay PENDING until
``release``). A node runs the batch script with the ``SLURM_*`` variables submitit reads; ``srun``
records the task's process id and execs the command; ``scancel --signal`` signals that process (what
``SlurmJob._interrupt`` calls); ``scontrol requeue`` marks the task, and its node runs the script
again when it exits, as Slurm requeues a job. ``sacct`` prints the states submitit parses.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

COMMANDS = ("sbatch", "sacct", "squeue", "scancel", "scontrol", "srun")
REPO = Path(__file__).resolve().parent.parent


def install(bin_dir: Path, state_dir: Path) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    for command in COMMANDS:
        script = bin_dir / command
        script.write_text(
            f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(REPO)!r})\n"
            f"from tests.fake_slurm import main\nmain({command!r}, sys.argv[1:])\n"
        )
        script.chmod(0o755)


def calls(state_dir: Path, command: str | None = None) -> list[dict]:
    path = state_dir / "calls.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    return [c for c in map(json.loads, lines) if command is None or c["command"] == command]


def release(state_dir: Path) -> None:
    """Start the PENDING tasks that a held sbatch left."""
    for state in sorted(state_dir.glob("*.state")):
        if state.read_text() == "PENDING":
            _start_node(state_dir, state.stem)


def _state_dir() -> Path:
    return Path(os.environ["FAKE_SLURM_DIR"])


def _start_node(state_dir: Path, task: str) -> None:
    code = f"import sys; sys.path.insert(0, {str(REPO)!r}); from tests.fake_slurm import node; node({task!r})"
    subprocess.Popen(
        [sys.executable, "-c", code],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, FAKE_SLURM_DIR=str(state_dir)),
    )


def node(task: str) -> None:
    """Run a task's batch script until it ends without a requeue."""
    state_dir = _state_dir()
    script = (state_dir / f"{task}.script").read_text()
    job, _, index = task.partition("_")
    while True:
        (state_dir / f"{task}.state").write_text("RUNNING")
        array = {"SLURM_ARRAY_JOB_ID": job, "SLURM_ARRAY_TASK_ID": index} if index else {}
        env = dict(
            os.environ,
            **array,
            SLURM_JOB_ID=task.replace("_", "0"),
            SLURM_NTASKS="1",
            SLURM_PROCID="0",
            SLURM_LOCALID="0",
            SLURM_NODEID="0",
            SLURM_JOB_NUM_NODES="1",
            FAKE_SLURM_TASK=task,
        )
        code = subprocess.run(["bash", "-c", script], env=env).returncode
        marker = state_dir / f"{task}.requeue"
        if marker.exists():
            marker.unlink()
            continue
        (state_dir / f"{task}.state").write_text("COMPLETED" if code == 0 else "FAILED")
        return


def main(command: str, argv: list[str]) -> None:
    state_dir = _state_dir()
    entry = {"command": command, "argv": argv}
    if command == "sbatch":
        entry["script"] = Path(argv[-1]).read_text()
    with open(state_dir / "calls.jsonl", "a") as log:
        log.write(json.dumps(entry) + "\n")
    if command == "sbatch":
        counter = state_dir / "next_id"
        job = int(counter.read_text()) if counter.exists() else 100
        counter.write_text(str(job + 1))
        array = re.search(r"#SBATCH --array=0-(\d+)", entry["script"])
        tasks = [f"{job}_{i}" for i in range(int(array.group(1)) + 1)] if array else [str(job)]
        for task in tasks:
            (state_dir / f"{task}.script").write_text(entry["script"])
            (state_dir / f"{task}.state").write_text("PENDING")
            if not os.environ.get("FAKE_SLURM_HOLD"):
                _start_node(state_dir, task)
        print(f"Submitted batch job {job}")
    elif command == "sacct":  # FAKE_SLURM_NO_ACCOUNTING: a cluster whose accounting lists nothing
        jobs = [argv[i + 1] for i, a in enumerate(argv) if a == "-j"]
        print("JobID|State|NodeList")
        listed = [] if os.environ.get("FAKE_SLURM_NO_ACCOUNTING") else sorted(state_dir.glob("*.state"))
        for state in listed:
            if state.stem.split("_")[0] in jobs or state.stem in jobs:
                print(f"{state.stem}|{state.read_text()}|fakenode")
    elif command == "squeue":  # squeue --noheader --array --format=%i|%T --jobs=100_0,100_1: jobs not over
        jobs = next(a for a in argv if a.startswith("--jobs=")).split("=", 1)[1].split(",")
        for task in jobs:
            state = state_dir / f"{task}.state"
            if state.is_file() and state.read_text() in ("PENDING", "RUNNING", "REQUEUED"):
                print(f"{task}|{state.read_text()}")
    elif command == "scancel":
        task = argv[0]
        name = argv[argv.index("--signal") + 1] if "--signal" in argv else "SIGKILL"
        pid = int((state_dir / f"{task}.pid").read_text())
        os.kill(pid, getattr(signal, name if name.startswith("SIG") else "SIG" + name))
    elif command == "scontrol":
        assert argv[0] == "requeue", argv
        (state_dir / f"{argv[1]}.requeue").write_text("")
        (state_dir / f"{argv[1]}.state").write_text("REQUEUED")
    elif command == "srun":
        args = list(argv)
        out = err = None
        while args and args[0].startswith("--"):
            flag = args.pop(0)
            if flag in ("--output", "--error"):
                value = args.pop(0)
                out, err = (value, err) if flag == "--output" else (out, value)
        task = os.environ["FAKE_SLURM_TASK"]
        job, _, index = task.partition("_")
        for path, fd in ((out, 1), (err, 2)):
            if path:
                path = path.replace("%A", job).replace("%a", index).replace("%j", job).replace("%t", "0")
                os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644), fd)
        (state_dir / f"{task}.pid").write_text(str(os.getpid()))
        os.execvp(args[0], args)
