"""One dev stack per data folder: `<home>/platform.lock`, held (flock) by the launcher for as long as it runs.

Two `make dev` in one checkout would otherwise both start PostgreSQL on the same files and race for the
ports remembered in `ports.json`. The lock is taken before anything starts and dies with the launcher
(the kernel drops a dead process's flock), so a crash never leaves a stale lock behind. What the file says
(pid, gateway URL) is only for the message the second start prints.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import IO, Any


class AlreadyRunning(RuntimeError):
    pass


class DataDirLock:
    def __init__(self, home: Path) -> None:
        self.path = home / "platform.lock"
        self._fh: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = self.path.open("a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder: dict[str, Any] = {}
            with contextlib.suppress(ValueError):
                holder = json.loads(fh.read() or "{}")
            fh.close()
            where = f" at {holder['gateway_url']}" if holder.get("gateway_url") else ""
            pid = f" (pid {holder['pid']})" if holder.get("pid") else ""
            raise AlreadyRunning(
                f"browserfleet is already running with data in {self.path.parent}{pid}{where}: "
                "stop that one first (Ctrl-C in its terminal), or use another folder (--home / BROWSERFLEET_HOME)"
            ) from None
        self._fh = fh
        self.announce()

    def announce(self, **facts: Any) -> None:
        """Rewrites what the lock file says (the holder's pid plus `facts`)."""
        if self._fh is None:
            return
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(json.dumps({"pid": os.getpid(), **facts}))
        self._fh.flush()

    def release(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.seek(0)
                self._fh.truncate()
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None
