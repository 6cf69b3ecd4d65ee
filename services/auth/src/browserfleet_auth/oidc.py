"""The OpenID Connect relying party, with Authlib: discovery (checked with Authlib's provider-metadata
rules), the authorization URL with state, nonce and a PKCE S256 challenge, the code redeemed at the token
endpoint, and the ID token verified (joserfc signature check against the provider's JWKS, then Authlib's
`CodeIDToken` claim rules: issuer, audience, expiry, nonce, azp, at_hash). No database here.

Every refusal is an `SsoRefused` whose message names what was wrong, never the token itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.oidc.core import CodeIDToken
from authlib.oidc.discovery import OpenIDProviderMetadata
from browserfleet_core.errors import Invalid, ServiceError, Unauthorized
from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidClaimError,
    InvalidKeyIdError,
    JoseError,
    MissingClaimError,
    UnsupportedAlgorithmError,
)
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry

# asymmetric algorithms only: an HS256 token would be "signed" with the client secret, a shared key
ID_TOKEN_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA")
DISCOVERY_TTL_SECONDS = 300.0
LEEWAY_SECONDS = 60


class SsoRefused(Unauthorized):
    """An SSO sign-in refused; `code` says which check failed and the message says what was wrong."""

    def __init__(self, message: str, *, code: str = "sso_refused", status: int = 401) -> None:
        super().__init__(message, code=code, status=status)


class IdpUnavailable(ServiceError):
    status = 502
    code = "idp_unavailable"


@dataclass
class Provider:
    issuer: str
    metadata: dict[str, Any]
    jwks: dict[str, Any]
    fetched_at: float


@dataclass
class Oidc:
    """Talks to identity providers; discovery documents and key sets are cached per issuer for a while
    (a token signed by a key not in the cached set refetches the set once)."""

    allow_http: bool = False
    timeout: float = 10.0
    _providers: dict[str, Provider] = field(default_factory=dict)

    def check_issuer(self, issuer: str) -> str:
        parts = urlsplit(issuer)
        if parts.scheme not in ("https", "http") or not parts.hostname or parts.query or parts.fragment:
            raise Invalid("issuer: must be an https:// URL without query or fragment", field="issuer")
        if parts.scheme == "http" and not self.allow_http:
            raise Invalid(
                "issuer: must be https:// (http is for tests: SSO_ALLOW_HTTP_ISSUERS)", field="issuer"
            )
        return issuer

    async def provider(self, issuer: str, *, fresh: bool = False) -> Provider:
        cached = self._providers.get(issuer)
        if cached is not None and not fresh and time.monotonic() - cached.fetched_at < DISCOVERY_TTL_SECONDS:
            return cached
        self.check_issuer(issuer)
        url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as http:
            meta = await self._json(http, url, "discovery document")
            if meta.get("issuer") != issuer:
                raise Invalid(
                    f"issuer: the discovery document names issuer {str(meta.get('issuer'))[:200]!r}, "
                    f"not {issuer!r}",
                    field="issuer",
                    code="sso_discovery_mismatch",
                )
            try:
                OpenIDProviderMetadata(meta).validate()
            except ValueError as exc:
                raise Invalid(f"issuer: unusable discovery document: {exc}", field="issuer") from None
            jwks = await self._json(http, str(meta["jwks_uri"]), "key set (jwks_uri)")
        found = Provider(issuer=issuer, metadata=meta, jwks=jwks, fetched_at=time.monotonic())
        self._providers[issuer] = found
        return found

    async def _json(self, http: httpx.AsyncClient, url: str, what: str) -> dict[str, Any]:
        try:
            resp = await http.get(url, headers={"Accept": "application/json"})
            resp.raise_for_status()
            data = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise IdpUnavailable(
                f"identity provider: could not read its {what} ({type(exc).__name__})"
            ) from None
        if not isinstance(data, dict):
            raise IdpUnavailable(f"identity provider: its {what} is not a JSON object")
        return data

    def authorization_url(
        self, provider: Provider, *, client_id: str, redirect_uri: str, scopes: list[str]
    ) -> tuple[str, str, str, str]:
        """(url, state, nonce, code_verifier) for a new sign-in."""
        state, nonce, verifier = generate_token(43), generate_token(43), generate_token(64)
        client = AsyncOAuth2Client(
            client_id=client_id,
            scope=" ".join(scopes),
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
        )
        url, _ = client.create_authorization_url(
            provider.metadata["authorization_endpoint"], state=state, code_verifier=verifier, nonce=nonce
        )
        return str(url), state, nonce, verifier

    async def redeem(
        self,
        provider: Provider,
        *,
        client_id: str,
        client_secret: str,
        code: str,
        code_verifier: str,
        redirect_uri: str,
    ) -> dict[str, Any]:
        """The token endpoint's answer for `code` (with the PKCE verifier and the client's secret)."""
        async with AsyncOAuth2Client(
            client_id=client_id,
            client_secret=client_secret,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            timeout=self.timeout,
        ) as client:
            try:
                token = await client.fetch_token(
                    provider.metadata["token_endpoint"], code=code, code_verifier=code_verifier
                )
            except httpx.HTTPError as exc:
                raise IdpUnavailable(
                    f"identity provider: token endpoint failed ({type(exc).__name__})"
                ) from None
            except Exception as exc:  # Authlib's OAuthError: the provider refused the code
                detail = (
                    getattr(exc, "description", None) or getattr(exc, "error", None) or type(exc).__name__
                )
                raise SsoRefused(
                    f"the identity provider refused the code: {str(detail)[:200]}", code="sso_code_refused"
                ) from None
        if not isinstance(token, dict) or not token.get("id_token"):
            raise SsoRefused(
                "the identity provider answered without an ID token", code="sso_id_token_invalid"
            )
        return dict(token)

    async def verify_id_token(
        self, provider: Provider, id_token: str, *, client_id: str, nonce: str, access_token: str | None
    ) -> dict[str, Any]:
        """The ID token's claims, once its signature, issuer, audience, expiry and nonce check out."""
        decoded = await self._decode(provider, id_token)
        options: dict[str, Any] = {
            "iss": {"essential": True, "value": provider.issuer},
            "aud": {"essential": True, "value": client_id},
        }
        params: dict[str, Any] = {"nonce": nonce, "client_id": client_id}
        if access_token:
            params["access_token"] = access_token
        claims = CodeIDToken(decoded.claims, decoded.header, options, params)
        try:
            claims.validate(leeway=LEEWAY_SECONDS)
        except ExpiredTokenError:
            raise _bad("the ID token has expired") from None
        except MissingClaimError as exc:
            raise _bad(f"the ID token lacks the {_claim(exc)} claim") from None
        except InvalidClaimError as exc:
            raise _bad(_invalid_claim(_claim(exc), claims, provider.issuer, client_id)) from None
        except JoseError as exc:
            raise _bad(f"the ID token's claims do not check out ({exc.error})") from None
        return dict(claims)

    async def _decode(self, provider: Provider, id_token: str) -> Any:
        registry = JWSRegistry(algorithms=list(ID_TOKEN_ALGORITHMS))
        for attempt in range(2):
            try:
                keys = KeySet.import_key_set(provider.jwks)  # type: ignore[arg-type]
                return jwt.decode(id_token, keys, registry=registry)
            except InvalidKeyIdError:
                if attempt == 0:  # the provider may have rotated its key: refetch once
                    provider = await self.provider(provider.issuer, fresh=True)
                    continue
                raise _bad("the ID token is signed by a key the identity provider does not publish") from None
            except UnsupportedAlgorithmError:
                raise _bad(
                    "the ID token is not signed with an accepted algorithm (unsigned or symmetric tokens are "
                    f"refused; accepted: {', '.join(ID_TOKEN_ALGORITHMS)})"
                ) from None
            except BadSignatureError:
                raise _bad("the ID token's signature does not verify") from None
            except (JoseError, ValueError) as exc:
                raise _bad(f"the ID token is malformed ({type(exc).__name__})") from None
        raise AssertionError("unreachable")


def _bad(message: str) -> SsoRefused:
    return SsoRefused(message, code="sso_id_token_invalid")


def _claim(exc: JoseError) -> str:
    return str(getattr(exc, "claim", None) or exc.description or "")


def _invalid_claim(claim: str, claims: dict[str, Any], issuer: str, client_id: str) -> str:
    if claim == "iss":
        return (
            f"the ID token's issuer {str(claims.get('iss'))[:200]!r} is not the configured issuer {issuer!r}"
        )
    if claim == "aud":
        return f"the ID token's audience does not include this client ({client_id!r})"
    if claim == "nonce":
        return "the ID token's nonce does not match this sign-in (a replayed or foreign token)"
    return f"the ID token's {claim} claim is invalid"
