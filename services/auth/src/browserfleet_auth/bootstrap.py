"""`browserfleet-auth bootstrap`: the first organization and its admin in production, from the environment.

    BOOTSTRAP_ADMIN_EMAIL      the first admin's email (required)
    BOOTSTRAP_ADMIN_PASSWORD   their password, from a Secret (required, at least 12 characters)
    BOOTSTRAP_ORG_NAME         the organization's name (default "Default")
    DATABASE_URL               auth's database (its schema is migrated first)

Compose runs it as the one-shot `bootstrap` service and Kubernetes as the `bootstrap` Job (docs/operations.md
"The first organization and admin"). It touches only the database (no NATS: it runs before anything else is up),
and does what svc.auth.bootstrap does in the dev stack under the same advisory lock: the first run creates the
organization and its admin (a platform operator), every later run (a redeploy, a second replica, a re-run Job)
finds the organization and changes nothing, not even the password: the Secret is read once, at creation.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping

from browserfleet_contracts.auth import BootstrapReply
from browserfleet_core import migrations
from browserfleet_core.db import Database
from browserfleet_core.errors import ServiceError

from . import organizations
from .app import SCHEMA

MIN_PASSWORD_LENGTH = 12
PLACEHOLDERS = {"CHANGE_ME", "changeme", "password"}


class BootstrapError(SystemExit):
    """A clear message on stderr and exit code 1: the Job fails visibly, nothing was written."""

    def __init__(self, message: str) -> None:
        super().__init__(f"bootstrap: {message}")


def settings_from(env: Mapping[str, str]) -> tuple[str, str, str, str]:
    """(database_url, org_name, admin_email, password), each checked before anything is touched."""
    missing = [
        k for k in ("DATABASE_URL", "BOOTSTRAP_ADMIN_EMAIL", "BOOTSTRAP_ADMIN_PASSWORD") if not env.get(k)
    ]
    if missing:
        raise BootstrapError(f"missing: {', '.join(missing)}")
    password = env["BOOTSTRAP_ADMIN_PASSWORD"]
    if password.strip() in PLACEHOLDERS or len(password) < MIN_PASSWORD_LENGTH:
        raise BootstrapError(
            f"BOOTSTRAP_ADMIN_PASSWORD: must be at least {MIN_PASSWORD_LENGTH} characters and not a placeholder"
        )
    org_name = env.get("BOOTSTRAP_ORG_NAME") or "Default"
    return env["DATABASE_URL"], org_name, env["BOOTSTRAP_ADMIN_EMAIL"], password


async def bootstrap(database_url: str, *, org_name: str, admin_email: str, password: str) -> BootstrapReply:
    db = Database(database_url, SCHEMA, pool_size=1)
    try:
        return await db.run(
            organizations.bootstrap, org_name=org_name, admin_email=admin_email, password=password
        )
    finally:
        await db.dispose()


def main(env: Mapping[str, str]) -> None:
    database_url, org_name, admin_email, password = settings_from(env)
    migrations.upgrade("browserfleet_auth", database_url)  # advisory-locked: safe beside the migrate Job
    try:
        reply = asyncio.run(
            bootstrap(database_url, org_name=org_name, admin_email=admin_email, password=password)
        )
    except ServiceError as exc:  # an email the platform refuses, a name too long: say which
        raise BootstrapError(str(exc)) from None
    if reply.created:
        print(f"bootstrap: created organization {reply.org_id} with admin {reply.admin_email}")
    else:
        print(
            f"bootstrap: already done (organization {reply.org_id}, admin {reply.admin_email or '?'}); "
            "nothing changed"
        )
    sys.stdout.flush()
