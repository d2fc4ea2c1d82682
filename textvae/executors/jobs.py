"""The jobs of a cluster ablation, kept in ``DIR/jobs/jobs.json``, and the state of every row.

Each submission appends its jobs (id, executor, rows) to ``jobs.json``. A row's state comes from its
files first, then from the scheduler's view of the last job that held it:

- ``done``: its ``result.json`` exists (whoever wrote it);
- ``queued`` / ``running``: its last job waits or runs (Slurm through ``sacct``, else ``squeue``; a
  local job by its process); a requeued or preempted job counts as queued;
- ``failed``: its last job ended without writing the row (the error, when the job left one);
- ``started``: no job holds it, but a checkpoint exists (an interrupted ``ablate``; the next run resumes it);
- ``pending``: nothing yet.

``ablate`` submits only the rows that are ``failed``, ``started`` or ``pending``: never a finished
row, nor one a queued or running job holds.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from textvae.checkpoint import atomic_write_text

log = logging.getLogger(__name__)

STATES = ("done", "running", "queued", "failed", "started", "pending")
SUBMITTABLE = ("failed", "started", "pending")
# sacct's states of a job that is not over (Slurm's "JOB STATE CODES"); the others end it
_SLURM_QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "PREEMPTED", "SUSPENDED", "RESIZING"}
_SLURM_RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING"}
ACCOUNTING_LAG_S = 600  # a job Slurm lists nowhere is taken as waiting for this long after its submission


@dataclass
class RowState:
    variant: str
    seed: int
    state: str  # one of STATES
    job: str | None = None  # the id of the last job that held the row
    error: str | None = None


def jobs_dir(out_dir: Path) -> Path:
    """submitit's folder for this ablation (pickles, job logs) and ``jobs.json``."""
    return out_dir / "jobs"


def read_jobs(out_dir: Path) -> list[dict]:
    path = jobs_dir(out_dir) / "jobs.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []


def record_jobs(out_dir: Path, executor: str, jobs: list[tuple[str, list[tuple[str, int]]]]) -> None:
    """Append submitted jobs (id, their (variant, seed) rows) to ``jobs.json``."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    entries = read_jobs(out_dir) + [
        {"id": job_id, "executor": executor, "rows": [list(row) for row in rows], "submitted": now}
        for job_id, rows in jobs
    ]
    jobs_dir(out_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_text(jobs_dir(out_dir) / "jobs.json", json.dumps(entries, indent=2))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:  # a zombie (exited, not yet reaped by its parent) is not running
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def _result(folder: Path, job_id: str) -> tuple[str, object] | None:
    """A finished job's outcome as submitit pickled it (``("success", rows)`` or ``("error", traceback)``)."""
    from submitit.core.utils import JobPaths, pickle_load

    path = JobPaths(folder, job_id=job_id, task_id=0).result_pickle
    if not path.is_file():
        return None
    try:
        return pickle_load(path)
    except Exception as err:  # a half-written or foreign pickle: the job is over, its outcome unknown
        return ("error", f"unreadable result {path.name}: {err}")


def _slurm_state(state: str) -> str | None:
    """``running``, ``queued`` or ``over`` for a Slurm job state (``CANCELLED by 12``, ``COMPLETED``);
    None for one Slurm did not report."""
    state = state.split()[0].upper().rstrip("+") if state.strip() else "UNKNOWN"
    if state == "UNKNOWN":
        return None
    return "running" if state in _SLURM_RUNNING else "queued" if state in _SLURM_QUEUED else "over"


def _squeue(job_ids: list[str]) -> dict[str, str] | None:
    """The states squeue lists for these jobs (array tasks one by one); None when squeue cannot answer."""
    import subprocess

    command = ["squeue", "--noheader", "--array", "--format=%i|%T", f"--jobs={','.join(job_ids)}"]
    try:
        output = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError) as err:
        log.debug("%s: %s", " ".join(command), err)
        return None
    return dict(line.strip().split("|", 1) for line in output.splitlines() if "|" in line)


def _age_s(entry: dict) -> float:
    submitted = datetime.datetime.strptime(entry["submitted"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    return (datetime.datetime.now(datetime.UTC) - submitted).total_seconds()


def scheduler_states(out_dir: Path, entries: list[dict]) -> dict[str, str]:
    """``queued``, ``running`` or ``over`` for each job id, asking Slurm once for all its jobs.

    Slurm's accounting (``sacct``, what submitit reads) answers first; a job it does not list is looked
    up in ``squeue``; a job neither lists is still waiting if it was submitted less than
    ``ACCOUNTING_LAG_S`` ago, and over otherwise (its rows are then resubmitted)."""
    folder = jobs_dir(out_dir)
    states: dict[str, str] = {}
    slurm = [e for e in entries if e["executor"] == "slurm" and _result(folder, e["id"]) is None]
    if slurm:
        from submitit.slurm.slurm import SlurmJob

        watcher = SlurmJob.watcher
        for entry in slurm:
            watcher.register_job(entry["id"])
        watcher.update()  # one sacct call for every job
        unlisted = []
        for entry in slurm:
            state = _slurm_state(watcher.get_state(entry["id"], mode="cache"))
            if state is None:
                unlisted.append(entry)
            else:
                states[entry["id"]] = state
        listed = _squeue([e["id"] for e in unlisted]) if unlisted else {}
        for entry in unlisted:
            state = _slurm_state(listed.get(entry["id"], "")) if listed is not None else None
            states[entry["id"]] = state or ("queued" if _age_s(entry) < ACCOUNTING_LAG_S else "over")
    for entry in entries:
        job_id = entry["id"]
        if job_id in states:
            continue
        if _result(folder, job_id) is not None:
            states[job_id] = "over"
        elif entry["executor"] == "local":  # a local job's id is its controller's process id
            states[job_id] = "running" if _pid_alive(int(job_id)) else "over"
        else:
            states[job_id] = "over"
    return states


def row_states(out_dir: Path, rows: list[tuple[str, str, int]]) -> list[RowState]:
    """The state of each (variant name, variant directory, seed) row of ``out_dir``."""
    entries = read_jobs(out_dir)
    last: dict[tuple[str, int], dict] = {}
    for entry in entries:
        for variant, seed in entry["rows"]:
            last[(variant, seed)] = entry
    holding = [e for e in entries if any(last.get((v, s)) is e for v, s in e["rows"])]
    states = scheduler_states(out_dir, holding) if holding else {}
    result = []
    for name, slug, seed in rows:
        run_dir = out_dir / slug / f"seed{seed}"
        entry = last.get((name, seed))
        job_id = entry["id"] if entry else None
        if (run_dir / "result.json").is_file():
            result.append(RowState(name, seed, "done", job_id))
        elif entry is not None and states[job_id] in ("queued", "running"):
            result.append(RowState(name, seed, states[job_id], job_id))
        elif entry is not None:
            result.append(RowState(name, seed, "failed", job_id, _row_error(out_dir, job_id, name, seed)))
        elif (run_dir / "last.pt").is_file():
            result.append(RowState(name, seed, "started"))
        else:
            result.append(RowState(name, seed, "pending"))
    return result


def _row_error(out_dir: Path, job_id: str, variant: str, seed: int) -> str:
    """Why a job's row has no result: the row's own error, the job's exception, or a killed job."""
    outcome = _result(jobs_dir(out_dir), job_id)
    log_file = jobs_dir(out_dir) / f"{job_id}_0_log.err"
    if outcome is None:
        return f"job {job_id} ended without a result (killed?); its log: {log_file}"
    status, value = outcome
    if status == "success" and isinstance(value, list):
        for row in value:
            if row.get("variant") == variant and row.get("seed") == seed and "error" in row:
                return row["error"]
        return f"job {job_id} finished without this row; its log: {log_file}"
    last_line = str(value).strip().splitlines()[-1] if str(value).strip() else "no message"
    return f"job {job_id} failed: {last_line}"


def progress_line(states: list[RowState]) -> str:
    """``3 done, 4 running, 1 queued, 0 failed of 8 rows``."""
    counts = {name: sum(s.state == name for s in states) for name in STATES}
    waiting = counts["started"] + counts["pending"]
    line = (
        f"{counts['done']} done, {counts['running']} running, {counts['queued']} queued, "
        f"{counts['failed']} failed of {len(states)} rows"
    )
    return line + (f" ({waiting} not submitted)" if waiting else "")


def status_table(states: list[RowState]) -> str:
    """One line per row: variant, seed, state, job, error (markdown)."""
    lines = ["| variant | seed | state | job | error |", "|---|---|---|---|---|"]
    for s in states:
        lines.append(f"| {s.variant} | {s.seed} | {s.state} | {s.job or '—'} | {s.error or ''} |")
    return "\n".join(lines)
