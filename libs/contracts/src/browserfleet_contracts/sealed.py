"""A sealed box: secret material only one worker can open (`browserfleet_core.sealing` makes and opens it).

The vault seals every release and profile lease to the X25519 public key the claiming worker registered;
the worker seals a profile's storage state back to a key the vault gave it in the (sealed) lease. A box is
plain JSON, so NATS, worker-gateway (relaying to a remote worker) or a log can carry it without being able
to read it. It is bound to `<task_id>:<attempt>:<worker_id>` and to its purpose: opened for another task,
attempt, worker or purpose, it fails like a tampered one.
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import Field, field_validator

from .common import Contract
from .workers import PublicKey, _x25519_public_key

SEAL_VERSION: Final = 1
# HPKE (RFC 9180) base mode: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM
SEAL_SUITE: Final = "hpke-x25519-sha256-aes256gcm"
# a box holds at most a release (200 values) or a profile's storage state (512 KiB of JSON), base64url'd,
# well under NATS' 1 MB payload; anything longer is refused before any work is done on it
MAX_SEALED_CHARS = 1_000_000

# what a box is for: part of what it is bound to, so one kind can never be passed off as another
SealPurpose = Literal["release", "profile_lease", "profile_save"]


class SealedBox(Contract):
    """One sealed message, versioned and self-describing."""

    v: Literal[1] = Field(default=SEAL_VERSION, description="envelope version")
    suite: Literal["hpke-x25519-sha256-aes256gcm"] = Field(
        default=SEAL_SUITE, description="HPKE base mode: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM"
    )
    to: PublicKey = Field(
        description="the recipient's X25519 public key (base64url): tells a box for a rotated key from a "
        "damaged one"
    )
    ct: str = Field(
        min_length=1,
        max_length=MAX_SEALED_CHARS,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="base64url (no padding) of the HPKE encapsulated key followed by the ciphertext and tag",
    )

    _to = field_validator("to")(_x25519_public_key)
