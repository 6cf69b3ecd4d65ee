"""JwksVerifier's cache of verified tokens: it saves the signature check and nothing else."""

from __future__ import annotations

from typing import Any

import pytest
from browserfleet_core import security
from browserfleet_core.errors import Unauthorized


class Jwks:
    """The auth service's JWKS, as the verifier fetches it; counts the fetches."""

    def __init__(self) -> None:
        self.kid, self.pem = security.generate_signing_key()
        self.published = [security.public_jwk(self.pem, self.kid)]
        self.fetches = 0

    async def fetch(self) -> dict[str, Any]:
        self.fetches += 1
        return {"keys": list(self.published)}

    def token(self, ttl: int = 900) -> str:
        token, _ = security.sign_access_token(
            self.pem, self.kid, sub="u1", org="o1", role="admin", ttl_seconds=ttl
        )
        return token


async def test_a_token_is_verified_once_then_answered_from_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    jwks = Jwks()
    verifier = security.JwksVerifier(jwks.fetch)
    token = jwks.token()
    first = await verifier.verify(token)
    decodes = 0
    real = security.jwt.decode

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal decodes
        decodes += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(security.jwt, "decode", counting)
    again = await verifier.verify(token)
    assert again == first and decodes == 0
    again["role"] = "viewer"  # a caller changing its copy does not change what the cache answers
    assert (await verifier.verify(token))["role"] == "admin"
    await verifier.verify(jwks.token())  # another token is checked for real
    assert decodes == 1


async def test_a_tampered_copy_of_a_cached_token_is_still_refused() -> None:
    jwks = Jwks()
    verifier = security.JwksVerifier(jwks.fetch)
    token = jwks.token()
    await verifier.verify(token)
    head, body, sig = token.split(".")
    forged = f"{head}.{body}.{sig[:-2]}{'AA' if not sig.endswith('AA') else 'BB'}"
    with pytest.raises(Unauthorized):
        await verifier.verify(forged)


async def test_a_withdrawn_key_stops_its_cached_tokens() -> None:
    jwks = Jwks()
    verifier = security.JwksVerifier(jwks.fetch, min_refresh_seconds=0)
    token = jwks.token()
    await verifier.verify(token)
    jwks.published = [security.public_jwk(*reversed(security.generate_signing_key()))]
    await verifier.refresh()
    with pytest.raises(Unauthorized):
        await verifier.verify(token)


async def test_an_entry_never_outlives_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    jwks = Jwks()
    verifier = security.JwksVerifier(jwks.fetch, cache_seconds=3600)
    token = jwks.token(ttl=60)
    await verifier.verify(token)
    entry = verifier._verified[token]
    assert entry[0] - security.time.monotonic() <= 60, "cached for longer than the token has left"
    clock = security.time.monotonic
    monkeypatch.setattr(security.time, "monotonic", lambda: clock() + 61)
    decoded: list[str] = []
    real = security.JwksVerifier._verify

    async def spy(self: security.JwksVerifier, t: str) -> tuple[str, dict[str, Any]]:
        decoded.append(t)
        return await real(self, t)

    monkeypatch.setattr(security.JwksVerifier, "_verify", spy)
    await verifier.verify(token)  # the token itself is still valid; the cache entry is not
    assert decoded == [token], "an entry past the token's expiry answered without a check"
