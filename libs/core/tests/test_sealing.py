"""Sealed boxes (browserfleet_core.sealing): what one worker's key seals opens with that key only, for exactly
the task, attempt, worker and purpose it was sealed for, and any change to the box is refused."""

from __future__ import annotations

import base64
import json
import urllib.parse

import pytest
from browserfleet_contracts.sealed import SealedBox
from browserfleet_core import sealing
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from pydantic import ValidationError

SECRET = "pw-Sealed!s3cret-horse-9Q"
PLAINTEXT = json.dumps({"values": {"SITE_PASSWORD": SECRET}}).encode()
AAD = sealing.binding("task-1", 2, "worker-a")


def forms(value: str) -> list[str]:
    raw = value.encode()
    return [
        value,
        urllib.parse.quote(value, safe=""),
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        json.dumps(value)[1:-1],
    ]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _raw(box: SealedBox) -> bytes:
    return base64.urlsafe_b64decode(box.ct + "=" * (-len(box.ct) % 4))


@pytest.fixture
def worker_a() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


@pytest.fixture
def box(worker_a: X25519PrivateKey) -> SealedBox:
    return sealing.seal(sealing.public_key_text(worker_a), PLAINTEXT, AAD, purpose="release")


def test_a_box_opens_with_its_key_for_its_binding(worker_a: X25519PrivateKey, box: SealedBox) -> None:
    assert sealing.open(worker_a, box, AAD, purpose="release") == PLAINTEXT
    # it is plain JSON: relayed as text (NATS, worker-gateway, a WebSocket frame) it opens the same
    relayed = SealedBox.model_validate_json(box.model_dump_json())
    assert sealing.open(worker_a, relayed, AAD, purpose="release") == PLAINTEXT
    assert (box.v, box.suite, box.to) == (
        1,
        "hpke-x25519-sha256-aes256gcm",
        sealing.public_key_text(worker_a),
    )
    # the HPKE encapsulated key, then the ciphertext and its 16-byte tag
    assert len(_raw(box)) == 32 + len(PLAINTEXT) + 16
    text = box.model_dump_json()
    assert not [f for f in forms(SECRET) if f in text]


def test_every_box_is_new(worker_a: X25519PrivateKey, box: SealedBox) -> None:
    again = sealing.seal(worker_a.public_key(), PLAINTEXT, AAD, purpose="release")
    assert again.ct != box.ct and _raw(again)[:32] != _raw(box)[:32]  # a fresh ephemeral key each time
    assert sealing.open(worker_a, again, AAD, purpose="release") == PLAINTEXT


def test_another_key_cannot_open_it(worker_a: X25519PrivateKey, box: SealedBox) -> None:
    worker_b = X25519PrivateKey.generate()
    with pytest.raises(sealing.SealError, match="another public key"):
        sealing.open(worker_b, box, AAD, purpose="release")
    # nor by claiming the box was for it: the recipient's key is bound into HPKE's key schedule
    readdressed = box.model_copy(update={"to": sealing.public_key_text(worker_b)})
    with pytest.raises(sealing.SealError, match="failed authentication"):
        sealing.open(worker_b, readdressed, AAD, purpose="release")
    # what worker-gateway holds of worker A is its public key: as a private key it opens nothing
    public_bytes = base64.urlsafe_b64decode(box.to + "=")
    as_private = X25519PrivateKey.from_private_bytes(public_bytes)
    with pytest.raises(sealing.SealError, match="failed authentication"):
        sealing.open(
            as_private,
            box.model_copy(update={"to": sealing.public_key_text(as_private)}),
            AAD,
            purpose="release",
        )


@pytest.mark.parametrize(
    "aad",
    [
        sealing.binding("task-2", 2, "worker-a"),  # another task
        sealing.binding("task-1", 1, "worker-a"),  # an earlier attempt
        sealing.binding("task-1", 3, "worker-a"),  # a later attempt
        sealing.binding("task-1", 2, "worker-b"),  # another worker
        b"",
    ],
)
def test_another_binding_cannot_open_it(worker_a: X25519PrivateKey, box: SealedBox, aad: bytes) -> None:
    with pytest.raises(sealing.SealError, match="failed authentication"):
        sealing.open(worker_a, box, aad, purpose="release")


def test_another_purpose_cannot_open_it(worker_a: X25519PrivateKey, box: SealedBox) -> None:
    """A release is never taken for a lease, nor a lease's state for a release."""
    for purpose in ("profile_lease", "profile_save"):
        with pytest.raises(sealing.SealError, match="failed authentication"):
            sealing.open(worker_a, box, AAD, purpose=purpose)


def test_a_changed_box_is_refused(worker_a: X25519PrivateKey, box: SealedBox) -> None:
    raw = _raw(box)
    for at in (0, 31, 32, len(raw) // 2, len(raw) - 17, len(raw) - 1):  # encapsulated key, body, tag
        flipped = bytearray(raw)
        flipped[at] ^= 0x01
        with pytest.raises(sealing.SealError, match="failed authentication"):
            sealing.open(
                worker_a, box.model_copy(update={"ct": _b64(bytes(flipped))}), AAD, purpose="release"
            )
    for changed in (raw[:-1], raw + b"\x00", raw[:47], bytes(32) + raw[32:]):
        with pytest.raises(sealing.SealError):
            sealing.open(worker_a, box.model_copy(update={"ct": _b64(changed)}), AAD, purpose="release")
    with pytest.raises(sealing.SealError):
        sealing.open(worker_a, box.model_copy(update={"ct": "A"}), AAD, purpose="release")


def test_the_envelope_is_checked_before_anything_is_opened(box: SealedBox) -> None:
    data = box.model_dump()
    for change, field in (
        ({"v": 2}, "v"),
        ({"suite": "x25519-aes128"}, "suite"),
        ({"to": "not-a-key"}, "to"),
        ({"ct": "has spaces"}, "ct"),
        ({"ct": "A" * 1_000_001}, "ct"),
        ({"extra": 1}, "extra"),
    ):
        with pytest.raises(ValidationError) as exc:
            SealedBox.model_validate({**data, **change})
        assert exc.value.errors()[0]["loc"] == (field,)


def test_bindings_and_limits() -> None:
    assert sealing.binding("t", 1, "w") == b"t:1:w"
    for task, worker in (("t:1", "w"), ("t", "1:w"), ("", "w"), ("t", "")):
        with pytest.raises(ValueError, match="binding"):
            sealing.binding(task, 1, worker)
    key = X25519PrivateKey.generate()
    with pytest.raises(ValueError, match="do not fit"):
        sealing.seal(key.public_key(), bytes(sealing.MAX_PLAINTEXT_BYTES + 1), AAD, purpose="release")
    biggest = sealing.seal(key.public_key(), bytes(sealing.MAX_PLAINTEXT_BYTES), AAD, purpose="release")
    assert len(SealedBox.model_validate_json(biggest.model_dump_json()).ct) <= 1_000_000
    with pytest.raises(sealing.SealError, match="public key"):
        sealing.load_public_key("short")


def test_derived_keys_are_stable_and_independent() -> None:
    master = bytes(range(32))
    one = sealing.derive_private_key(master, b"salt", b"org:crm:lease-1")
    assert sealing.public_key_text(one) == sealing.public_key_text(
        sealing.derive_private_key(master, b"salt", b"org:crm:lease-1")
    )
    others = {
        sealing.public_key_text(sealing.derive_private_key(master, b"salt", b"org:crm:lease-2")),
        sealing.public_key_text(sealing.derive_private_key(master, b"other", b"org:crm:lease-1")),
        sealing.public_key_text(sealing.derive_private_key(bytes(32), b"salt", b"org:crm:lease-1")),
    }
    assert sealing.public_key_text(one) not in others and len(others) == 3
