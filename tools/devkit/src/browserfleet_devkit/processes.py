"""Stopping a child process the one way the dev stack, the embedded servers and the whole-platform tests do."""

from __future__ import annotations

import signal
import subprocess
from typing import Any


def stop_process(proc: subprocess.Popen[Any], grace: float, sig: int = signal.SIGTERM) -> None:
    """Send `sig` to `proc` if it still runs and wait for it; once `grace` seconds have passed, kill it (a
    process that ignores the signal must not outlive the test or the stack that started it)."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
