"""`browserfleet backup PATH`: the database snapshot and the retained artifacts, in one encrypted archive.

The archive's `manifest.json` records, per service schema, the alembic revision the rows were written
under, each table's columns and row count, the sequences, every artifact's metadata, and the SHA-256 of every
member; the tar stream around it is encrypted and checksummed as a whole (`archive.py`). The vault's rows are
copied as they are stored (ciphertext and wrapped data keys): nothing here can decrypt them, and the master
keys are not in the archive (docs/operations.md says how to keep them).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform as host
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import artifacts, snapshot
from .archive import ArchiveWriter
from .mvp.mapping import SCHEMA as OPS_SCHEMA
from .services import BY_SCHEMA, SERVICES
from .settings import OpsSettings

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


@dataclass
class BackupReport:
    path: Path
    checksum: str
    schemas: dict[str, str | None]
    rows: int
    artifacts: int
    artifact_bytes: int
    expired: list[str]
    size: int

    def lines(self) -> list[str]:
        revs = ", ".join(f"{s} @ {r}" for s, r in self.schemas.items())
        out = [
            f"backup written to {self.path} ({self.size:,} bytes)",
            f"  database: {self.rows:,} rows from {revs}",
            f"  artifacts: {self.artifacts} ({self.artifact_bytes:,} bytes)",
            f"  sha256: {self.checksum}",
        ]
        if self.expired:
            out.append(f"  {len(self.expired)} artifacts expired while being read and are not in it")
        return out


def _member_sums(root: Path, members: list[str]) -> dict[str, dict[str, Any]]:
    return {m: {"sha256": snapshot.sha256_file(root / m), "size": (root / m).stat().st_size} for m in members}


async def _artifacts(settings: OpsSettings, stage: Path) -> tuple[list[dict[str, Any]], list[str]]:
    nc = await settings.connect_nats()
    try:
        return await artifacts.export(nc, stage)
    finally:
        await nc.close()


def run(settings: OpsSettings, path: Path, key: str) -> BackupReport:
    database_url = settings.require_database()
    path = path.resolve()
    if path.is_dir():
        raise SystemExit(f"{path} is a folder: give the archive's file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bf-backup-") as tmp:
        stage = Path(tmp)
        os.chmod(stage, 0o700)
        schemas = snapshot.export(database_url, [s.schema for s in SERVICES] + [OPS_SCHEMA], stage)
        missing = [s.schema for s in SERVICES if s.schema not in schemas]
        if missing:
            raise SystemExit(f"not a migrated platform database: no schema {', '.join(missing)}")
        entries, expired = asyncio.run(_artifacts(settings, stage))
        members = [t["member"] for e in schemas.values() for t in e["tables"].values()]
        members += [e["member"] for e in entries]
        manifest = {
            "format": "browserfleet-backup-manifest",
            "version": MANIFEST_VERSION,
            "created_at": datetime.now(UTC).isoformat(),
            "host": host.node(),
            "services": {
                BY_SCHEMA[s].name: {"schema": s, "revision": e["revision"]}
                for s, e in schemas.items()
                if s in BY_SCHEMA
            },
            "schemas": schemas,
            "artifacts": entries,
            "members": _member_sums(stage, members),
        }
        (stage / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        partial = path.with_name(f".{path.name}.partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            writer = ArchiveWriter(out, key)
            with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                tar.add(stage / MANIFEST, arcname=MANIFEST)
                for member in members:
                    tar.add(stage / member, arcname=member)
            checksum = writer.close()
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)
    return BackupReport(
        path=path,
        checksum=checksum,
        schemas={s: e["revision"] for s, e in schemas.items()},
        rows=sum(t["rows"] for e in schemas.values() for t in e["tables"].values()),
        artifacts=len(entries),
        artifact_bytes=sum(int(e["size"] or 0) for e in entries),
        expired=expired,
        size=path.stat().st_size,
    )
