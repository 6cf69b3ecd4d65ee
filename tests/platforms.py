"""A whole platform on a database of its own, as the whole-platform suites start one."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from browserfleet_devkit.devstack import Platform
from browserfleet_devkit.testing import provision

# many calls from one address and one API key: the limits have their own tests
NO_RATE_LIMITS = {
    "RATE_LIMIT_PER_SECOND": "0",
    "API_KEY_RATE_PER_SECOND": "10000",
    "LOGIN_RATE_PER_SECOND": "0",
}


@contextlib.contextmanager
def own_platform(
    prefix: str, home: Path, *, start: bool = True, open_nats: bool = False, **options: Any
) -> Iterator[Platform]:
    """A `Platform` (`options`: its other fields) on a database that `provision(prefix)` makes for this run
    and drops at the end. It runs its own authenticated NATS, as `make dev` does, unless `open_nats`: then the
    run's open server. Started here and stopped at the end, unless `start=False`: then the caller does both,
    e.g. in another thread when this one runs an event loop (`Platform.start` runs one of its own)."""
    with provision(prefix) as infra:
        nats: dict[str, Any] = {"nats_url": infra.nats_url} if open_nats else {}
        platform = Platform(home=home, database_url=infra.database_url, **nats, **options)
        if not start:
            yield platform
            return
        with platform:
            yield platform
