"""Vault settings. Master keys come from the environment only: the database never holds one."""

from __future__ import annotations

from typing import Any

from browserfleet_core.master_keys import check_previous_keys, decode_master_key, parse_previous_keys
from browserfleet_core.settings import ServiceSettings, WorkerAuthSettings
from pydantic import Field, SecretStr, field_validator


class VaultSettings(WorkerAuthSettings, ServiceSettings):
    service_name: str = "vault"
    vault_master_key: SecretStr = Field(
        description="Current AES-256 master key, base64 of 32 bytes. Required.",
    )
    vault_master_key_version: int = Field(default=1, ge=1)
    vault_previous_master_keys: dict[int, SecretStr] = Field(
        default_factory=dict,
        description='Older master keys still needed to unwrap data keys: JSON {"<version>": "<base64>"}.',
    )

    @field_validator("vault_master_key")
    @classmethod
    def _check_master_key(cls, value: SecretStr) -> SecretStr:
        decode_master_key(value.get_secret_value(), "VAULT_MASTER_KEY")
        return value

    @field_validator("vault_previous_master_keys", mode="before")
    @classmethod
    def _parse_previous(cls, value: Any) -> Any:
        return parse_previous_keys(value, "VAULT_PREVIOUS_MASTER_KEYS")

    @field_validator("vault_previous_master_keys")
    @classmethod
    def _check_previous(cls, value: dict[int, SecretStr]) -> dict[int, SecretStr]:
        return check_previous_keys(value, "VAULT_PREVIOUS_MASTER_KEYS")
