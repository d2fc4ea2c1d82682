"""The CUDA MPS daemon, so that several processes share one GPU at the same time instead of in turns.

Without MPS, the kernels of different processes on one GPU never overlap: the GPU time-slices
between their contexts. With the Multi-Process Service (NVIDIA's MPS documentation), a control
daemon funnels every client process through one server context, and small kernels of different
processes run side by side: the way to fill a large GPU with many small models (``textvae ablate
--jobs N``, the bench's aggregate rows).

``MPSDaemon`` is a context manager: on entry it starts the daemon (``nvidia-cuda-mps-control -d``)
when CUDA is used by more than one process, the binary exists and no daemon runs yet; on exit
(also after an error or Ctrl-C) it stops the daemon it started (``echo quit |
nvidia-cuda-mps-control``) and nothing else. It never raises: when the daemon cannot be started it
logs a warning that the processes will time-slice. Worker processes must start inside the block
(they connect to the daemon when they first use CUDA). A SIGTERM or SIGKILL of the process that
started the daemon leaves it running; ``echo quit | nvidia-cuda-mps-control`` stops it.

The command runner is injectable (``run``, ``which``), so the logic is tested without a GPU.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)

CONTROL = "nvidia-cuda-mps-control"
TIMEOUT_S = 30.0  # ``quit`` waits for connected clients to finish; never hang on it longer than this

Runner = Callable[..., subprocess.CompletedProcess]


def cuda_wanted(devices: Iterable[str]) -> bool:
    """Whether processes asking for these devices (``auto``, ``cpu``, ``cuda``) will run on CUDA."""
    if all(device == "cpu" for device in devices):
        return False
    import torch

    return torch.cuda.is_available()


def daemon_running(run: Runner | None = None, which: Callable[[str], str | None] | None = None) -> bool:
    """Whether an MPS control daemon answers now (False when the binary is not there)."""
    probe = MPSDaemon(cuda=True, jobs=2, run=run, which=which)
    probe.binary = probe._which(CONTROL)
    return probe.binary is not None and probe._control(command="get_server_list\n")


class MPSDaemon:
    """Start the MPS control daemon for ``jobs`` CUDA processes, and stop it afterwards if this started it.

    ``started`` says whether this block started the daemon; ``shared`` whether the processes run
    under a daemon (this one's, or one that was already running)."""

    def __init__(
        self,
        *,
        cuda: bool,
        jobs: int,
        run: Runner | None = None,
        which: Callable[[str], str | None] | None = None,
    ):
        self.cuda, self.jobs = cuda, jobs
        self._run, self._which = run or subprocess.run, which or shutil.which
        self.binary: str | None = None
        self.started = self.shared = False

    def _control(self, *args: str, command: str | None = None) -> bool:
        """Run the control binary (``command`` on its stdin); True when it exits with status 0 and
        does not say that it found no daemon."""
        try:
            result = self._run(
                [self.binary, *args],
                input=command,
                capture_output=True,
                text=True,
                timeout=TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as err:
            log.debug("%s %s: %s", CONTROL, " ".join(args) or command, err)
            return False
        return result.returncode == 0 and "cannot find" not in f"{result.stdout}{result.stderr}".lower()

    def __enter__(self) -> MPSDaemon:
        if not self.cuda or self.jobs < 2:
            return self
        self.binary = self._which(CONTROL)
        if self.binary is None:
            log.warning("%s not found: the %d processes will time-slice the GPU (no MPS)", CONTROL, self.jobs)
            return self
        if self._control(command="get_server_list\n"):  # answers only when a daemon is running
            log.info("MPS: a control daemon is already running; the %d processes share the GPU through it", self.jobs)
            self.shared = True
            return self
        if self._control("-d"):
            log.info("MPS: started the control daemon; the %d processes share the GPU", self.jobs)
            self.started = self.shared = True
        else:
            log.warning(
                "MPS: `%s -d` failed (not root? GPU in exclusive mode?): the %d processes will time-slice the GPU",
                CONTROL,
                self.jobs,
            )
        return self

    def __exit__(self, *exc) -> bool:
        if self.started:
            if self._control(command="quit\n"):
                log.info("MPS: stopped the control daemon")
            else:
                log.warning("MPS: `echo quit | %s` failed: the daemon may still be running", CONTROL)
            self.started = False
        return False
