"""Standard Webhooks signatures: a known vector, and what verify() refuses."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest
from browserfleet_webhooks import signing

# the test vector published with the Standard Webhooks reference libraries
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TIMESTAMP = 1614265330
BODY = b'{"test": 2432232314}'
EXPECTED = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_sign_matches_known_vector_and_independent_hmac() -> None:
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    independent = hmac.new(key, f"{MSG_ID}.{TIMESTAMP}.".encode() + BODY, hashlib.sha256).digest()
    assert signing.sign(SECRET, MSG_ID, TIMESTAMP, BODY) == "v1," + base64.b64encode(independent).decode()
    assert signing.sign(SECRET, MSG_ID, TIMESTAMP, BODY) == EXPECTED


def test_headers_and_verify_roundtrip() -> None:
    secret = signing.generate_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    headers = signing.headers(secret, "evt-1", BODY)
    assert headers["webhook-id"] == "evt-1"
    assert headers["content-type"] == "application/json"
    signing.verify(secret, headers, BODY)
    # header names are case-insensitive on the wire
    signing.verify(secret, {k.upper(): v for k, v in headers.items()}, BODY)


def test_verify_accepts_any_of_several_signatures() -> None:
    headers = {
        "webhook-id": MSG_ID,
        "webhook-timestamp": str(TIMESTAMP),
        "webhook-signature": f"v1,bogus= {EXPECTED}",
    }
    signing.verify(SECRET, headers, BODY, now=TIMESTAMP)


def test_verify_rejects_tampered_body() -> None:
    headers = {"webhook-id": MSG_ID, "webhook-timestamp": str(TIMESTAMP), "webhook-signature": EXPECTED}
    with pytest.raises(signing.InvalidSignature, match="no matching signature"):
        signing.verify(SECRET, headers, b'{"test": 2432232315}', now=TIMESTAMP)


def test_verify_rejects_other_secret_and_id() -> None:
    headers = {"webhook-id": MSG_ID, "webhook-timestamp": str(TIMESTAMP), "webhook-signature": EXPECTED}
    with pytest.raises(signing.InvalidSignature):
        signing.verify(signing.generate_secret(), headers, BODY, now=TIMESTAMP)
    with pytest.raises(signing.InvalidSignature):
        signing.verify(SECRET, {**headers, "webhook-id": "other"}, BODY, now=TIMESTAMP)


def test_verify_rejects_old_and_future_timestamps() -> None:
    headers = {"webhook-id": MSG_ID, "webhook-timestamp": str(TIMESTAMP), "webhook-signature": EXPECTED}
    # genuine signature, but captured and replayed later: refused
    with pytest.raises(signing.InvalidSignature, match="tolerance"):
        signing.verify(SECRET, headers, BODY)
    with pytest.raises(signing.InvalidSignature, match="tolerance"):
        signing.verify(SECRET, headers, BODY, now=TIMESTAMP - 301)
    fresh = signing.headers(SECRET, MSG_ID, BODY, timestamp=int(time.time()) - 600)
    with pytest.raises(signing.InvalidSignature, match="tolerance"):
        signing.verify(SECRET, fresh, BODY)


def test_verify_rejects_missing_or_malformed_headers() -> None:
    with pytest.raises(signing.InvalidSignature, match="webhook-signature"):
        signing.verify(
            SECRET, {"webhook-id": MSG_ID, "webhook-timestamp": str(TIMESTAMP)}, BODY, now=TIMESTAMP
        )
    with pytest.raises(signing.InvalidSignature, match="integer"):
        signing.verify(
            SECRET, {"webhook-id": MSG_ID, "webhook-timestamp": "soon", "webhook-signature": EXPECTED}, BODY
        )
    with pytest.raises(signing.InvalidSignature):
        signing.verify(
            SECRET,
            {
                "webhook-id": MSG_ID,
                "webhook-timestamp": str(TIMESTAMP),
                "webhook-signature": "v2," + EXPECTED[3:],
            },
            BODY,
            now=TIMESTAMP,
        )
