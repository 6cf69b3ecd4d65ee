"""`browserfleet restore PATH`: everything is checked before anything is touched (the file's checksum, the
key, every member's SHA-256, that this code knows each archived migration revision, that the platform is
empty unless `--force`); then each service's schema is recreated at the archive's revision, the rows are
loaded in one transaction, every service whose schema is older than the code is migrated by its own
`migrate` command, and the artifacts are put back."""

from __future__ import annotations

import asyncio
import json
import os
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from . import artifacts, snapshot
from .archive import ArchiveError, DecryptingReader, check_key, decrypt_chunks, file_checksum
from .backup import MANIFEST, MANIFEST_VERSION
from .mvp import mapping
from .services import BY_SCHEMA, SERVICES, migrate_head, migrate_to
from .settings import OpsSettings


@dataclass
class RestoreReport:
    checksum: str
    created_at: str
    rows: int = 0
    artifacts: int = 0
    migrated: dict[str, tuple[str, str]] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [
            f"restored the backup of {self.created_at} (sha256 {self.checksum})",
            f"  database: {self.rows:,} rows",
            f"  artifacts: {self.artifacts}",
        ]
        out += [f"  migrated {svc}: {old} -> {new}" for svc, (old, new) in self.migrated.items()]
        return out


def _safe(name: str) -> bool:
    p = PurePosixPath(name)
    return not p.is_absolute() and ".." not in p.parts and name.count("/") <= 2


def unpack(path: Path, key: str, into: Path) -> tuple[str, dict[str, Any]]:
    """Verifies the archive and unpacks it into `into`; returns its checksum and manifest."""
    checksum = file_checksum(path)
    check_key(path, key)
    with tarfile.open(fileobj=DecryptingReader(decrypt_chunks(path, key)), mode="r|") as tar:  # type: ignore[call-overload]
        for member in tar:
            if not member.isfile() or not _safe(member.name):
                raise ArchiveError(f"unexpected entry in the archive: {member.name!r}")
            tar.extract(member, into, filter="data")
    try:
        manifest: dict[str, Any] = json.loads((into / MANIFEST).read_text())
    except (OSError, ValueError):
        raise ArchiveError("the archive has no readable manifest") from None
    if (
        manifest.get("format") != "browserfleet-backup-manifest"
        or manifest.get("version") != MANIFEST_VERSION
    ):
        raise ArchiveError(f"unsupported manifest: {manifest.get('format')} v{manifest.get('version')}")
    listed = manifest.get("members", {})
    for name, meta in listed.items():
        file = into / name
        if not _safe(name) or not file.is_file():
            raise ArchiveError(f"the archive lacks {name}")
        if file.stat().st_size != meta["size"] or snapshot.sha256_file(file) != meta["sha256"]:
            raise ArchiveError(f"{name} does not match its checksum")
    extra = {str(p.relative_to(into)) for p in into.rglob("*") if p.is_file()} - set(listed) - {MANIFEST}
    if extra:
        raise ArchiveError(f"the archive holds files its manifest does not list: {sorted(extra)[:3]}")
    return checksum, manifest


def check_revisions(manifest: dict[str, Any]) -> dict[str, str]:
    """Each archived service's revision, refused when this code does not know it (an archive from a newer
    platform must be restored by that version)."""
    found: dict[str, str] = {}
    for schema in manifest["schemas"]:
        if schema == mapping.SCHEMA:
            continue
        service = BY_SCHEMA.get(schema)
        revision = manifest["schemas"][schema].get("revision")
        if service is None or not revision:
            raise ArchiveError(f"the archive holds schema {schema!r}, which no service of this code owns")
        if not service.knows(revision):
            raise ArchiveError(
                f"the archive's {service.name} schema is at revision {revision}, which this code does not"
                " know: restore it with the platform version that made it, or a newer one"
            )
        found[schema] = revision
    missing = [s.schema for s in SERVICES if s.schema not in found]
    if missing:
        raise ArchiveError(f"the archive has no schema {', '.join(missing)}")
    return found


async def _artifact_count(settings: OpsSettings) -> int:
    nc = await settings.connect_nats()
    try:
        return await artifacts.count(nc)
    finally:
        await nc.close()


async def _put_artifacts(
    settings: OpsSettings, entries: list[dict[str, Any]], root: Path, purge: bool
) -> int:
    nc = await settings.connect_nats()
    try:
        if purge:
            await artifacts.purge(nc)
        return await artifacts.restore(nc, entries, root)
    finally:
        await nc.close()


def verify(path: Path, key: str) -> tuple[str, dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="bf-restore-") as tmp:
        os.chmod(tmp, 0o700)
        checksum, manifest = unpack(path, key, Path(tmp))
        check_revisions(manifest)
        return checksum, manifest


def run(settings: OpsSettings, path: Path, key: str, *, force: bool) -> RestoreReport:
    database_url = settings.require_database()
    with tempfile.TemporaryDirectory(prefix="bf-restore-") as tmp:
        root = Path(tmp)
        os.chmod(root, 0o700)
        checksum, manifest = unpack(path, key, root)
        revisions = check_revisions(manifest)
        schemas = [s.schema for s in SERVICES] + [mapping.SCHEMA]
        with snapshot.connect(database_url) as conn:
            conn.autocommit = True
            busy = snapshot.non_empty_tables(conn, schemas)
        stored = asyncio.run(_artifact_count(settings))
        if (busy or stored) and not force:
            what = busy[:5] + ([f"{stored} artifacts"] if stored else [])
            raise SystemExit(
                "the platform is not empty (" + ", ".join(what) + "): restore replaces everything in it;"
                " stop its services and run again with --force to do that"
            )
        report = RestoreReport(checksum=checksum, created_at=str(manifest.get("created_at")))
        with snapshot.connect(database_url) as conn:
            conn.autocommit = True
            snapshot.drop_schemas(conn, [*revisions, mapping.SCHEMA])
        for schema, revision in revisions.items():
            migrate_to(BY_SCHEMA[schema], revision, database_url)
        if mapping.SCHEMA in manifest["schemas"]:
            with snapshot.connect(database_url) as conn:
                mapping.ensure_schema(conn)
        report.rows = snapshot.load(database_url, manifest["schemas"], root)
        for schema, revision in revisions.items():
            service = BY_SCHEMA[schema]
            head = service.head()
            if revision != head:
                migrate_head(service, database_url)
                report.migrated[service.name] = (revision, head)
        report.artifacts = asyncio.run(_put_artifacts(settings, manifest["artifacts"], root, purge=force))
    return report
