"""The nkey JWTs of the auth callout: what worker-gateway signs verifies against its issuer key, and a token
that was altered, is of another kind or has expired is refused (the running server's side is tests/bus)."""

from __future__ import annotations

import base64
import json
import time

import pytest
from browserfleet_core import natsjwt


def test_a_signed_user_jwt_reads_back_with_its_permissions() -> None:
    seed = natsjwt.new_seed()
    user = natsjwt.public_key(natsjwt.new_seed(natsjwt.PREFIX_USER))
    token = natsjwt.user_jwt(
        seed, user_nkey=user, account="BF", name="worker:w1", publish=["a.>"], subscribe=["_INBOX_w.>"]
    )
    claims = natsjwt.decode(token, issuer_prefix=natsjwt.PREFIX_ACCOUNT, claim_type=natsjwt.USER_TYPE)
    assert claims["iss"] == natsjwt.public_key(seed) and claims["sub"] == user and claims["aud"] == "BF"
    assert claims["nats"]["pub"] == {"allow": ["a.>"]} and claims["nats"]["subs"] == natsjwt.NO_LIMIT
    assert natsjwt.is_public_key(claims["iss"], natsjwt.PREFIX_ACCOUNT)
    assert not natsjwt.is_public_key(claims["iss"], natsjwt.PREFIX_USER)


def test_an_altered_foreign_or_expired_token_is_refused() -> None:
    seed = natsjwt.new_seed()
    user = natsjwt.public_key(natsjwt.new_seed(natsjwt.PREFIX_USER))
    token = natsjwt.user_jwt(seed, user_nkey=user, account="BF", name="w", publish=[], subscribe=[])
    head, payload, sig = token.split(".")
    widened = json.loads(base64.urlsafe_b64decode(payload + "=="))
    widened["nats"]["pub"] = {"allow": [">"]}
    forged = ".".join(
        [head, base64.urlsafe_b64encode(json.dumps(widened).encode()).decode().rstrip("="), sig]
    )
    with pytest.raises(natsjwt.InvalidJwt, match="signature"):
        natsjwt.decode(forged, issuer_prefix=natsjwt.PREFIX_ACCOUNT, claim_type=natsjwt.USER_TYPE)
    with pytest.raises(natsjwt.InvalidJwt, match="not a authorization_request"):
        natsjwt.decode(token, issuer_prefix=natsjwt.PREFIX_ACCOUNT, claim_type=natsjwt.REQUEST_TYPE)
    with pytest.raises(natsjwt.InvalidJwt, match="expected kind"):
        natsjwt.decode(token, issuer_prefix=natsjwt.PREFIX_SERVER, claim_type=natsjwt.USER_TYPE)
    old = natsjwt.user_jwt(
        seed, user_nkey=user, account="BF", name="w", publish=[], subscribe=[], expires_at=time.time() - 5
    )
    with pytest.raises(natsjwt.InvalidJwt, match="expired"):
        natsjwt.decode(old, issuer_prefix=natsjwt.PREFIX_ACCOUNT, claim_type=natsjwt.USER_TYPE)


def test_an_answer_carries_a_user_or_an_error_never_both() -> None:
    seed = natsjwt.new_seed()
    user = natsjwt.public_key(natsjwt.new_seed(natsjwt.PREFIX_USER))
    server = natsjwt.public_key(natsjwt.new_seed(natsjwt.PREFIX_SERVER))
    refusal = natsjwt.authorization_response(seed, user_nkey=user, server_id=server, error="revoked")
    claims = natsjwt.decode(refusal, issuer_prefix=natsjwt.PREFIX_ACCOUNT, claim_type=natsjwt.RESPONSE_TYPE)
    assert claims["aud"] == server and claims["nats"]["error"] == "revoked" and "jwt" not in claims["nats"]
    with pytest.raises(ValueError, match="not both"):
        natsjwt.authorization_response(seed, user_nkey=user, server_id=server, user_token="x", error="y")
