"""Role checks shared by the org-admin operations (API keys, users, audit log, org policy)."""

from __future__ import annotations

from browserfleet_contracts.common import Actor
from browserfleet_core.errors import Forbidden


def require_admin(actor: Actor) -> None:
    if actor.role != "admin":
        raise Forbidden("this needs the admin role", code="insufficient_role")
