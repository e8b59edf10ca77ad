"""Shared measuring for the bench scripts: wall and CPU seconds and peak RSS of a ``with`` block."""

from __future__ import annotations

import threading
import time

import psutil


class PeakRSS:
    """Sample this process's RSS every 20 ms while in the ``with`` block; CPU seconds too."""

    def __enter__(self) -> PeakRSS:
        self.process = psutil.Process()
        self.base = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._cpu0, self._t0 = sum(self.process.cpu_times()[:2]), time.perf_counter()
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._t0
        self.cpu_seconds = sum(self.process.cpu_times()[:2]) - self._cpu0
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    def figures(self) -> dict[str, float]:
        return {"seconds": round(self.seconds, 2), "cpu_seconds": round(self.cpu_seconds, 2),
                "base_rss_mb": round(self.base / 2**20), "peak_rss_mb": round(self.peak / 2**20)}
