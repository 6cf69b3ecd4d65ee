"""AES-256-GCM envelope encryption.

Each org has a random 32-byte data key per master-key version. The data key is stored wrapped
(AES-GCM under the master key of that version, with the org bound as associated data); credential
values are encrypted under the data key with `"<org_id>:<name>"` as associated data, so a ciphertext
copied to another row or org fails authentication instead of decrypting. Nonces are 96-bit random:
one data key encrypts far fewer than 2^32 values, well inside GCM's random-nonce bound.
"""

from __future__ import annotations

import os

from browserfleet_core.master_keys import MasterKeys, keys_by_version
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .settings import VaultSettings

NONCE_BYTES = 12


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


class Keyring(MasterKeys):
    """The vault's master keys, which wrap and unwrap the orgs' data keys."""

    @classmethod
    def from_settings(cls, settings: VaultSettings) -> Keyring:
        version = settings.vault_master_key_version
        keys = keys_by_version(
            settings.vault_master_key, version, settings.vault_previous_master_keys, prefix="VAULT"
        )
        return cls(current_version=version, keys=keys)

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
