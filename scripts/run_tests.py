"""Runs the suite one package at a time, each in its own pytest process.

Why not one pytest process: every package's tests start real services (brokers subscribed to
`svc.*` subjects, durable JetStream consumers) for the whole run. In one process they would answer each
other's requests. One process per package gives each its own NATS server and its own database, as
DESIGN.md §7 asks, and the run still ends with one summary line.

Usage: python scripts/run_tests.py [pytest args...]   (e.g. -k claim, -x)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def packages() -> list[Path]:
    found = []
    for base in ("libs", "services"):
        for tests in sorted((ROOT / base).glob("*/tests")):
            if any(tests.rglob("test_*.py")):
                found.append(tests)
    for tests in sorted((ROOT / "tests").iterdir()):
        if tests.is_dir() and any(tests.rglob("test_*.py")):
            found.append(tests)
    return found


def main(argv: list[str]) -> int:
    totals = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
    failed_packages: list[str] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        for index, tests in enumerate(packages()):
            rel = tests.relative_to(ROOT)
            report = Path(tmp) / f"{index}.xml"
            print(f"\n=== {rel} ===", flush=True)
            t0 = time.monotonic()
            code = subprocess.call(
                [sys.executable, "-m", "pytest", str(rel), f"--junitxml={report}", *argv], cwd=ROOT
            )
            counts = _counts(report)
            for key in totals:
                totals[key] += counts[key]
            print(f"--- {rel}: {counts} in {time.monotonic() - t0:.1f}s (exit {code})", flush=True)
            if code not in (0, 5):
                failed_packages.append(str(rel))
    print(f"\nsuite took {time.monotonic() - started:.1f}s")
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
