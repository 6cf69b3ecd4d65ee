"""Runs an import: the organization, the workers' invites, the credentials and the queued tasks go through
the services' own endpoints on NATS (auth, worker-gateway, vault, scheduler: each checks and records as for
any caller, the vault encrypts), acting as the platform operator in the new organization; finished tasks are
written as history (history.py). Every record taken is remembered (mapping.py), so a second run changes
nothing; `--dry-run` says what would be done and changes nothing."""

from __future__ import annotations

import argparse
import asyncio
import re
from dataclasses import dataclass, field
from typing import Any

from browserfleet_contracts import endpoints
from browserfleet_contracts.auth import CreateOrganizationRequest, OrganizationCreate, OrganizationDetail
from browserfleet_contracts.common import Actor, OrgScoped
from browserfleet_contracts.tasks import CreateTaskRequest, TaskCreate
from browserfleet_contracts.vault import PutCredentialRequest
from browserfleet_contracts.workers import CreateInviteRequest, InviteCreate
from browserfleet_core.errors import ServiceError
from browserfleet_core.messaging import RpcClient

from .. import snapshot
from ..settings import OpsSettings
from . import history, mapping
from .format import MvpData, MvpOrganization, load

MAX_INVITE_DAYS = 30


@dataclass
class Report:
    dry_run: bool
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    invites: list[tuple[str, str, str]] = field(default_factory=list)  # MVP id, name, code

    def lines(self) -> list[str]:
        verb = "would do" if self.dry_run else "done"
        out = [
            f"{verb}: {len(self.done)}, already imported: {len(self.skipped)}, cannot take: {len(self.refused)}"
        ]
        out += [f"  {'would ' if self.dry_run else ''}{line}" for line in self.done]
        out += [f"  already imported: {line}" for line in self.skipped]
        out += [f"  cannot take: {line}" for line in self.refused]
        if self.invites:
            out.append("invite codes (shown once: give each to its worker's machine as WORKER_INVITE_CODE):")
            out += [f"  {name} (MVP {mvp_id}): {code}" for mvp_id, name, code in self.invites]
        return out


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:63] or "mvp"


def _operator(conn: Any, email: str | None) -> tuple[str, str]:
    query = "SELECT id, org_id FROM auth.users WHERE platform_operator AND is_active"
    params: tuple[Any, ...] = ()
    if email:
        query += " AND email = %s"
        params = (email.strip().lower(),)
    row = conn.execute(query + " ORDER BY created_at, id LIMIT 1", params).fetchone()
    if row is None:
        raise SystemExit(
            f"no active platform operator{' ' + email if email else ''}: the import acts as one"
            " (the first admin of a platform is)"
        )
    return str(row[0]), str(row[1])


class Importer:
    def __init__(self, settings: OpsSettings, data: MvpData, args: argparse.Namespace) -> None:
        self.settings = settings
        self.data = data
        self.args = args
        self.report = Report(dry_run=args.dry_run)
        for problem in data.problems:
            self.report.refused.append(problem.line())
        org = data.organization or MvpOrganization(name="MVP")
        self.org_spec = org
        self.source = args.org or org.slug or slugify(org.name)

    async def run(self) -> Report:
        database_url = self.settings.require_database()
        with snapshot.connect(database_url) as conn:
            conn.autocommit = True
            user_id, operator_org = _operator(conn, self.args.operator)
            self.operator = Actor(org_id=operator_org, user_id=user_id, role="admin")
            self.taken = mapping.taken(conn, self.source)
            nc = await self.settings.connect_nats()
            try:
                self.rpc = RpcClient(nc, timeout=30)
                if not self.args.dry_run:
                    mapping.ensure_schema(conn)
                self.conn = conn
                org = await self._organization()
                actor = Actor(org_id=org.id, role="admin", plan=org.plan) if org else None
                await self._workers(actor)
                await self._credentials(actor)
                await self._tasks(actor, org)
            finally:
                await nc.close()
        return self.report

    def _remember(self, kind: str, mvp_id: str, target: str) -> None:
        mapping.record(self.conn, self.source, kind, mvp_id, target)
        self.taken[(kind, mvp_id)] = target

    # --- organization --------------------------------------------------------------------------------
    async def _organization(self) -> OrganizationDetail | None:
        orgs: list[OrganizationDetail] = await self.rpc.call(
            endpoints.Auth.LIST_ORGANIZATIONS, OrgScoped(actor=self.operator)
        )
        found = next((o for o in orgs if o.slug == self.source), None)
        if self.args.org:
            if found is None:
                raise SystemExit(f"no organization with slug {self.args.org!r}")
            return found
        made = self.taken.get(("organization", self.source))
        if found is not None:
            if made != found.id:
                raise SystemExit(
                    f"an organization with slug {self.source!r} exists and was not made by an import:"
                    f" pass --org {self.source} to import into it"
                )
            self.report.skipped.append(f"organization {found.name!r} ({found.slug})")
            return found
        spec = self.org_spec
        if self.args.dry_run:
            self.report.done.append(f"create organization {spec.name!r} (slug {self.source})")
            return None
        created = await self.rpc.call(
            endpoints.Auth.CREATE_ORGANIZATION,
            CreateOrganizationRequest(
                actor=self.operator,
                organization=OrganizationCreate(
                    name=spec.name,
                    slug=self.source,
                    plan=spec.plan,
                    admin_email=spec.admin_email,
                ),
            ),
        )
        self._remember("organization", self.source, created.id)
        line = f"created organization {created.name!r} (slug {created.slug}, id {created.id})"
        if created.admin_password:
            line += f"; its admin {created.admin_email} signs in with the one-time password {created.admin_password}"
        self.report.done.append(line)
        return created

    # --- workers: invites to register again (a 6-digit token is no key) ------------------------------
    async def _workers(self, actor: Actor | None) -> None:
        ttl = int(min(self.args.invite_ttl_days, MAX_INVITE_DAYS) * 86_400)
        for worker in self.data.workers:
            label = f"worker {worker.name!r} (MVP {worker.id})"
            if ("worker", worker.id) in self.taken:
                self.report.skipped.append(f"{label}: invited before, its code was shown then")
                continue
            if actor is None or self.args.dry_run:
                self.report.done.append(f"invite {label} to register (its MVP token is not carried over)")
                continue
            invite = await self.rpc.call(
                endpoints.Workers.CREATE_INVITE,
                CreateInviteRequest(
                    actor=actor,
                    invite=InviteCreate(name=worker.name, capabilities=worker.capabilities, ttl_seconds=ttl),
                ),
            )
            self._remember("worker", worker.id, invite.id)
            self.report.done.append(f"invited {label}: invite {invite.id}")
            self.report.invites.append((worker.id, worker.name, invite.code))

    # --- credentials: stored by the vault, which encrypts them ---------------------------------------
    async def _credentials(self, actor: Actor | None) -> None:
        existing: set[str] = set()
        if actor is not None:
            listed = await self.rpc.call(endpoints.Vault.LIST_CREDENTIALS, OrgScoped(actor=actor))
            existing = {c.name for c in listed}
        for cred in self.data.credentials:
            label = f"credential {cred.name}"
            if ("credential", cred.name) in self.taken:
                self.report.skipped.append(label)
                continue
            if cred.name in existing:
                self.report.refused.append(f"{label}: the organization has one by that name already (kept)")
                continue
            if actor is None or self.args.dry_run:
                self.report.done.append(f"store {label} ({cred.type}) in the vault")
                continue
            try:
                stored = await self.rpc.call(
                    endpoints.Vault.PUT_CREDENTIAL,
                    PutCredentialRequest(actor=actor, credential=cred.create()),
                )
            except ServiceError as exc:
                self.report.refused.append(f"{label}: the vault refused it ({exc.body().message})")
                continue
            self._remember("credential", cred.name, stored.id)
            self.report.done.append(f"stored {label} ({cred.type}), encrypted by the vault")

    # --- tasks --------------------------------------------------------------------------------------
    async def _tasks(self, actor: Actor | None, org: OrganizationDetail | None) -> None:
        names = {w.id: w.name for w in self.data.workers}
        for task in self.data.tasks:
            label = f"task {task.id} ({task.status})"
            if ("task", task.id) in self.taken:
                self.report.skipped.append(label)
                continue
            if task.fate == "requeue":
                what = f"re-queue {label} as an agent task"
            elif task.fate == "history":
                what = f"record {label} as history"
            else:
                what = f"record {label} as failed: it was interrupted"
            if actor is None or org is None or self.args.dry_run:
                self.report.done.append(what)
                continue
            if task.fate == "requeue":
                created = await self.rpc.call(
                    endpoints.Scheduler.CREATE_TASK,
                    CreateTaskRequest(
                        actor=actor,
                        task=TaskCreate(task=task.description, metadata={"mvp_id": task.id}),
                        idempotency_key=f"mvp:{task.id}",
                    ),
                )
                target = created.id
            else:
                worker = names.get(task.worker or "", task.worker)
                target, _ = history.insert(self.conn, org.id, org.plan, task, worker)
            self._remember("task", task.id, target)
            self.report.done.append(f"{what}: {target}")


def main(settings: OpsSettings, args: argparse.Namespace) -> int:
    data = load(args.dir)
    report = asyncio.run(Importer(settings, data, args).run())
    print("\n".join(report.lines()))
    return 0
