"""`--profile DIR`: py-spy on every service process while a benchmark phase runs, and a summary of where the
CPU went (`python -m tests.bench.profiling FILE...` prints one for files already recorded).

py-spy samples from outside the process (`--nonblocking`: the service is never paused), so the figures the
benchmark reports while profiling are only slightly worse than without it. Each phase writes one collapsed-stack
file per process (`<phase>-<process>.txt`, py-spy's `raw` format, readable by any flame-graph tool) and a
`<phase>-<process>.top.txt` with the functions that held the most samples, by self and by inclusive time.
"""

from __future__ import annotations

import collections
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType

RATE = 250  # samples per second: enough for a 10 s phase to tell 1 % apart


def py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


class Profiler:
    """Records `pids` (name → pid) from `__enter__` to `__exit__`; a no-op when `out_dir` is None."""

    def __init__(self, out_dir: Path | None, phase: str, pids: dict[str, int]) -> None:
        self.out_dir = out_dir
        self.phase = phase
        self.pids = pids
        self._procs: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}

    def __enter__(self) -> Profiler:
        exe = py_spy()
        if self.out_dir is None or exe is None:
            if self.out_dir is not None:
                print("--profile: py-spy not found (uv sync installs it with the dev group)", file=sys.stderr)
            return self
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for name, pid in self.pids.items():
            out = self.out_dir / f"{self.phase}-{name}.txt"
            cmd = [exe, "record", "--pid", str(pid), "--rate", str(RATE), "--format", "raw"]
            cmd += ["--nonblocking", "--output", str(out)]
            self._procs[name] = (
                subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
                out,
            )
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for proc, _ in self._procs.values():
            proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        for name, (proc, out) in self._procs.items():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                continue
            if out.exists():
                out.with_suffix(".top.txt").write_text(summarize(out))
                print(f"profile: {self.phase} {name} -> {out}", flush=True)


def summarize(path: Path, top: int = 40) -> str:
    """The functions holding the most samples of one collapsed-stack file, by self and by inclusive time."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_short(f) for f in stack.split(";")]
        if frames:
            own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    if not total:
        return f"{path.name}: no samples\n"
    lines = [f"{path.name}: {total} samples", "", "self %   function"]
    lines += [f"{100 * n / total:6.1f}   {f}" for f, n in own.most_common(top)]
    lines += ["", "incl %   function"]
    lines += [f"{100 * n / total:6.1f}   {f}" for f, n in incl.most_common(top)]
    return "\n".join(lines) + "\n"


def _short(frame: str) -> str:
    # "func (path/to/module.py:123)" → "func (module.py)": lines apart are the same function here
    name, _, where = frame.partition(" (")
    file = where.rstrip(")").rsplit(":", 1)[0]
    parts = file.split("/")
    return f"{name} ({'/'.join(parts[-2:])})" if file else name


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(summarize(Path(arg)))
