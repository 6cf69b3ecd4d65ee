"""Signing secrets sealed at rest: AES-256-GCM under a master key from the environment (WEBHOOK_MASTER_KEY).

HMAC signing needs the secret itself, so it cannot be hashed; instead each secret is encrypted with a random
96-bit nonce and bound, as associated data, to its organization, its key row and the master key version, so a
sealed secret copied to another row or organization fails authentication instead of opening. The master key
is versioned like the vault's: rows remember their version, and older keys stay configured
(WEBHOOK_PREVIOUS_MASTER_KEYS) until no row uses them.
"""

from __future__ import annotations

import os

from browserfleet_core.master_keys import MasterKeys, keys_by_version
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .settings import WebhooksSettings

NONCE_BYTES = 12


class SealError(Exception):
    """A sealed secret failed authentication (tampered or misplaced), or its master key is not configured."""


def _aad(org_id: str, key_id: str, version: int) -> bytes:
    return f"webhook-secret:{org_id}:{key_id}:{version}".encode()


class SecretBox(MasterKeys):
    """The webhook master keys, which seal and open signing secrets."""

    @classmethod
    def from_settings(cls, settings: WebhooksSettings) -> SecretBox:
        if settings.webhook_master_key is None:
            raise RuntimeError(
                "WEBHOOK_MASTER_KEY is required: it seals the webhook signing secrets at rest "
                '(base64 of 32 random bytes: python -c "import base64,os;print(base64.b64encode(os.urandom(32)).decode())")'
            )
        version = settings.webhook_master_key_version
        keys = keys_by_version(
            settings.webhook_master_key, version, settings.webhook_previous_master_keys, prefix="WEBHOOK"
        )
        return cls(current_version=version, keys=keys)

    def seal(self, org_id: str, key_id: str, secret: str) -> tuple[bytes, int]:
        """Returns (nonce || ciphertext-with-tag, master key version)."""
        version = self.current_version
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(self.keys[version]).encrypt(nonce, secret.encode(), _aad(org_id, key_id, version))
        return nonce + sealed, version

    def open(self, org_id: str, key_id: str, sealed: bytes, version: int) -> str:
        key = self.keys.get(version)
        if key is None:
            raise SealError(f"master key version {version} is not configured")
        try:
            plain = AESGCM(key).decrypt(
                sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], _aad(org_id, key_id, version)
            )
        except (InvalidTag, ValueError):
            raise SealError("sealed webhook secret failed authentication") from None
        return plain.decode()
