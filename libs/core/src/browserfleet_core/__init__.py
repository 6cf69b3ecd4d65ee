"""Shared runtime of every browserfleet service: settings, db, messaging, observability, security."""

import sys as _sys

# httpx's package import also imports its command-line client (`httpx._main`: rich, pygments, click) when
# those happen to be installed; it then falls back to a stub `httpx.main`. No browserfleet process runs that
# client, and it was a sixth of a service's import time, so processes that import this package first skip it.
if "httpx" not in _sys.modules:
    _sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
