"""Vault settings. Master keys come from the environment only: the database never holds one."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from browserfleet_core.settings import ServiceSettings
from pydantic import Field, SecretStr, field_validator

MASTER_KEY_BYTES = 32
MASTER_KEY_HINT = (
    "base64 of 32 random bytes, e.g. "
    'python -c "import base64,os;print(base64.b64encode(os.urandom(32)).decode())"'
)


def decode_master_key(value: str, what: str = "VAULT_MASTER_KEY") -> bytes:
    """Decode one master key; the error never repeats the value."""
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} is not valid base64; it must be {MASTER_KEY_HINT}") from None
    if len(raw) != MASTER_KEY_BYTES:
        raise ValueError(f"{what} decodes to {len(raw)} bytes; it must be {MASTER_KEY_HINT}")
    return raw


class VaultSettings(ServiceSettings):
    service_name: str = "vault"
    vault_master_key: SecretStr = Field(
        description="Current AES-256 master key, base64 of 32 bytes. Required.",
    )
    vault_master_key_version: int = Field(default=1, ge=1)
    vault_previous_master_keys: dict[int, SecretStr] = Field(
        default_factory=dict,
        description='Older master keys still needed to unwrap data keys: JSON {"<version>": "<base64>"}.',
    )
    worker_auth_cache_seconds: float = Field(
        default=30.0,
        ge=0,
        description="how long a worker key, once authenticated by worker-gateway, is trusted without asking again "
        "(a revoked key is refused again within this time; 0 asks every time)",
    )

    @field_validator("vault_master_key")
    @classmethod
    def _check_master_key(cls, value: SecretStr) -> SecretStr:
        decode_master_key(value.get_secret_value())
        return value

    @field_validator("vault_previous_master_keys", mode="before")
    @classmethod
    def _parse_previous(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else {}
            except json.JSONDecodeError:
                raise ValueError(
                    "VAULT_PREVIOUS_MASTER_KEYS must be a JSON object {version: base64}"
                ) from None
        return value

    @field_validator("vault_previous_master_keys")
    @classmethod
    def _check_previous(cls, value: dict[int, SecretStr]) -> dict[int, SecretStr]:
        for version, key in value.items():
            if version < 1:
                raise ValueError("VAULT_PREVIOUS_MASTER_KEYS versions must be >= 1")
            decode_master_key(key.get_secret_value(), f"VAULT_PREVIOUS_MASTER_KEYS[{version}]")
        return value
