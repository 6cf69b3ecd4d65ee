"""Memory of one process with everything it started (a worker and its Chromium), sampled while a benchmark
runs: PSS (shared pages split between the processes that share them, so the tree's sum is what it really
holds) and the plain sum of RSS (shared pages counted once per process, what `ps` would add up). The same
for every process of the platform at once: ProcessMemory."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Self

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


class _Sampler:
    """Calls `_sample` every `every` seconds on a thread between `__enter__` and `__exit__`, and once more at
    the end (at least one sample even when the load was shorter than `every`)."""

    def __init__(self, every: float, name: str) -> None:
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _sample(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.every)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(10)
        self._sample()


class PeakMemory(_Sampler):
    """The highest PSS and RSS of a process tree between `__enter__` and `__exit__`, every `every` seconds."""

    def __init__(self, pid: int, every: float = 0.5) -> None:
        super().__init__(every, "peak-memory")
        self.pid = pid
        self.peak_pss = self.peak_rss = 0

    def _sample(self) -> None:
        pss, rss = tree_memory(self.pid)
        self.peak_pss, self.peak_rss = max(self.peak_pss, pss), max(self.peak_rss, rss)


def _mib(value: int) -> int:
    return round(value / MIB)


class ProcessMemory(_Sampler):
    """PSS and RSS of several named process trees (every service, NATS, PostgreSQL with its backends): one
    snapshot, and between `__enter__` and `__exit__` each tree's peak plus the peak of their sum over
    `total_of` (taken at one sampling moment: the sum of each tree's own peak may never have happened)."""

    def __init__(
        self, pids: dict[str, int], total_of: Iterable[str] | None = None, every: float = 1.0
    ) -> None:
        super().__init__(every, "process-memory")
        self.pids = dict(pids)
        self.total_of = set(self.pids if total_of is None else total_of)
        self.peak: dict[str, tuple[int, int]] = {}
        self.peak_total = (0, 0)

    def snapshot(self) -> dict[str, tuple[int, int]]:
        # one pass over /proc for all the trees: psutil's children() makes one per call, which at a sample
        # every half second would take the load generator beside it a good part of a core
        procs = {p.pid: p for p in psutil.process_iter(["ppid"])}
        kids: dict[int, list[int]] = {}
        for proc in procs.values():
            kids.setdefault(proc.info["ppid"], []).append(proc.pid)
        out = {}
        for name, root in self.pids.items():
            pss = rss = 0
            todo = [root] if root in procs else []
            while todo:
                pid = todo.pop()
                todo += kids.get(pid, [])
                try:
                    full = procs[pid].memory_full_info()
                except psutil.Error:  # ended meanwhile: counts 0
                    continue
                pss += getattr(full, "pss", full.rss)
                rss += full.rss
            out[name] = (pss, rss)
        return out

    def _sample(self) -> None:
        now = self.snapshot()
        for name, (pss, rss) in now.items():
            old_pss, old_rss = self.peak.get(name, (0, 0))
            self.peak[name] = (max(old_pss, pss), max(old_rss, rss))
        total = self.total(now)
        self.peak_total = (max(self.peak_total[0], total[0]), max(self.peak_total[1], total[1]))

    def total(self, figures: dict[str, tuple[int, int]]) -> tuple[int, int]:
        chosen = [v for k, v in figures.items() if k in self.total_of]
        return sum(v[0] for v in chosen), sum(v[1] for v in chosen)

    def figures(self, idle: dict[str, tuple[int, int]]) -> dict[str, Any]:
        """MiB per process, idle (the snapshot `idle`) and peak, and the same for the total."""
        per = {
            name: {
                "idle_pss": _mib(idle.get(name, (0, 0))[0]),
                "idle_rss": _mib(idle.get(name, (0, 0))[1]),
                "peak_pss": _mib(self.peak.get(name, (0, 0))[0]),
                "peak_rss": _mib(self.peak.get(name, (0, 0))[1]),
            }
            for name in self.pids
        }
        idle_total = self.total(idle)
        return {
            "per_process": per,
            "total": {
                "of": sorted(self.total_of),
                "idle_pss": _mib(idle_total[0]),
                "idle_rss": _mib(idle_total[1]),
                "peak_pss": _mib(self.peak_total[0]),
                "peak_rss": _mib(self.peak_total[1]),
            },
        }
