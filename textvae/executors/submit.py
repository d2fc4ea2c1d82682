"""``textvae ablate --executor local|slurm``: the rows as groups, each group one checkpointable submitit job.

A job holds ``rows_per_job`` rows and trains them at the same time, as ``ablate --jobs`` does on one
machine (``textvae.reproduction.ablation.run_rows``: one worker per row, MPS when they share a GPU, spread over
the job's GPUs when it has several). Its rows write ``result.json`` into the shared ``--out``
directory like any other row, so the table is gathered from the run directories whatever ran them.

- **Requeue.** ``RowGroup`` is checkpointable (submitit calls ``checkpoint`` on the preemption or
  timeout signal): it stops the job's row workers and resubmits the same rows, which resume from
  their ``last.pt``. A SIGKILL (out of memory, ``scancel``) cannot be caught: the job ends, its rows
  show as failed, and the next ``ablate`` resubmits them, again resuming from their checkpoints.
- **Snapshot.** The ``textvae`` package is copied to ``DIR/jobs/code/<time>/`` at submission and the
  jobs import it from there (``PYTHONPATH``, and ``PYTHONSAFEPATH`` so that a checkout in the working
  directory does not come first), so an edit of the code after submission does not
  change a queued or requeued job. The rows themselves travel resolved (recipes and overrides read
  at submission), so an edit of a recipe does not either.
- **Slurm.** One ``sbatch`` job array, one array task per group. ``--out`` must be on a filesystem
  every node sees; ``/tmp`` and ``/dev/shm`` are refused.
- **local.** submitit's local executor: every job is a process on this machine, and every job sees
  the same GPUs (for tests and single-GPU machines, not for spreading).
"""

from __future__ import annotations

import datetime
import json
import logging
import multiprocessing
import shlex
import shutil
import time
from pathlib import Path
from typing import Any

from textvae.errors import TextVAEError
from textvae.executors.jobs import (
    SUBMITTABLE,
    jobs_dir,
    progress_line,
    record_jobs,
    row_states,
)
from textvae.executors.settings import ExecutorSettings

log = logging.getLogger(__name__)

LOCAL_ONLY = (Path("/tmp"), Path("/dev/shm"))  # node-local on every cluster: a job elsewhere would not see them
# a row longer than one job's time limit continues in the requeued job: allow many of them
# (fairseq's Slurm configs use 30), each resuming from the rows' checkpoints
MAX_TIMEOUTS = 30
SIGNAL_DELAY_S = 120  # the preemption/timeout signal comes this long before the kill: time to stop the rows


class RowGroup:
    """One job's rows: ``run_rows`` on them; on preemption or timeout, the same rows requeued."""

    def __init__(self, variants: list, seeds: list[int], out_dir: Path, rows: list[tuple[str, int]]):
        self.variants, self.seeds, self.out_dir, self.rows = variants, seeds, Path(out_dir), rows

    def __call__(self) -> list[dict[str, Any]]:
        import textvae
        from textvae.reproduction.ablation import run_rows

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
        log.info("code: %s", Path(textvae.__file__).parent)  # the snapshot taken at submission
        log.info("job rows: %s", ", ".join(f"{v} seed {s}" for v, s in self.rows))
        return run_rows(
            self.variants, self.seeds, self.out_dir, len(self.rows), rows_wanted=set(self.rows), table=False
        )

    def checkpoint(self, *args: Any, **kwargs: Any):
        """Preempted or timed out: stop this job's row workers now (each row resumes from its last
        checkpoint) and requeue the same rows."""
        from submitit.helpers import DelayedSubmission

        for child in multiprocessing.active_children():
            child.kill()
        log.warning("job interrupted: requeueing its rows; they resume from their checkpoints")
        return DelayedSubmission(RowGroup(self.variants, self.seeds, self.out_dir, self.rows))


def check_cluster(executor: str, out_dir: Path) -> None:
    """The one-line errors before anything is written or submitted."""
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise TextVAEError(f"--executor {executor} needs submitit: pip install 'textvae[cluster]'") from None
    if executor == "slurm":
        if shutil.which("sbatch") is None:
            raise TextVAEError("--executor slurm: sbatch is not on PATH (run ablate on a Slurm login node)")
        resolved = out_dir.resolve()
        for local in LOCAL_ONLY:
            if resolved == local or local in resolved.parents or out_dir.absolute().is_relative_to(local):
                raise TextVAEError(
                    f"--out {out_dir}: {local} is local to each node; a Slurm ablation needs a directory "
                    "every node sees (home, project or scratch filesystem)"
                )


def snapshot_code(out_dir: Path) -> Path:
    """Copy the imported ``textvae`` package to ``DIR/jobs/code/<time>/textvae``; returns the folder to
    put on the jobs' ``PYTHONPATH``."""
    import textvae

    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S%f")
    root = jobs_dir(out_dir) / "code" / stamp
    shutil.copytree(Path(textvae.__file__).parent, root / "textvae", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _executor(kind: str, out_dir: Path, settings: ExecutorSettings, code: Path):
    """A submitit executor for ``kind`` with the settings, the jobs importing ``code`` first."""
    import submitit

    # PYTHONSAFEPATH: `python -m` would put the working directory (a checkout, perhaps) before the snapshot
    path = f"{shlex.quote(str(code))}${{PYTHONPATH:+:$PYTHONPATH}}"
    setup = [f"export PYTHONPATH={path} PYTHONSAFEPATH=1", *settings.setup]
    if kind == "local":
        executor = submitit.LocalExecutor(folder=jobs_dir(out_dir), max_num_timeout=MAX_TIMEOUTS)
        executor.update_parameters(
            timeout_min=settings.time, gpus_per_node=settings.gpus_per_job, signal_delay_s=SIGNAL_DELAY_S, setup=setup
        )
        return executor
    try:
        executor = submitit.SlurmExecutor(folder=jobs_dir(out_dir), max_num_timeout=MAX_TIMEOUTS)
    except RuntimeError as err:  # no srun: not on a Slurm node
        raise TextVAEError(f"--executor slurm: {err}") from None
    parameters = {
        "job_name": "textvae-ablate",
        "time": settings.time,
        "nodes": 1,
        "ntasks_per_node": 1,
        "gpus_per_node": settings.gpus_per_job or None,
        "cpus_per_task": settings.cpus_per_job,
        "partition": settings.partition,
        "account": settings.account,
        "qos": settings.qos,
        "signal_delay_s": SIGNAL_DELAY_S,
        "setup": setup,
    }
    executor.update_parameters(**{k: v for k, v in parameters.items() if v is not None})
    return executor


def _groups(todo: list[tuple[str, int]], size: int) -> list[list[tuple[str, int]]]:
    return [todo[i : i + size] for i in range(0, len(todo), size)]


def run_on_cluster(
    path: str | Path,
    out_dir: str | Path,
    executor: str,
    settings: ExecutorSettings,
    *,
    seeds: list[int] | None = None,
    overrides: list[str] = (),
    only: list[str] | None = None,
    detach: bool = False,
    poll_s: float = 30.0,
) -> list[dict[str, Any]] | None:
    """Submit the rows that no job holds and that are not done, in groups of ``rows_per_job``; then
    (unless ``detach``) wait for every row, showing progress, and write the table. Returns the rows
    (None when detached)."""
    from textvae.reproduction.ablation import describe_ablation, select_variants

    out_dir = Path(out_dir)
    check_cluster(executor, out_dir)
    out_dir = out_dir.absolute()  # the jobs may start in another directory
    variants, seeds = select_variants(path, seeds, overrides, only)
    rows = [(v.name, v.slug, s) for v in variants for s in seeds]
    describe_ablation(out_dir, path, variants, seeds)
    states = row_states(out_dir, rows)
    todo = [(s.variant, s.seed) for s in states if s.state in SUBMITTABLE]
    held = [s for s in states if s.state in ("queued", "running")]
    if held:
        log.info("%d rows are held by jobs already queued or running: not resubmitted", len(held))
    jobs: list = []
    if todo:
        groups = _groups(todo, settings.rows_per_job)
        code = snapshot_code(out_dir)
        submitter = _executor(executor, out_dir, settings, code)
        wanted = {name for name, _ in todo}
        job_variants = [v for v in variants if v.name in wanted]
        calls = [RowGroup([v for v in job_variants if v.name in {n for n, _ in g}], seeds, out_dir, g) for g in groups]
        jobs = submitter.submit_array(calls)
        record_jobs(out_dir, executor, [(job.job_id, group) for job, group in zip(jobs, groups, strict=True)])
        log.info(
            "submitted %d rows as %d %s jobs (%s); logs in %s",
            len(todo),
            len(jobs),
            executor,
            ", ".join(job.job_id for job in jobs),
            jobs_dir(out_dir),
        )
    if detach:
        log.info("detached: `textvae ablate %s --out %s --status` shows the rows", path, out_dir)
        return None
    return wait_for_rows(out_dir, variants, seeds, poll_s, jobs)


def wait_for_rows(
    out_dir: Path, variants: list, seeds: list[int], poll_s: float, jobs: list = ()
) -> list[dict[str, Any]]:
    """Poll the rows' states until none is queued or running, logging each change; then write the table.
    ``jobs``: the jobs this process submitted (a finished local job is reaped, or it would look alive)."""
    from textvae.reproduction.ablation import write_results

    rows = [(v.name, v.slug, s) for v in variants for s in seeds]
    shown = None
    while True:
        for job in jobs:
            process = getattr(job, "_process", None)
            if process is not None:
                process.poll()
        states = row_states(out_dir, rows)
        line = progress_line(states)
        if line != shown:
            log.info("rows: %s", line)
            shown = line
        if not any(s.state in ("queued", "running") for s in states):
            break
        time.sleep(poll_s)
    gathered = []
    for s, (_, slug, seed) in zip(states, rows, strict=True):
        result = out_dir / slug / f"seed{seed}" / "result.json"
        if s.state == "done":
            gathered.append(json.loads(result.read_text(encoding="utf-8")))
        else:
            gathered.append({"variant": s.variant, "seed": s.seed, "error": s.error or f"not run ({s.state})"})
    write_results(out_dir, gathered, variants)
    return gathered


def status(
    path: str | Path,
    out_dir: str | Path,
    *,
    seeds: list[int] | None = None,
    overrides: list[str] = (),
    only: list[str] | None = None,
) -> str:
    """``ablate FILE --out DIR --status``: every row's state, without submitting or writing anything."""
    from textvae.executors.jobs import status_table
    from textvae.reproduction.ablation import select_variants

    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise TextVAEError(f"--out {out_dir}: no such directory (nothing was run there yet)")
    variants, seeds = select_variants(path, seeds, overrides, only)
    states = row_states(out_dir, [(v.name, v.slug, s) for v in variants for s in seeds])
    return status_table(states) + "\n\n" + progress_line(states)
