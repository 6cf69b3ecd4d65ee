"""Sealing secret material to one worker: HPKE (RFC 9180) base mode with DHKEM(X25519, HKDF-SHA256),
HKDF-SHA256 and AES-256-GCM, from `cryptography` (>= 47).

Why HPKE rather than X25519 + HKDF + AES-GCM put together here: it is exactly that construction, but
specified, with test vectors, and with the recipient's public key and the ephemeral key bound into the key
schedule by the standard rather than by our own code. Every box has a fresh ephemeral key pair, so sealing
the same values twice gives unrelated boxes.

What a box is bound to (`binding`: `<task_id>:<attempt>:<worker_id>`, plus its purpose and the envelope
version) goes into HPKE's `info`, which RFC 9180 section 8.1 names as the place for a single-shot API's
associated data: any difference when opening makes the AEAD tag fail, exactly like a flipped byte. So a
release copied into another task, attempt or worker's reply, or a profile lease passed off as a release,
opens nowhere.

`seal(public_key, plaintext, aad, purpose=...)` -> `SealedBox` (JSON-serialisable, safe to relay and log);
`open(private_key, box, aad, purpose=...)` -> the plaintext, or `SealError`.
"""

from __future__ import annotations

import base64
import binascii

from browserfleet_contracts.sealed import MAX_SEALED_CHARS, SEAL_SUITE, SEAL_VERSION, SealedBox, SealPurpose
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.hpke import AEAD, KDF, KEM, Suite
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

_SUITE = Suite(KEM.X25519, KDF.HKDF_SHA256, AEAD.AES_256_GCM)
_ENC_BYTES = 32  # an X25519 encapsulated key
_TAG_BYTES = 16
KEY_BYTES = 32
# how many plaintext bytes fit a box: base64url grows by 4/3, the encapsulated key and tag are fixed
MAX_PLAINTEXT_BYTES = MAX_SEALED_CHARS * 3 // 4 - _ENC_BYTES - _TAG_BYTES


class SealError(Exception):
    """A box that cannot be opened: sealed to another key, damaged, or bound to something else."""


def binding(task_id: str, attempt: int, worker_id: str) -> bytes:
    """What a box is bound to: the task, its attempt and the worker holding it."""
    if not task_id or not worker_id or ":" in task_id or ":" in worker_id:
        # unambiguous by construction: no field can shift into the next one
        raise ValueError("a binding needs a task id and a worker id without ':'")
    return f"{task_id}:{attempt}:{worker_id}".encode()


def _info(purpose: SealPurpose, aad: bytes) -> bytes:
    return b"browserfleet/sealed/v%d/%s\x00" % (SEAL_VERSION, purpose.encode()) + aad


def public_key_text(key: X25519PublicKey | X25519PrivateKey) -> str:
    """A public key as workers register it: raw 32 bytes, base64url without padding."""
    public = key.public_key() if isinstance(key, X25519PrivateKey) else key
    return _b64(public.public_bytes(Encoding.Raw, PublicFormat.Raw))


def load_public_key(text: str) -> X25519PublicKey:
    try:
        raw = _unb64(text)
    except (binascii.Error, ValueError):
        raise SealError("not a base64url X25519 public key") from None
    if len(raw) != KEY_BYTES:
        raise SealError("not a base64url X25519 public key")
    return X25519PublicKey.from_public_bytes(raw)


def derive_private_key(secret: bytes, salt: bytes, info: bytes) -> X25519PrivateKey:
    """A key pair that need not be stored: recomputed from `secret` (e.g. a master key) and the context
    it serves. HKDF-SHA256 keeps keys for different contexts independent."""
    seed = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, info=info).derive(secret)
    return X25519PrivateKey.from_private_bytes(seed)


def seal(
    public_key: X25519PublicKey | str, plaintext: bytes, aad: bytes, *, purpose: SealPurpose
) -> SealedBox:
    """`plaintext` sealed to `public_key`, bound to `aad` and `purpose`."""
    if len(plaintext) > MAX_PLAINTEXT_BYTES:
        raise ValueError(f"{len(plaintext)} bytes do not fit a sealed box (at most {MAX_PLAINTEXT_BYTES})")
    key = load_public_key(public_key) if isinstance(public_key, str) else public_key
    ct = _SUITE.encrypt(plaintext, key, info=_info(purpose, aad))
    return SealedBox(v=SEAL_VERSION, suite=SEAL_SUITE, to=public_key_text(key), ct=_b64(ct))


def open(private_key: X25519PrivateKey, box: SealedBox, aad: bytes, *, purpose: SealPurpose) -> bytes:
    """The plaintext of `box`, if it was sealed to `private_key`'s public half for exactly `aad` and
    `purpose` and not changed since; otherwise SealError, saying which of those it can tell."""
    if box.v != SEAL_VERSION or box.suite != SEAL_SUITE:  # pragma: no cover - the model admits only these
        raise SealError(f"unsupported sealed box (v{box.v}, {box.suite})")
    if box.to != public_key_text(private_key):
        raise SealError(
            "sealed to another public key than this process's (was this worker's key rotated by a restart?)"
        )
    try:
        ct = _unb64(box.ct)
    except (binascii.Error, ValueError):
        raise SealError("a sealed box's ciphertext is not base64url") from None
    if len(ct) < _ENC_BYTES + _TAG_BYTES:
        raise SealError("a sealed box is too short to hold anything")
    try:
        return _SUITE.decrypt(ct, private_key, info=_info(purpose, aad))
    except (InvalidTag, ValueError):
        raise SealError(
            "a sealed box failed authentication: damaged, or sealed for another task, attempt, worker or "
            "purpose"
        ) from None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
