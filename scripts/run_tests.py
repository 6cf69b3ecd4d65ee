"""Runs the suite one package per pytest process, three processes at once, and ends with one summary.

Why not one pytest process: every package's tests start real services (brokers subscribed to `svc.*`
subjects, durable JetStream consumers) for the whole run. In one process they would answer each other's
requests. One process per package gives each its own NATS server and its own database, as DESIGN.md §7 asks.

Why three at once: most of a whole-platform package's time is spent waiting (services starting, Chromium
loading pages, retries backing off): two at a time, the suite kept 1.33 of the two cores busy (903 CPU-s in
681 s on a quiet machine), so a third lane still finds idle CPU. The longest
packages start first, so the run does not end on one long package alone. Each package's output is kept
and printed whole when it ends, so two packages never interleave their lines.

Usage: python scripts/run_tests.py [pytest args...]   (e.g. -k claim, -x)
       BF_TEST_JOBS=1 python scripts/run_tests.py      (one package at a time)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Whole-platform packages that take longest, measured: started first so the two lanes end together.
SLOW_FIRST = (
    "tests/bench",
    "tests/deploy",
    "tests/lifecycle",
    "services/worker/tests",
    "tests/seed_api",
    "services/gateway/tests",
    "tests/worker_e2e",
)


# pytest plugins whose imports cost a second or more in every process, each with the word that shows a
# package needs it; a package that never names it runs without it (measured: collecting the SDK's tests
# took 5.5-5.9 CPU-s with all three, 2.8-3.3 without, and there are two dozen packages)
OPTIONAL_PLUGINS = {
    "hypothesispytest": "hypothesis",
    "schemathesis": "schemathesis",
    "playwright": "playwright",
}


def plugins_off(tests: Path) -> list[str]:
    text = "\n".join(p.read_text(errors="replace") for p in tests.rglob("*.py"))
    return [
        arg for name, word in OPTIONAL_PLUGINS.items() if word not in text for arg in ("-p", f"no:{name}")
    ]


def packages() -> list[Path]:
    found = []
    for base in ("libs", "services"):
        for tests in sorted((ROOT / base).glob("*/tests")):
            if any(tests.rglob("test_*.py")):
                found.append(tests)
    for tests in sorted((ROOT / "tests").iterdir()):
        if tests.is_dir() and any(tests.rglob("test_*.py")):
            found.append(tests)

    def order(p: Path) -> tuple[int, str]:
        rel = str(p.relative_to(ROOT))
        return (SLOW_FIRST.index(rel) if rel in SLOW_FIRST else len(SLOW_FIRST), rel)

    return sorted(found, key=order)


@dataclass
class Outcome:
    rel: str
    code: int
    counts: dict[str, int]
    seconds: float
    cpu_seconds: float


def run_package(tests: Path, report: Path, argv: list[str], log: Path) -> Outcome:
    rel = str(tests.relative_to(ROOT))
    t0 = time.monotonic()
    # A basetemp of its own: pytest resets /tmp/pytest-of-<user> to mode 0700 whenever a process starts, so
    # a package starting beside another would cut the embedded PostgreSQL's system user off from its data
    # dir under the shared folder in the middle of initdb.
    basetemp = report.parent / f"{report.stem}-tmp"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pytest",
                rel,
                f"--junitxml={report}",
                "--durations=5",
                f"--basetemp={basetemp}",
                *plugins_off(tests),
                *argv,
            ],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        # wait4: the CPU of this package alone (pytest and every process it started and reaped: the services,
        # NATS, PostgreSQL, Chromium), which the other lane's package does not blur as wall time does
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = code = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    outcome = Outcome(rel, code, _counts(report), time.monotonic() - t0, cpu)
    print(f"\n=== {rel} ===\n{log.read_text()}", end="", flush=True)
    print(f"--- {rel}: {outcome.counts} in {outcome.seconds:.1f}s, {cpu:.1f} CPU-s (exit {code})", flush=True)
    return outcome


def main(argv: list[str]) -> int:
    jobs = max(1, int(os.environ.get("BF_TEST_JOBS", "3")))
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(max_workers=jobs) as pool:
        Path(tmp).chmod(0o755)  # the embedded PostgreSQL's system user walks through it to its data dir
        futures = [
            pool.submit(run_package, tests, Path(tmp) / f"{i}.xml", argv, Path(tmp) / f"{i}.log")
            for i, tests in enumerate(packages())
        ]
        outcomes = [f.result() for f in futures]
    totals = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
    for o in outcomes:
        for key in totals:
            totals[key] += o.counts[key]
    failed_packages = [o.rel for o in outcomes if o.code not in (0, 5)]
    cpu = sum(o.cpu_seconds for o in outcomes)
    print(f"\nsuite took {time.monotonic() - started:.1f}s with {jobs} package(s) at a time, {cpu:.0f} CPU-s")
    for o in sorted(outcomes, key=lambda o: -o.cpu_seconds):
        print(f"  {o.seconds:7.1f}s {o.cpu_seconds:7.1f} CPU-s  {o.rel}")
    if failed_packages:
        print("failing packages: " + ", ".join(failed_packages))
    failed = (
        totals["failed"]
        + totals["errors"]
        + (1 if failed_packages and not totals["failed"] + totals["errors"] else 0)
    )
    print(f"{totals['passed']} passed, {failed} failed, {totals['skipped']} skipped")
    return 1 if failed_packages else 0


def _counts(report: Path) -> dict[str, int]:
    counts = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
    if not report.exists():
        return counts
    root = ET.parse(report).getroot()  # noqa: S314 - our own pytest's report
    suites = [root] if root.tag == "testsuite" else list(root)
    for suite in suites:
        tests = int(suite.get("tests", 0))
        failures = int(suite.get("failures", 0))
        errors = int(suite.get("errors", 0))
        skipped = int(suite.get("skipped", 0))
        counts["failed"] += failures
        counts["errors"] += errors
        counts["skipped"] += skipped
        counts["passed"] += tests - failures - errors - skipped
    return counts


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
