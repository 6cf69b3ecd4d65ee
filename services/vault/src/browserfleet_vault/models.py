"""Tables of the `vault` schema. Master keys are never stored: only data keys wrapped by them."""

from __future__ import annotations

from datetime import datetime

from browserfleet_core.db import new_id, schema_metadata, utcnow
from sqlalchemy import Column, DateTime, ForeignKey, LargeBinary, String, UniqueConstraint
from sqlmodel import Field, SQLModel

SCHEMA = "vault"


class VaultBase(SQLModel):
    metadata = schema_metadata(SCHEMA)


def _ts() -> Column[datetime]:
    return Column(DateTime(timezone=True), nullable=False)


class DataKey(VaultBase, table=True):
    """One random data key per org and master-key version, stored wrapped by that master key."""

    __tablename__ = "data_keys"
    __table_args__ = (UniqueConstraint("org_id", "master_key_version", name="uq_data_keys_org_version"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    org_id: str = Field(max_length=64, index=True)
    wrapped_key: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    master_key_version: int
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class Credential(VaultBase, table=True):
    __tablename__ = "credentials"
    __table_args__ = (UniqueConstraint("org_id", "name", name="uq_credentials_org_name"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    org_id: str = Field(max_length=64, index=True)
    name: str = Field(max_length=64)
    type: str = Field(max_length=16)
    description: str | None = Field(default=None, max_length=1000)
    ciphertext: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    nonce: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    data_key_id: str = Field(
        sa_column=Column(String(36), ForeignKey(f"{SCHEMA}.data_keys.id"), nullable=False, index=True)
    )
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class Release(VaultBase, table=True):
    """Audit trail: one row per secret handed to a worker."""

    __tablename__ = "releases"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    task_id: str = Field(max_length=64, index=True)
    worker_id: str = Field(max_length=64)
    credential_name: str = Field(max_length=64)
    org_id: str = Field(max_length=64, index=True)
    released_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class Profile(VaultBase, table=True):
    """A browser profile's storage state (cookies, localStorage), encrypted like a credential but with
    `profile:<org_id>:<name>` as associated data, and the lease that lets one task at a time use it."""

    __tablename__ = "profiles"
    __table_args__ = (UniqueConstraint("org_id", "name", name="uq_profiles_org_name"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    org_id: str = Field(max_length=64, index=True)
    name: str = Field(max_length=64)
    ciphertext: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    nonce: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    data_key_id: str | None = Field(
        default=None, sa_column=Column(String(36), ForeignKey(f"{SCHEMA}.data_keys.id"), nullable=True)
    )
    version: int = Field(default=0, description="saves so far")
    lease_task_id: str | None = Field(default=None, max_length=64)
    lease_token: str | None = Field(default=None, max_length=64)
    lease_expires_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
