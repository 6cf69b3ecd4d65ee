"""AES-256-GCM envelope encryption.

Each org has a random 32-byte data key per master-key version. The data key is stored wrapped
(AES-GCM under the master key of that version, with the org bound as associated data); credential
values are encrypted under the data key with `"<org_id>:<name>"` as associated data, so a ciphertext
copied to another row or org fails authentication instead of decrypting. Nonces are 96-bit random:
one data key encrypts far fewer than 2^32 values, well inside GCM's random-nonce bound.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .settings import VaultSettings, decode_master_key

NONCE_BYTES = 12
DATA_KEY_BYTES = 32


class DecryptionError(Exception):
    """A ciphertext, wrapped key or associated data failed authentication (tampered or misplaced)."""


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def credential_aad(org_id: str, name: str) -> bytes:
    return f"{org_id}:{name}".encode()


def profile_aad(org_id: str, name: str) -> bytes:
    """Distinct from `credential_aad`: a credential's ciphertext copied into a profile fails, and back."""
    return f"profile:{org_id}:{name}".encode()


def encrypt_profile(data_key: bytes, org_id: str, name: str, state: bytes) -> tuple[bytes, bytes]:
    return encrypt(data_key, state, profile_aad(org_id, name))


def decrypt_profile(data_key: bytes, org_id: str, name: str, nonce: bytes, ciphertext: bytes) -> bytes:
    return decrypt(data_key, nonce, ciphertext, profile_aad(org_id, name))


def _wrap_aad(org_id: str, version: int) -> bytes:
    return f"data-key:{org_id}:{version}".encode()


def encrypt(key: bytes, plaintext: bytes, aad: bytes) -> tuple[bytes, bytes]:
    """Returns (nonce, ciphertext-with-tag)."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce, AESGCM(key).encrypt(nonce, plaintext, aad)


def decrypt(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, aad)
    except (InvalidTag, ValueError):
        raise DecryptionError("ciphertext failed authentication") from None


def encrypt_value(data_key: bytes, org_id: str, name: str, value: str) -> tuple[bytes, bytes]:
    return encrypt(data_key, value.encode(), credential_aad(org_id, name))


def decrypt_value(data_key: bytes, org_id: str, name: str, nonce: bytes, ciphertext: bytes) -> str:
    return decrypt(data_key, nonce, ciphertext, credential_aad(org_id, name)).decode()


@dataclass(frozen=True, repr=False)
class Keyring:
    """The master keys this process knows, by version. `repr=False`: a traceback must not print them."""

    current_version: int
    keys: dict[int, bytes]

    def __post_init__(self) -> None:
        if self.current_version not in self.keys:
            raise ValueError(f"no master key for the current version {self.current_version}")
        for version, key in self.keys.items():
            if len(key) != DATA_KEY_BYTES:
                raise ValueError(f"master key version {version} must be {DATA_KEY_BYTES} bytes")

    def __repr__(self) -> str:
        return f"Keyring(current_version={self.current_version}, versions={sorted(self.keys)})"

    @classmethod
    def from_settings(cls, settings: VaultSettings) -> Keyring:
        keys = {
            version: decode_master_key(key.get_secret_value(), f"VAULT_PREVIOUS_MASTER_KEYS[{version}]")
            for version, key in settings.vault_previous_master_keys.items()
        }
        current = decode_master_key(settings.vault_master_key.get_secret_value())
        version = settings.vault_master_key_version
        if keys.get(version, current) != current:
            raise ValueError(f"VAULT_PREVIOUS_MASTER_KEYS[{version}] differs from VAULT_MASTER_KEY")
        keys[version] = current
        return cls(current_version=settings.vault_master_key_version, keys=keys)

    def wrap(self, org_id: str, data_key: bytes) -> tuple[bytes, int]:
        """Returns (nonce || wrapped key, master key version)."""
        version = self.current_version
        nonce, wrapped = encrypt(self.keys[version], data_key, _wrap_aad(org_id, version))
        return nonce + wrapped, version

    def unwrap(self, org_id: str, wrapped: bytes, version: int) -> bytes:
        key = self.keys.get(version)
        if key is None:
            raise DecryptionError(f"master key version {version} is not configured")
        return decrypt(key, wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _wrap_aad(org_id, version))
