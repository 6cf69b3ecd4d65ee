"""An SSO sign-in end to end: the steps that talk to the identity provider (and to the vault, for the client
secret) run between short transactions, so no database connection is held across a network round trip."""

from __future__ import annotations

from browserfleet_contracts import endpoints
from browserfleet_contracts.common import Actor
from browserfleet_contracts.sso import (
    SsoCallbackRequest,
    SsoHandoff,
    SsoSettings,
    SsoSettingsPublic,
    SsoStartReply,
    SsoStartRequest,
)
from browserfleet_contracts.vault import SsoClientSecretReply, SsoClientSecretRequest
from browserfleet_core.errors import Invalid, NotFound, ServiceError

from . import sso
from .access import require_admin
from .oidc import IdpUnavailable, SsoRefused
from .runtime import AuthRuntime


async def client_secret(rt: AuthRuntime, org_id: str, name: str) -> str:
    """The org's IdP client secret from the vault (a credential of type `sso_secret`; never cached here)."""
    reply: SsoClientSecretReply = await rt.rpc.call(
        endpoints.Vault.SSO_CLIENT_SECRET, SsoClientSecretRequest(org_id=org_id, name=name)
    )
    return reply.value


async def put_settings(rt: AuthRuntime, actor: Actor, body: SsoSettings) -> SsoSettingsPublic:
    """Checks what can only be checked outside the transaction first: the issuer answers with a matching
    discovery document, and the vault holds the named secret with the right type."""
    require_admin(actor)
    try:
        await rt.oidc.provider(rt.oidc.check_issuer(body.issuer), fresh=True)
    except IdpUnavailable as exc:
        raise Invalid(f"issuer: {exc.message}", field="issuer", code="sso_discovery_failed") from None
    try:
        await client_secret(rt, actor.org_id, body.client_secret_name)
    except ServiceError as exc:
        if exc.status != NotFound.status:  # errors come back from the vault as ServiceError with its status
            raise
        raise Invalid(
            f"client_secret_name: the vault has no credential {body.client_secret_name} of type sso_secret",
            field="client_secret_name",
        ) from None
    return await rt.db.run(sso.put_settings, rt.config, actor, body)


async def start(rt: AuthRuntime, req: SsoStartRequest) -> SsoStartReply:
    cfg = await rt.db.run(sso.settings_for_slug, req.org_slug)
    provider = await rt.oidc.provider(cfg.issuer)
    url, state, nonce, verifier = rt.oidc.authorization_url(
        provider,
        client_id=cfg.client_id,
        redirect_uri=req.redirect_uri,
        scopes=list(cfg.scopes or sso.SCOPES),
    )
    await rt.db.run(
        sso.remember_start,
        rt.config,
        cfg.org_id,
        state=state,
        nonce=nonce,
        code_verifier=verifier,
        redirect_uri=req.redirect_uri,
    )
    return SsoStartReply(authorization_url=url)


async def callback(rt: AuthRuntime, req: SsoCallbackRequest) -> SsoHandoff:
    """Spends the state first (its own transaction), then redeems the code and checks the ID token, then
    matches or creates the user: a refusal at any step leaves no user and no session behind."""
    started, cfg = await rt.db.run(sso.spend_state, rt.config, req.state)
    if req.error:
        why = f": {req.error_description[:200]}" if req.error_description else ""
        raise SsoRefused(
            f"the identity provider refused the sign-in ({req.error[:100]}){why}", code="sso_denied"
        )
    if not req.code:
        raise SsoRefused("the callback carries no authorization code", code="sso_code_refused", status=400)
    provider = await rt.oidc.provider(cfg.issuer)
    token = await rt.oidc.redeem(
        provider,
        client_id=cfg.client_id,
        client_secret=await client_secret(rt, cfg.org_id, cfg.client_secret_name),
        code=req.code,
        code_verifier=started.code_verifier,
        redirect_uri=started.redirect_uri,
    )
    claims = await rt.oidc.verify_id_token(
        provider,
        str(token["id_token"]),
        client_id=cfg.client_id,
        nonce=started.nonce,
        access_token=token.get("access_token"),
    )
    handoff, user = await rt.db.run(sso.admit_identity, rt.config, cfg, claims, req.client_ip)
    await rt.announce_user(user.org_id, user.id)  # a claim mapping may have changed their role
    return handoff
