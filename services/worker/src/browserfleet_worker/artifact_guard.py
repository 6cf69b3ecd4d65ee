"""What keeps a task's secret values out of the artifacts the platform stores (README "Secrets and
artifacts"): a Playwright trace is scrubbed entry by entry before it is stored, and every artifact is then
searched for the secrets' forms (secret_forms.py) — one in which any is found is withheld, with a note."""

from __future__ import annotations

import io
import logging
import time
import zipfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import Counter, Histogram

from .secret_forms import SecretScanner

if TYPE_CHECKING:  # the steps package imports this module
    from .steps.outcome import Artifact

log = logging.getLogger(__name__)

TRACE_NAME = "trace.zip"

TRACE_SCRUB_SECONDS = Histogram(
    "browserfleet_worker_trace_scrub_seconds",
    "Time to scrub a failed task's trace of its secret values",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
WITHHELD = Counter(
    "browserfleet_worker_artifacts_withheld_total", "Artifacts not stored because they held a secret value"
)


@dataclass
class TraceScrub:
    """What scrubbing one trace did: forms overwritten, entries left out (their names), how long it took."""

    replaced: int = 0
    dropped: list[str] = field(default_factory=list)
    seconds: float = 0.0


def scrub_trace(data: bytes, scanner: SecretScanner) -> tuple[bytes | None, TraceScrub]:
    """The trace archive with every form of every secret overwritten in every entry (events, network log,
    DOM snapshots, resources). An entry still holding one afterwards (inside compressed content) or that
    cannot be checked is left out; None when the archive itself cannot be read."""
    started = time.perf_counter()
    report = TraceScrub()
    try:
        source = zipfile.ZipFile(io.BytesIO(data))
        entries = [(info, source.read(info)) for info in source.infolist()]
    except (zipfile.BadZipFile, NotImplementedError, ValueError, EOFError, OSError):
        log.warning("a trace archive could not be read; it is not stored")
        return None, report
    out = io.BytesIO()
    # the fastest deflate level: a third of the time of the default for a few percent more bytes
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as target:
        for info, content in entries:
            scrubbed, count = scanner.scrub(content)
            report.replaced += count
            if scanner.deep_find(scrubbed, raw=False) is not None:  # withhold() checks the whole again
                report.dropped.append(info.filename)
                continue
            target.writestr(info.filename, scrubbed)
    report.seconds = time.perf_counter() - started
    TRACE_SCRUB_SECONDS.observe(report.seconds)
    log.debug(
        "trace scrubbed in %.1f ms: %d replaced, %d dropped",
        report.seconds * 1000,
        report.replaced,
        len(report.dropped),
    )
    return out.getvalue(), report


def withhold(artifacts: list[Artifact], scanner: SecretScanner) -> tuple[list[Artifact], list[str]]:
    """The artifacts that may be stored, and a note for each one withheld: any secret form in its bytes
    (or in what they compress), or bytes that cannot be checked, and it is not stored."""
    if not scanner:
        return artifacts, []
    kept: list[Artifact] = []
    notes: list[str] = []
    for artifact in artifacts:
        finding = scanner.deep_find(artifact.data)
        if finding is None:
            kept.append(artifact)
            continue
        WITHHELD.inc()
        notes.append(f"artifact {artifact.name} not stored: {finding.describe()}")
    return kept, notes
