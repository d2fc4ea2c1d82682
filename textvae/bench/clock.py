"""Wall-clock timing that waits for the device, interleaved rounds, and the matmul peak."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch


class Clock:
    """Wall-clock seconds that wait for the device; the best matmul rate seen so far."""

    def __init__(self, device: torch.device, matmul_size: int):
        self.device, self.matmul_size = device, matmul_size
        self.peak_gflops = 0.0
        self.matmul_samples: list[float] = []
        # the latest ``interleaved`` call, round by round: each run's seconds and the matmul rate after
        self.last_rounds: list[dict] = []
        generator = torch.Generator(device=device).manual_seed(0)
        self._a = torch.randn(matmul_size, matmul_size, generator=generator, device=device)
        self._b = torch.randn(matmul_size, matmul_size, generator=generator, device=device)
        self._out = torch.empty_like(self._a)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def time(self, work: Callable[[], object]) -> float:
        self.sync()
        started = time.perf_counter()
        work()
        self.sync()
        return time.perf_counter() - started

    def matmul(self, repeats: int = 3) -> float:
        """The best of ``repeats`` fp32 n³ products, GFLOP/s; updates the peak."""
        flops = 2 * self._a.shape[0] ** 3
        best = min(self.time(lambda: torch.mm(self._a, self._b, out=self._out)) for _ in range(repeats + 1))
        rate = flops / best / 1e9
        self.matmul_samples.append(rate)
        self.peak_gflops = max(self.peak_gflops, rate)
        return rate

    def interleaved(self, runs: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
        """Best seconds of each run over ``rounds`` rounds in which the runs take turns (after one
        untimed warm-up each); a matmul measurement between rounds."""
        for work in runs.values():
            work()
        best = dict.fromkeys(runs, math.inf)
        self.last_rounds = []
        for _ in range(rounds):
            seconds = {name: self.time(work) for name, work in runs.items()}
            for name, value in seconds.items():
                best[name] = min(best[name], value)
            self.last_rounds.append({"seconds": seconds, "matmul_gflops": self.matmul()})
        return best
