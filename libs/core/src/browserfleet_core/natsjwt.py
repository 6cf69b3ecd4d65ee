"""NATS nkeys and JWTs, as much of them as an auth callout needs (NATS >= 2.10, docs.nats.io "Auth Callout").

The server signs each authorization request with its own nkey (`N…`) and sends it on `$SYS.REQ.USER.AUTH`;
the callout answers with an authorization response signed by the issuer account key (`A…`, the
`auth_callout.issuer` of the server config) that carries either a user JWT for the request's `user_nkey` or an
error. Keys are ed25519 (PyNaCl through the `nkeys` package); a JWT is `header.claims.signature`, base64url
without padding, signed over `header.claims` (`alg: ed25519-nkey`), as nats-io/jwt v2 writes them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import time
from typing import Any, Final

import nacl.exceptions
import nacl.signing
import nkeys

JWT_HEADER: Final = {"typ": "JWT", "alg": "ed25519-nkey"}
REQUEST_TYPE: Final = "authorization_request"
RESPONSE_TYPE: Final = "authorization_response"
USER_TYPE: Final = "user"
NO_LIMIT: Final = -1  # nats-io/jwt's NoLimit: 0 would mean "no subscriptions, no data at all"

PREFIX_ACCOUNT: Final = nkeys.PREFIX_BYTE_ACCOUNT
PREFIX_USER: Final = nkeys.PREFIX_BYTE_USER
PREFIX_SERVER: Final = nkeys.PREFIX_BYTE_SERVER


class InvalidJwt(ValueError):
    """A token that is not a JWT signed by the key it names as its issuer, or of the wrong kind."""


def new_seed(prefix: int = PREFIX_ACCOUNT) -> str:
    """A fresh nkey seed (`SA…` for an account key), the secret the callout signs with."""
    return bytes(nkeys.encode_seed(os.urandom(32), prefix)).decode()


def public_key(seed: str) -> str:
    """The public nkey (`A…`, `U…`) of `seed`: what the server config names as the callout's issuer."""
    return bytes(nkeys.from_seed(seed.encode()).public_key).decode()


def _verify_key(public: str, prefix: int) -> nacl.signing.VerifyKey:
    try:
        raw = base64.b32decode(public + "=" * (-len(public) % 8))
    except (binascii.Error, ValueError) as exc:
        raise InvalidJwt(f"{public[:8]}… is not an nkey") from exc
    body, crc = raw[:-2], raw[-2:]
    if len(body) != 33 or body[0] != prefix or nkeys.crc16_checksum(body) != crc:
        raise InvalidJwt(f"{public[:8]}… is not a public nkey of the expected kind")
    return nacl.signing.VerifyKey(body[1:])


def is_public_key(value: str, prefix: int) -> bool:
    try:
        _verify_key(value, prefix)
    except InvalidJwt:
        return False
    return True


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode(claims: dict[str, Any], seed: str) -> str:
    """Sign `claims` with `seed`: `iss` and `iat` are set here, `jti` is the claims' hash (as nats-io/jwt)."""
    signer = nkeys.from_seed(seed.encode())
    body = dict(claims, iss=bytes(signer.public_key).decode(), iat=int(time.time()))
    body.pop("jti", None)
    digest = hashlib.new("sha512_256", json.dumps(body, sort_keys=True).encode()).digest()
    body["jti"] = base64.b32encode(digest).decode().rstrip("=")
    head = _b64(json.dumps(JWT_HEADER, separators=(",", ":")).encode())
    payload = _b64(json.dumps(body, separators=(",", ":")).encode())
    signature = signer.sign(f"{head}.{payload}".encode())
    return f"{head}.{payload}.{_b64(signature)}"


def decode(token: str, *, issuer_prefix: int, claim_type: str) -> dict[str, Any]:
    """The claims of `token` once its signature is verified against its own `iss` (of the given kind) and
    its type, expiry and not-before are checked. Whether that issuer is trusted is the caller's decision."""
    try:
        head, payload, signature = token.split(".")
        header = json.loads(_unb64(head))
        claims: dict[str, Any] = json.loads(_unb64(payload))
        sig = _unb64(signature)
    except (ValueError, binascii.Error) as exc:
        raise InvalidJwt("not a JWT") from exc
    if not isinstance(header, dict) or header.get("alg") != JWT_HEADER["alg"] or not isinstance(claims, dict):
        raise InvalidJwt("not an nkey-signed JWT")
    issuer = claims.get("iss")
    if not isinstance(issuer, str):
        raise InvalidJwt("the JWT names no issuer")
    try:
        _verify_key(issuer, issuer_prefix).verify(f"{head}.{payload}".encode(), sig)
    except nacl.exceptions.BadSignatureError as exc:
        raise InvalidJwt("the JWT's signature does not verify") from exc
    nats = claims.get("nats")
    if not isinstance(nats, dict) or nats.get("type") != claim_type:
        raise InvalidJwt(f"not a {claim_type} JWT")
    now = time.time()
    if claims.get("exp") and now > float(claims["exp"]):
        raise InvalidJwt("the JWT has expired")
    if claims.get("nbf") and now < float(claims["nbf"]):
        raise InvalidJwt("the JWT is not valid yet")
    return claims


def user_jwt(
    seed: str,
    *,
    user_nkey: str,
    account: str,
    name: str,
    publish: list[str],
    subscribe: list[str],
    allow_responses: bool = False,
    expires_at: float | None = None,
) -> str:
    """A user JWT for the callout's response: `user_nkey` (the request's), placed in `account` (config mode:
    the account's name is the audience), allowed exactly `publish` / `subscribe`."""
    permissions: dict[str, Any] = {
        "pub": {"allow": publish},
        "sub": {"allow": subscribe},
        "subs": NO_LIMIT,
        "data": NO_LIMIT,
        "payload": NO_LIMIT,
        "type": USER_TYPE,
        "version": 2,
    }
    if allow_responses:
        permissions["resp"] = {"max": 1, "ttl": 0}
    claims: dict[str, Any] = {"sub": user_nkey, "aud": account, "name": name, "nats": permissions}
    if expires_at is not None:
        claims["exp"] = int(expires_at)
    return encode(claims, seed)


def authorization_response(
    seed: str, *, user_nkey: str, server_id: str, user_token: str | None = None, error: str | None = None
) -> str:
    """The callout's answer: `user_token` (a user JWT) to let the client in, or `error` to refuse it."""
    if (user_token is None) == (error is None):
        raise ValueError("an authorization response carries a user JWT or an error, not both")
    body: dict[str, Any] = {"type": RESPONSE_TYPE, "version": 2}
    if user_token is not None:
        body["jwt"] = user_token
    else:
        body["error"] = error
    return encode({"sub": user_nkey, "aud": server_id, "nats": body}, seed)
