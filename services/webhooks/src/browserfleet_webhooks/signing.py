"""Standard Webhooks signatures (https://www.standardwebhooks.com), for us and for our customers.

Every request carries three headers:

* ``webhook-id``: the event id, the same on every retry, so a receiver can drop duplicates;
* ``webhook-timestamp``: unix seconds of this attempt;
* ``webhook-signature``: ``v1,<base64 HMAC-SHA256>`` of ``"{id}.{timestamp}.{body}"``, keyed with the
  base64-decoded part of the endpoint's ``whsec_…`` secret. Several space-separated signatures may be
  present (key rotation); one match is enough.

A receiver verifies a request with::

    from browserfleet_webhooks.signing import verify
    verify(secret, request.headers, raw_body)   # raises InvalidSignature, returns None when genuine

Always verify against the raw body bytes, before parsing the JSON.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping, Sequence

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE_SECONDS = 300


class InvalidSignature(Exception):
    """The request is not a genuine, fresh webhook from us."""


def generate_secret() -> str:
    """A new endpoint secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _key(secret: str) -> bytes:
    raw = secret.removeprefix(SECRET_PREFIX)
    try:
        return base64.b64decode(raw, validate=True)
    except ValueError as exc:
        raise ValueError("webhook secret is not whsec_ followed by base64") from exc


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one request."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def headers(
    secret: str | Sequence[str], msg_id: str, body: bytes, *, timestamp: int | None = None
) -> dict[str, str]:
    """The Standard Webhooks headers of one request. Several secrets (newest first, during a rotation's
    overlap) give several space-separated signatures, `v1,<new> v1,<old>`: a receiver holding either one
    verifies the request."""
    ts = int(time.time()) if timestamp is None else timestamp
    keys = [secret] if isinstance(secret, str) else list(secret)
    if not keys:
        raise ValueError("at least one secret signs a webhook")
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": " ".join(sign(key, msg_id, ts, body) for key in keys),
        "content-type": "application/json",
    }


def _header(source: Mapping[str, str], name: str) -> str:
    for key, value in source.items():
        if key.lower() == name:
            return value
    raise InvalidSignature(f"missing {name} header")


def verify(
    secret: str,
    request_headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> None:
    """Raise `InvalidSignature` unless the request was signed with `secret` within `tolerance_seconds`.

    The timestamp check is what stops an attacker replaying a captured request later.
    """
    msg_id = _header(request_headers, "webhook-id")
    raw_ts = _header(request_headers, "webhook-timestamp")
    signatures = _header(request_headers, "webhook-signature")
    try:
        timestamp = int(raw_ts)
    except ValueError:
        raise InvalidSignature("webhook-timestamp is not an integer") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        raise InvalidSignature("webhook-timestamp is outside the tolerance window")
    expected = sign(secret, msg_id, timestamp, body).split(",", 1)[1]
    for candidate in signatures.split():
        version, _, value = candidate.partition(",")
        if version == SIGNATURE_VERSION and hmac.compare_digest(value.encode(), expected.encode()):
            return
    raise InvalidSignature("no matching signature")
