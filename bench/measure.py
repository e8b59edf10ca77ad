"""Shared measuring for the bench scripts: wall and CPU seconds and peak RSS of a ``with`` block.

The peak is the kernel's own high-water mark (``VmHWM`` in ``/proc/self/status``), reset when a block
starts (``5`` written to ``/proc/self/clear_refs``): a spike between two samples counts too. Blocks
may nest: before each reset the mark so far is folded into every block still open. Where the kernel
offers no reset (not Linux), a sampling thread (every 20 ms) gives a lower bound instead, and
``peak_source`` says so.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

_STATUS, _CLEAR = Path("/proc/self/status"), Path("/proc/self/clear_refs")
_OPEN: list[PeakRSS] = []  # the blocks open now, outermost first


def _high_water_mark() -> int | None:
    try:
        found = re.search(r"^VmHWM:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(found.group(1)) * 1024 if found else None


def _reset_high_water_mark() -> bool:
    try:
        _CLEAR.write_text("5")
    except OSError:
        return False
    return True


def _fold() -> None:
    """The mark so far into every open block, then a fresh mark from now on."""
    mark = _high_water_mark()
    for block in _OPEN:
        if mark is not None and block.exact:
            block.peak = max(block.peak, mark)
    _reset_high_water_mark()


class PeakRSS:
    """Peak RSS (the kernel's high-water mark, else sampled), wall and CPU seconds of a ``with`` block."""

    def __enter__(self) -> PeakRSS:
        self.process = psutil.Process()
        _fold()
        self.base = self.peak = self.process.memory_info().rss
        self.exact = _high_water_mark() is not None and _reset_high_water_mark()
        _OPEN.append(self)
        self._caller, self._sampled, self.where = threading.get_ident(), 0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._cpu0, self._t0 = sum(self.process.cpu_times()[:2]), time.perf_counter()
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            rss = self.process.memory_info().rss
            self.peak = max(self.peak, rss)
            if rss > self._sampled:  # a new sampled high: where the measured code is now
                self._sampled, self.where = rss, _stack_of(self._caller)

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._t0
        self.cpu_seconds = sum(self.process.cpu_times()[:2]) - self._cpu0
        self._stop.set()
        self._thread.join()
        _fold()
        _OPEN.remove(self)
        self.peak = max(self.peak, self.process.memory_info().rss)

    def figures(self) -> dict[str, float | str | list[str]]:
        """Seconds, CPU seconds, base and peak RSS (MB); ``peak_at``: the measured thread's innermost frames
        (``file:function:line``, innermost first) when the 20 ms samples saw their highest RSS (where the
        peak is, within a sample of the kernel's mark; ``peak_sampled_mb``)."""
        return {"seconds": round(self.seconds, 2), "cpu_seconds": round(self.cpu_seconds, 2),
                "base_rss_mb": round(self.base / 2**20), "peak_rss_mb": round(self.peak / 2**20),
                "peak_source": "VmHWM" if self.exact else "sampled every 20 ms",
                "peak_sampled_mb": round(self._sampled / 2**20), "peak_at": self.where}


def _stack_of(thread_id: int, depth: int = 12) -> list[str]:
    """The innermost ``depth`` frames of thread ``thread_id`` now, innermost first."""
    frame, out = sys._current_frames().get(thread_id), []
    while frame is not None and len(out) < depth:
        out.append(f"{Path(frame.f_code.co_filename).name}:{frame.f_code.co_name}:{frame.f_lineno}")
        frame = frame.f_back
    return out


class RSSTrace:
    """This process's RSS every ``interval_s`` seconds through a ``with`` block: ``samples`` of
    (epoch seconds, bytes). A sampled lower bound (a spike between two samples is missed): for saying
    *when* the peak happens, beside :class:`PeakRSS`'s exact figure."""

    def __init__(self, interval_s: float = 0.02) -> None:
        self.interval_s = interval_s
        self.samples: list[tuple[float, int]] = []

    def __enter__(self) -> RSSTrace:
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while True:
            self.samples.append((time.time(), self._process.memory_info().rss))
            if self._stop.wait(self.interval_s):
                return

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def peaks_by_span(self, spans: dict[str, list[tuple[float, float]]]) -> dict[str, int]:
        """Per name, the highest sampled RSS (MB) inside any of its (start, end) epoch-second spans."""
        out = {}
        for name, ranges in spans.items():
            inside = [rss for t, rss in self.samples if any(a <= t <= b for a, b in ranges)]
            if inside:
                out[name] = round(max(inside) / 2**20)
        return out

    def peak_moment(self) -> tuple[float, int]:
        """(epoch seconds, MB) of the highest sample."""
        t, rss = max(self.samples, key=lambda s: s[1])
        return t, round(rss / 2**20)


# The libraries whose releases move the weekly run's time and memory (stop 35 saw the 10M features stage peak
# ~550 MB higher than stop 34 with the same code: only the machine and the resolved versions differed).
LIBRARIES = ("numpy", "pandas", "pyarrow", "lightgbm", "scikit-learn", "mlflow", "prefect", "dask", "distributed",
             "great-expectations", "adbc-driver-postgresql", "adbc-driver-manager")


def versions(packages: tuple[str, ...] = LIBRARIES) -> dict[str, str]:
    """The installed version of each of ``packages`` ("absent" where one is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in packages:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "absent"
    return found


def commit(where: Path | None = None) -> str:
    """The short commit of the checkout at ``where`` (default: this one), with ``+dirty`` when its tracked files
    other than ``bench/results`` have changes."""
    cwd = where or Path(__file__).parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, cwd=cwd,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)bench/results"],  # the bench's own results, rewritten as it runs
                               capture_output=True, text=True, cwd=cwd, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")
