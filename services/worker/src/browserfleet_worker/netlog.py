"""A task's network log without DOM snapshots (TRACE_SNAPSHOTS=failure): Playwright's trace records the network
only while it snapshots the DOM, so the driver's HAR recorder records it beside the trace, from the context's
preparation on; a failed task has it written and put into its trace archive as `trace.network` (where a trace
with snapshots keeps its own, so the trace viewer's Network tab shows it); a succeeded task's goes with its
context, never read."""

from __future__ import annotations

import atexit
import json
import re
import shutil
import tempfile
import uuid
import weakref
from pathlib import Path
from typing import Any

from playwright.async_api import BrowserContext

# what the network log may add to a trace: a page that sends more keeps its latest requests
MAX_NETWORK_LOG_BYTES = 8 * 1024 * 1024

# a recording context -> (the driver's HAR recording id, the file the driver writes it to)
_RECORDING: weakref.WeakKeyDictionary[BrowserContext, tuple[str, Path]] = weakref.WeakKeyDictionary()
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


async def start(ctx: BrowserContext, channel: Any) -> None:
    """The driver's HAR recorder on `ctx` (once), started on the tracing channel: `tracing.start_har` would
    have the client export it when the context closes (a round trip and a file written for every task).
    Minimal mode: no page entries, so the recorder never evaluates in a page (a hung page cannot hold the
    context's close), and no bodies (the trace with snapshots kept them; the requests, their headers, status
    and failures are what a failure needs). The driver still writes the file as the context closes; the file
    goes with the context."""
    if ctx in _RECORDING or not hasattr(channel, "harStart"):
        return
    path = _dir() / f"{uuid.uuid4().hex}.har"
    options = {"content": "omit", "mode": "minimal", "harPath": str(path)}
    reply = await channel.harStart(page=None, options=options)
    _RECORDING[ctx] = (str(reply["harId"]), path)
    ctx.once("close", lambda _c: path.unlink(missing_ok=True))


def running(ctx: BrowserContext) -> bool:
    """Whether `ctx` records its network log."""
    return ctx in _RECORDING


async def export(ctx: BrowserContext) -> Path | None:
    """Has the driver write `ctx`'s network log and returns its file (removed when the context closes); None
    when none was recorded. Once per context."""
    recording = _RECORDING.pop(ctx, None)
    channel = getattr(getattr(ctx.tracing, "_impl_obj", None), "_channel", None)
    if recording is None or channel is None:
        return None
    har_id, path = recording
    await channel.harExport(harId=har_id, mode="entries")
    return path if path.is_file() else None


def trace_network(har: Path, limit: int = MAX_NETWORK_LOG_BYTES) -> tuple[bytes, bool]:
    """The HAR file's entries as a trace's network file (a `resource-snapshot` event per line), and whether
    earlier entries were left out: a log over `limit` bytes keeps only its latest entries (only that much of
    the file is read)."""
    size = har.stat().st_size
    with har.open("rb") as f:
        if size <= limit:
            entries: list[Any] = json.loads(f.read())["log"]["entries"]
            cut = False
        else:
            f.seek(size - limit)
            tail = f.read()
            first = _ENTRY_START.search(tail)
            last = tail.rfind(b"]")
            body = tail[first.start() + 1 : last] if first is not None and last > first.start() else b""
            entries = json.loads(b"[" + body + b"]")
            cut = True
    lines = [json.dumps({"type": "resource-snapshot", "snapshot": entry}) + "\n" for entry in entries]
    return "".join(lines).encode(), cut
