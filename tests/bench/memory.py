"""Memory of one process with everything it started (a worker and its Chromium), sampled while a benchmark
runs: PSS (shared pages split between the processes that share them, so the tree's sum is what it really
holds) and the plain sum of RSS (shared pages counted once per process, what `ps` would add up)."""

from __future__ import annotations

import threading
from types import TracebackType

import psutil

MIB = 2**20


def tree_memory(pid: int) -> tuple[int, int]:
    """(PSS, RSS) in bytes of `pid` and its descendants; a process that ends while being read counts 0."""
    pss = rss = 0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0, 0
    for proc in procs:
        try:
            full = proc.memory_full_info()
        except psutil.Error:
            continue
        pss += getattr(full, "pss", full.rss)
        rss += full.rss
    return pss, rss


class PeakMemory:
    """The highest PSS and RSS of a process tree between `__enter__` and `__exit__`, every `every` seconds."""

    def __init__(self, pid: int, every: float = 0.5) -> None:
        self.pid = pid
        self.every = every
        self.peak_pss = self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-memory", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            pss, rss = tree_memory(self.pid)
            self.peak_pss, self.peak_rss = max(self.peak_pss, pss), max(self.peak_rss, rss)
            self._stop.wait(self.every)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(5)
