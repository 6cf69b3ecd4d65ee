"""Security primitives: password hashing, opaque tokens, Ed25519 JWT signing and JWKS verification."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import jwt
from argon2 import Parameters, PasswordHasher, profiles
from argon2.exceptions import InvalidHashError, VerificationError
from browserfleet_contracts.auth import ACCESS_TOKEN_TYP, TOKEN_AUDIENCE, TOKEN_ISSUER
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .errors import Unauthorized

# Argon2 cost profiles, chosen by PASSWORD_HASH_PROFILE. The default is RFC 9106's low-memory profile
# (argon2-cffi's own default), above OWASP's minimum; the minimum costs about a seventh of its CPU (0.03 s
# against 0.21 s a hash on the 2-core VM), which is what the test suite runs with: it signs in hundreds of
# times. A hash made under another profile still verifies, and is rehashed at its owner's next sign-in.
PASSWORD_HASH_PROFILES: dict[str, Parameters] = {
    "rfc9106-low-memory": profiles.RFC_9106_LOW_MEMORY,
    "owasp-minimum": replace(profiles.RFC_9106_LOW_MEMORY, time_cost=2, memory_cost=19456, parallelism=1),
}


def _password_hasher() -> PasswordHasher:
    name = os.environ.get("PASSWORD_HASH_PROFILE") or "rfc9106-low-memory"
    if name not in PASSWORD_HASH_PROFILES:
        raise RuntimeError(
            f"PASSWORD_HASH_PROFILE={name!r}: must be one of {', '.join(PASSWORD_HASH_PROFILES)}"
        )
    return PasswordHasher.from_parameters(PASSWORD_HASH_PROFILES[name])


password_hasher = _password_hasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the email is unknown, so both paths cost one argon2 verification. Made on
    first use: hashing at import cost every process that imports this module (gateway, worker…) ~0.1 s."""
    return password_hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return password_hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    try:
        return password_hasher.verify(stored_hash or _dummy_hash(), password) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def password_needs_rehash(stored_hash: str) -> bool:
    return password_hasher.check_needs_rehash(stored_hash)


def new_token(prefix: str) -> str:
    """An opaque credential with 256 bits of entropy, e.g. `sk_api_…`, `sk_worker_…`, `whsec_…`."""
    return prefix + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """Opaque tokens are high-entropy, so a fast keyed-free hash is enough to store them."""
    return hashlib.sha256(token.encode()).hexdigest()


def constant_time_equals(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


# --- Ed25519 signing keys ------------------------------------------------------------------------
def generate_signing_key() -> tuple[str, str]:
    """Returns (kid, private key PEM)."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return public_kid(pem), pem


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def public_jwk(private_pem: str, kid: str) -> dict[str, Any]:
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": _b64url(raw), "kid": kid, "use": "sig", "alg": "EdDSA"}


def public_kid(private_pem: str) -> str:
    """RFC 7638 thumbprint of the public key: stable, and derived from nothing secret."""
    jwk = public_jwk(private_pem, kid="")
    canonical = json.dumps({"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"]}, separators=(",", ":"))
    return _b64url(hashlib.sha256(canonical.encode()).digest())


def access_claims(
    *, sub: str, org: str, role: str, ttl_seconds: int, jti: str, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """An access token's claims, valid from now for `ttl_seconds` (`extra` adds or overrides claims): what
    `sign_access_token` signs, and what tests sign with keys of their own."""
    now = int(time.time())
    return {
        "iss": TOKEN_ISSUER,
        "aud": TOKEN_AUDIENCE,
        "sub": sub,
        "org": org,
        "role": role,
        "typ": ACCESS_TOKEN_TYP,
        "jti": jti,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_seconds,
        **(extra or {}),
    }


def sign_access_token(
    private_pem: str,
    kid: str,
    *,
    sub: str,
    org: str,
    role: str,
    ttl_seconds: int,
    extra: dict[str, Any] | None = None,
) -> tuple[str, str]:
    """Returns (token, jti)."""
    jti = secrets.token_urlsafe(16)
    claims = access_claims(sub=sub, org=org, role=role, ttl_seconds=ttl_seconds, jti=jti, extra=extra)
    token = jwt.encode(claims, private_pem, algorithm="EdDSA", headers={"kid": kid, "typ": ACCESS_TOKEN_TYP})
    return token, jti


class JwksVerifier:
    """Verifies access tokens locally against the auth service's JWKS.

    Keys are cached; an unknown `kid` triggers at most one refetch per `min_refresh_seconds`, which is how
    a rotated key is picked up without a restart and without letting garbage tokens hammer auth.
    """

    def __init__(
        self,
        fetch_jwks: Callable[[], Awaitable[dict[str, Any]]],
        *,
        min_refresh_seconds: float = 5.0,
        cache_seconds: float = 30.0,
        cache_entries: int = 10_000,
    ) -> None:
        self._fetch = fetch_jwks
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = 0.0
        self._min_refresh = min_refresh_seconds
        # Verified tokens, by their exact text: checking an Ed25519 signature was ~12 % of the gateway's CPU
        # per request, and a client sends the same token with every request. An entry lives at most
        # `cache_seconds`, never past the token's own `exp`, and only while its signing key is still
        # published (a key withdrawn from the JWKS stops its cached tokens at the next refresh).
        self._cache_seconds = cache_seconds
        self._cache_entries = cache_entries
        self._verified: dict[str, tuple[float, str, dict[str, Any]]] = {}

    async def refresh(self) -> None:
        jwks = await self._fetch()
        keys: dict[str, jwt.PyJWK] = {}
        for data in jwks.get("keys", []):
            if data.get("kty") == "OKP" and data.get("crv") == "Ed25519" and data.get("kid"):
                keys[data["kid"]] = jwt.PyJWK(data, algorithm="EdDSA")
        self._keys = keys
        self._fetched_at = time.monotonic()

    async def _key(self, kid: str) -> jwt.PyJWK:
        if kid not in self._keys and time.monotonic() - self._fetched_at >= self._min_refresh:
            await self.refresh()
        try:
            return self._keys[kid]
        except KeyError:
            raise Unauthorized("token signed by an unknown key", code="invalid_token") from None

    async def verify(self, token: str) -> dict[str, Any]:
        hit = self._verified.get(token)
        if hit is not None:
            until, kid, claims = hit
            if until > time.monotonic() and kid in self._keys:
                return dict(claims)
            del self._verified[token]
        kid, claims = await self._verify(token)
        self._remember(token, kid, claims)
        return claims

    def _remember(self, token: str, kid: str, claims: dict[str, Any]) -> None:
        if self._cache_seconds <= 0:
            return
        left = float(claims["exp"]) - time.time()
        if left <= 0:
            return
        if len(self._verified) >= self._cache_entries:
            now = time.monotonic()
            self._verified = {t: e for t, e in self._verified.items() if e[0] > now}
            if len(self._verified) >= self._cache_entries:
                self._verified.clear()
        until = time.monotonic() + min(self._cache_seconds, left)
        self._verified[token] = (until, kid, dict(claims))

    async def _verify(self, token: str) -> tuple[str, dict[str, Any]]:
        """(the signing key's id, the claims) of a valid access token; Unauthorized otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("malformed token", code="invalid_token") from None
        if header.get("alg") != "EdDSA" or header.get("typ") != ACCESS_TOKEN_TYP:
            raise Unauthorized("not an access token", code="invalid_token")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthorized("token has no key id", code="invalid_token")
        key = await self._key(kid)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key.key,
                algorithms=["EdDSA"],
                audience=TOKEN_AUDIENCE,
                issuer=TOKEN_ISSUER,
                options={"require": ["exp", "iat", "sub", "iss", "aud", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired", code="token_expired") from None
        except jwt.PyJWTError:
            raise Unauthorized("invalid token", code="invalid_token") from None
        if claims.get("typ") != ACCESS_TOKEN_TYP or not claims.get("org"):
            raise Unauthorized("not an access token", code="invalid_token")
        return kid, claims
