"""The answer of a service's `db_health` subject (the gateway's readiness asks the services that own a
database): whether a `SELECT 1` gets through, as a reply, so the caller learns why rather than timing out."""

from __future__ import annotations

from browserfleet_contracts.common import DbHealth

from .db import Database


async def db_health(db: Database) -> DbHealth:
    try:
        await db.ping()
    except Exception as exc:  # the answer to a health question, never an error
        return DbHealth(ok=False, detail=f"{type(exc).__name__}: {exc}"[:300])
    return DbHealth(ok=True, detail="SELECT 1 ok")
