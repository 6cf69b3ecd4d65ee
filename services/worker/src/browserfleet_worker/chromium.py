"""The Chromium a worker launches: which binary, with which switches, and its processes."""

from __future__ import annotations

import os
from pathlib import Path

SYSTEM_CHROMIUM = "/usr/bin/chromium"
# Chromium's own background traffic (updates, sync, field trials) is noise at best and a data leak at worst
# on a machine that runs other people's tasks.
BASE_FLAGS = (
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
)

INSTALL_HINT = (
    "no Chromium found: install Playwright's build with `uv run playwright install chromium` "
    "(or `apt-get install chromium`), or set BROWSER_EXECUTABLE to a Chromium binary"
)


class BrowserNotFound(RuntimeError):
    pass


def find_chromium(
    configured: str | None, playwright_path: str | None, system_path: str = SYSTEM_CHROMIUM
) -> str:
    """The Chromium to launch.

    An explicitly configured BROWSER_EXECUTABLE wins (an operator who sets it means it, so a missing file is
    an error rather than a silent fallback); then Playwright's own build, which matches the driver's
    protocol exactly; then the system Chromium.
    """
    if configured:
        if not Path(configured).is_file():
            raise BrowserNotFound(f"BROWSER_EXECUTABLE={configured} does not exist; {INSTALL_HINT}")
        return configured
    if playwright_path and Path(playwright_path).is_file():
        return playwright_path
    if Path(system_path).is_file():
        return system_path
    raise BrowserNotFound(INSTALL_HINT)


# Chromium features a fleet browser must not run. AutofillServerCommunication sends the signature of every
# form a task fills to Google: a leak of what customers automate, and, through the guard proxy, a refused
# request (a spurious security event wherever allowed domains are set) on every `fill`.
# SpareRendererForSitePerProcess keeps an idle renderer started ahead for the next navigation: a worker's
# memory with no measurable gain for its tasks (each starts in a fresh context anyway).
# WebUIOmniboxPopup and WebUIOmniboxAimPopup: the full (new headless) Chromium opens a window per context and
# gives each its address bar's popup as a WebUI page in a renderer of its own (chrome://omnibox-popup.top-chrome),
# started with every context and never shown headless: a renderer's start-up CPU and ~30 MiB per task.
DISABLED_FEATURES = (
    "AutofillServerCommunication",
    "SpareRendererForSitePerProcess",
    "WebUIOmniboxPopup",
    "WebUIOmniboxAimPopup",
)


def disabled_features_arg(pids: list[int]) -> str | None:
    """The `--disable-features=` switch the Playwright-launched browser among `pids` was started with."""
    for pid in pids:
        try:
            args = [
                a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            ]
        except OSError:
            continue
        if "--remote-debugging-pipe" in args:  # the browser process, not a renderer or the zygote
            return next((a for a in args if a.startswith("--disable-features=")), None)
    return None


def merged_features_arg(default: str | None) -> str | None:
    """Playwright's own switch with DISABLED_FEATURES added, or None if nothing is missing. Chromium keeps
    only the last `--disable-features`, so ours must carry Playwright's list too, never replace it."""
    have = default.split("=", 1)[1].split(",") if default else []
    missing = [f for f in DISABLED_FEATURES if f not in have]
    return "--disable-features=" + ",".join([f for f in have if f] + missing) if missing else None


# Playwright's driver is a Node process that lives as long as the worker and mostly passes short-lived protocol
# messages; V8's default young generation (16 MiB semi-spaces, grown on demand) kept ~25 MiB more of it
# resident than a 1 MiB one (driver PSS ~119 -> ~95 MiB over 40 tasks, its CPU unchanged).
DRIVER_NODE_OPTIONS = ("--max-semi-space-size=1",)


def driver_node_options(current: str | None) -> str:
    """NODE_OPTIONS for Playwright's driver: the operator's own, with ours added where they set none."""
    have = (current or "").split()
    ours = [o for o in DRIVER_NODE_OPTIONS if not any(h.split("=")[0] == o.split("=")[0] for h in have)]
    return " ".join([*have, *ours])


def launch_flags(*, sandbox: bool) -> list[str]:
    return [*BASE_FLAGS, *([] if sandbox else ["--no-sandbox"])]


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def chromium_pids(executable: str | None, root: int | None = None) -> list[int]:
    """Pids of Chromium processes started by this process's Playwright drivers (via /proc); with `root`, only
    that browser process and its descendants (one BrowserHost's browser among others in this process)."""
    me = os.getpid() if root is None else root
    parents: dict[int, int] = {}
    cmd: dict[int, str] = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            cmd[int(entry.name)] = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
    mine = {me}
    changed = True
    while changed:  # descendants of this process
        changed = False
        for pid, parent in parents.items():
            if parent in mine and pid not in mine:
                mine.add(pid)
                changed = True
    name = Path(executable).name if executable else "chrom"
    if root is not None:
        return sorted(mine) if root in parents else []
    return sorted(p for p in mine - {me} if name in cmd.get(p, "") or "chrom" in cmd.get(p, ""))


def browser_process(pids: list[int]) -> int | None:
    """The browser process among `pids` (the one Playwright talks to over its pipe), not a renderer, the zygote
    or the GPU process."""
    for pid in pids:
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--remote-debugging-pipe" in args:
            return pid
    return None


def browser_memory_mb(pids: list[int]) -> float | None:
    """Resident memory of the given processes, in MB (Linux); None where /proc is missing."""
    total = 0
    seen = False
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    seen = True
        except (OSError, ValueError):
            continue
    return total / 1024 if seen else None
