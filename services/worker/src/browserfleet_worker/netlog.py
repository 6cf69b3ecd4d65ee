"""A task's network log without DOM snapshots (TRACE_SNAPSHOTS=failure): Playwright's trace records the network
only while it snapshots the DOM, so the driver's HAR recorder records it beside the trace, from the context's
preparation on; a failed task has it written and put into its trace archive as `trace.network` (where a trace
with snapshots keeps its own, so the trace viewer's Network tab shows it); a succeeded task's goes with its
context, never read."""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import re
import shutil
import tempfile
import uuid
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.async_api import BrowserContext

log = logging.getLogger(__name__)

# what the network log may add to a trace: a page that sends more keeps its latest requests
MAX_NETWORK_LOG_BYTES = 8 * 1024 * 1024
# A recording's entries stay in the driver's memory until they are exported, so a page that sends requests
# without end would grow the driver (shared by every slot) without bound. Every ROTATE_SECONDS the recording
# is exported to its file, which frees them, and a new one starts (a request in the moment between the two
# is not recorded); the segments written stay on disk as long as the later ones hold less than
# MAX_NETWORK_LOG_BYTES, so a failed task's log is the same latest 8 MiB, and its disk use stays bounded.
ROTATE_SECONDS = 15.0


@dataclass(eq=False)
class _Recording:
    channel: Any  # the context's tracing channel
    har_id: str | None  # the driver's current recording; None once one could not start
    path: Path  # where the driver writes the current recording
    older: list[Path] = field(default_factory=list)  # the segments before it, written, oldest first
    dropped: bool = False  # whether older segments were let go (the log is cut)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    stopped: bool = False
    rotator: asyncio.Task[None] | None = None


# a recording context -> its recording
_RECORDING: weakref.WeakKeyDictionary[BrowserContext, _Recording] = weakref.WeakKeyDictionary()
_folder: Path | None = None
# where an entry starts in the recorder's file (one JSON.stringify per entry, its keys in this order; inside a
# JSON string a quote is escaped, so this occurs only between entries)
_ENTRY_START = re.compile(rb',\{"(?:pageref|startedDateTime)":"')


def _dir() -> Path:
    global _folder
    if _folder is None:
        _folder = Path(tempfile.mkdtemp(prefix="browserfleet-network-"))
        atexit.register(shutil.rmtree, _folder, True)
    return _folder


async def _har_start(channel: Any) -> tuple[str, Path]:
    # minimal mode: no page entries, so the recorder never evaluates in a page (a hung page cannot hold the
    # context's close), and no bodies (the requests, their headers, status and failures are what a failure
    # needs)
    path = _dir() / f"{uuid.uuid4().hex}.har"
    options = {"content": "omit", "mode": "minimal", "harPath": str(path)}
    reply = await channel.harStart(page=None, options=options)
    return str(reply["harId"]), path


async def start(ctx: BrowserContext, channel: Any) -> None:
    """The driver's HAR recorder on `ctx` (once), started on the tracing channel: `tracing.start_har` would
    have the client export it when the context closes (a round trip and a file written for every task). The
    driver still writes the file as the context closes; the files go with the context."""
    if ctx in _RECORDING or not hasattr(channel, "harStart"):
        return
    har_id, path = await _har_start(channel)
    recording = _Recording(channel, har_id, path)
    _RECORDING[ctx] = recording
    recording.rotator = asyncio.create_task(_rotate(recording), name="network-log-rotation")
    ctx.once("close", lambda _c: _closed(recording))


def _closed(recording: _Recording) -> None:
    recording.stopped = True
    if recording.rotator is not None:
        recording.rotator.cancel()
    for path in (recording.path, *recording.older):
        path.unlink(missing_ok=True)


async def _rotate(recording: _Recording) -> None:
    while True:
        await asyncio.sleep(ROTATE_SECONDS)
        async with recording.lock:
            if recording.stopped or recording.har_id is None:
                return
            try:
                await recording.channel.harExport(harId=recording.har_id, mode="entries")
                recording.har_id = None
                if _empty(recording.path):  # an idle context (a warm one, say) keeps no file per rotation
                    recording.path.unlink(missing_ok=True)
                elif recording.path.is_file():
                    recording.older.append(recording.path)
                    recording.dropped |= _drop_unneeded(recording.older)
                recording.har_id, recording.path = await _har_start(recording.channel)
            except Exception:  # the context closed meanwhile, or the driver went: what was written is kept
                log.debug("the network log's recording could not be rotated", exc_info=True)
                return


def _empty(har: Path) -> bool:
    """Whether the recorder's file at `har` holds no request."""
    try:
        return har.stat().st_size < 4096 and har.read_bytes().rstrip().endswith(b'"entries":[]}}')
    except OSError:
        return False


def _drop_unneeded(segments: list[Path]) -> bool:
    """Removes the oldest segments that the later ones make unneeded (they hold MAX_NETWORK_LOG_BYTES);
    whether it removed any."""
    sizes = [p.stat().st_size if p.is_file() else 0 for p in segments]
    dropped = False
    while len(segments) > 1 and sum(sizes[1:]) >= MAX_NETWORK_LOG_BYTES:
        segments.pop(0).unlink(missing_ok=True)
        sizes.pop(0)
        dropped = True
    return dropped


def hold(ctx: BrowserContext) -> None:
    """No more rotation for `ctx` (its task failed): what the recording has now stays until `export`, however
    long the failure's artifacts take."""
    recording = _RECORDING.get(ctx)
    if recording is not None:
        recording.stopped = True  # a rotation under way finishes; none starts after it


def running(ctx: BrowserContext) -> bool:
    """Whether `ctx` records its network log."""
    return ctx in _RECORDING


async def export(ctx: BrowserContext) -> tuple[list[Path], bool]:
    """Has the driver write `ctx`'s network log and returns its files, oldest first (removed when the context
    closes; [] when none was recorded), and whether earlier segments were let go. Once per context."""
    recording = _RECORDING.pop(ctx, None)
    if recording is None:
        return [], False
    async with recording.lock:  # a rotation under way finishes first
        recording.stopped = True
        if recording.rotator is not None:
            recording.rotator.cancel()
        files = [p for p in recording.older if p.is_file()]
        if recording.har_id is not None:
            await recording.channel.harExport(harId=recording.har_id, mode="entries")
            if recording.path.is_file():
                files.append(recording.path)
    return files, recording.dropped


def trace_network(hars: Path | list[Path], limit: int = MAX_NETWORK_LOG_BYTES) -> tuple[bytes, bool]:
    """The HAR files' entries (oldest file first) as a trace's network file (a `resource-snapshot` event per
    line), and whether earlier entries were left out: a log over `limit` bytes keeps only its latest entries
    (only that much of the files is read)."""
    files = [hars] if isinstance(hars, Path) else list(hars)
    kept: list[list[Any]] = []
    cut = False
    for har in reversed(files):  # the latest first, each within what the later ones left of `limit`
        if limit <= 0:
            cut = True
            break
        entries, partial, used = _entries(har, limit)
        kept.insert(0, entries)
        limit -= used
        if partial:
            cut = True
            break
    lines = [
        json.dumps({"type": "resource-snapshot", "snapshot": entry}) + "\n" for part in kept for entry in part
    ]
    return "".join(lines).encode(), cut


def _entries(har: Path, limit: int) -> tuple[list[Any], bool, int]:
    """`har`'s entries, whether only its latest fit `limit` bytes, and how many bytes were read."""
    size = har.stat().st_size
    with har.open("rb") as f:
        if size <= limit:
            entries: list[Any] = json.loads(f.read())["log"]["entries"]
            return entries, False, size
        f.seek(size - limit)
        tail = f.read()
    first = _ENTRY_START.search(tail)
    last = tail.rfind(b"]")
    body = tail[first.start() + 1 : last] if first is not None and last > first.start() else b""
    return json.loads(b"[" + body + b"]"), True, limit
