"""The `svc.auth.*` request/reply subjects: each runs one logic call in a transaction of its own. What a
subject does, takes and answers is said once, in its `browserfleet_contracts.endpoints.Auth` declaration:
a subject that is that call alone is `serve`d with it; one that also announces the change spells itself out."""

from __future__ import annotations

from browserfleet_contracts import endpoints
from browserfleet_contracts.auth import (
    ApiKeyPublic,
    LoginCommand,
    OrgPolicy,
    RefreshRequest,
    TokenPair,
    UpdateUserRequest,
    UserDetail,
    WorkerOrgPolicyRequest,
)
from browserfleet_contracts.common import Ack, ById, OrgScoped
from browserfleet_contracts.mfa import (
    LoginReply,
    MfaPolicy,
    ResetUserMfaRequest,
    UpdateMfaPolicyRequest,
    UserMfaRequest,
)
from browserfleet_contracts.sso import SsoExchangeCommand
from browserfleet_core.lean import LeanRpc
from browserfleet_core.messaging import rpc_router
from faststream.nats import NatsRouter

from . import api_keys, audit, mfa, org_policy, organizations, sessions, sso, sso_flow, tokens, users
from .runtime import AuthRuntime

# Login spends most of its time in argon2 on a worker thread; a few in flight keep both cores busy
# without letting a burst exhaust the database pool.
MAX_IN_FLIGHT = 8
# The call entries in hand at once are one statement (`RequestAuditBatch`), so more of them in hand costs no
# more connections and makes each statement carry more of a burst.
AUDIT_IN_FLIGHT = 64

Auth = endpoints.Auth


def build_lean(rt: AuthRuntime, *, app_name: str = "auth") -> LeanRpc:
    """The subject every state-changing call reaches twice (its audit entry opened, then closed), served by a
    `LeanResponder` rather than a FastStream subscriber; the same replies and errors."""
    lean = LeanRpc(max_concurrency=AUDIT_IN_FLIGHT, app_name=app_name)
    lean.route(Auth.RECORD_REQUEST)(lambda body: audit.record_request_at_once(rt.db, rt.config.now(), body))
    return lean


def create_router(rt: AuthRuntime) -> NatsRouter:
    router = rpc_router()
    serve = router.serve
    cfg = rt.config

    @router.handle(Auth.LOGIN, max_workers=MAX_IN_FLIGHT)
    async def login(body: LoginCommand) -> LoginReply:
        reply = await rt.run_committing_failures(
            sessions.login, cfg, body.email, body.password, client_ip=body.client_ip
        )
        return LoginReply(reply)

    serve(
        Auth.REFRESH,
        lambda body: rt.run_committing_failures(sessions.refresh, cfg, body.refresh_token),
        max_workers=MAX_IN_FLIGHT,
    )

    @router.handle(Auth.LOGOUT, max_workers=MAX_IN_FLIGHT)
    async def logout(body: RefreshRequest) -> Ack:
        await rt.db.run(sessions.logout, cfg, body.refresh_token)
        return Ack()

    serve(
        Auth.ME,
        lambda body: rt.db.run(sessions.me, user_id=body.user_id, org_id=body.org_id),
        max_workers=MAX_IN_FLIGHT,
    )
    serve(Auth.JWKS, lambda body: rt.db.run(tokens.jwks, cfg), max_workers=MAX_IN_FLIGHT)
    serve(
        Auth.BOOTSTRAP,
        lambda body: rt.db.run(organizations.bootstrap, org_name=body.org_name, admin_email=body.admin_email),
    )
    serve(Auth.CREATE_API_KEY, lambda body: rt.db.run(api_keys.create_api_key, cfg, body.actor, body.key))
    serve(Auth.LIST_API_KEYS, lambda body: rt.db.run(api_keys.list_api_keys, body.actor))

    @router.handle(Auth.REVOKE_API_KEY)
    async def revoke_api_key(body: ById) -> ApiKeyPublic:
        key = await rt.db.run(api_keys.revoke_api_key, cfg, body.actor, body.id)
        await rt.announce_revoked(key)
        return key

    serve(
        Auth.AUTHENTICATE_API_KEY,
        lambda body: rt.db.run(api_keys.authenticate_api_key, cfg, body.key),
        max_workers=MAX_IN_FLIGHT,
    )
    serve(Auth.LIST_ORGANIZATIONS, lambda body: rt.db.run(organizations.list_organizations, body.actor))
    serve(
        Auth.CREATE_ORGANIZATION,
        lambda body: rt.db.run(organizations.create_org, cfg, body.actor, body.organization),
    )
    serve(Auth.UPDATE_ORGANIZATION, lambda body: rt.db.run(organizations.update_org, cfg, body))

    @router.handle(Auth.DELETE_ORGANIZATION)
    async def delete_organization(body: ById) -> Ack:
        await rt.db.run(organizations.delete_org, cfg, rt.relay, body.actor, body.id)
        await rt.announce_org(body.id)
        return Ack()

    serve(Auth.LIST_USERS, lambda body: rt.db.run(users.list_users, body.actor))
    serve(
        Auth.CREATE_USER,
        lambda body: rt.db.run(users.invite_user, cfg, body.actor, body.user),
        max_workers=MAX_IN_FLIGHT,
    )

    @router.handle(Auth.UPDATE_USER)
    async def update_user(body: UpdateUserRequest) -> UserDetail:
        user = await rt.db.run(users.update_user, cfg, body)
        await rt.announce_user(user.org_id, user.id)
        return user

    serve(
        Auth.USER_STATE,
        lambda body: rt.db.run(users.user_state, body.user_id, body.org_id),
        max_workers=MAX_IN_FLIGHT,
    )
    serve(Auth.LIST_AUDIT, lambda body: rt.db.run(audit.list_audit, body))
    serve(Auth.GET_ORG_POLICY, lambda body: rt.db.run(org_policy.get_org_policy, body.actor))
    serve(
        Auth.UPDATE_ORG_POLICY,
        lambda body: rt.db.run(org_policy.update_org_policy, cfg, body.actor, body.policy),
    )

    @router.handle(Auth.ORG_POLICY, max_workers=MAX_IN_FLIGHT)
    async def worker_org_policy(body: WorkerOrgPolicyRequest) -> OrgPolicy:
        worker = await rt.worker_keys.verify(body.worker_key)  # before the transaction: no connection held
        return await rt.db.run(org_policy.org_policy_for_worker, worker, body.org_id)

    # --- MFA ------------------------------------------------------------------------------------------
    serve(
        Auth.MFA_VERIFY,
        lambda body: rt.run_committing_failures(mfa.verify, cfg, body),
        max_workers=MAX_IN_FLIGHT,
    )
    serve(Auth.MFA_ENROL_CHALLENGE, lambda body: rt.db.run(mfa.enrol_with_challenge, cfg, body.challenge))
    serve(Auth.MFA_ENROL, lambda body: rt.db.run(mfa.enrol, cfg, body.actor))

    @router.handle(Auth.MFA_CONFIRM)
    async def mfa_confirm(body: UserMfaRequest) -> TokenPair:
        pair = await rt.run_committing_failures(mfa.confirm, cfg, body.actor, body.code)
        await rt.announce_user(body.actor.org_id, body.actor.user_id or "")
        return pair

    serve(Auth.MFA_STEP_UP, lambda body: rt.run_committing_failures(mfa.step_up, cfg, body.actor, body.code))
    serve(Auth.MFA_STATUS, lambda body: rt.db.run(mfa.status, body.actor))
    serve(Auth.GET_MFA_POLICY, lambda body: rt.db.run(mfa.get_policy, body.actor))

    @router.handle(Auth.UPDATE_MFA_POLICY)
    async def update_mfa_policy(body: UpdateMfaPolicyRequest) -> MfaPolicy:
        policy = await rt.db.run(mfa.update_policy, cfg, body.actor, body.policy)
        await rt.announce_org(body.actor.org_id)
        return policy

    @router.handle(Auth.RESET_USER_MFA)
    async def reset_user_mfa(body: ResetUserMfaRequest) -> Ack:
        await rt.db.run(mfa.reset_user, cfg, body.actor, body.id)
        await rt.announce_user(body.actor.org_id, body.id)
        return Ack()

    # --- SSO ------------------------------------------------------------------------------------------
    serve(Auth.GET_SSO_SETTINGS, lambda body: rt.db.run(sso.get_settings, body.actor))
    serve(Auth.PUT_SSO_SETTINGS, lambda body: sso_flow.put_settings(rt, body.actor, body.settings))

    @router.handle(Auth.DELETE_SSO_SETTINGS)
    async def delete_sso_settings(body: OrgScoped) -> Ack:
        await rt.db.run(sso.delete_settings, cfg, body.actor)
        return Ack()

    serve(Auth.SSO_START, lambda body: sso_flow.start(rt, body), max_workers=MAX_IN_FLIGHT)
    serve(Auth.SSO_CALLBACK, lambda body: sso_flow.callback(rt, body), max_workers=MAX_IN_FLIGHT)

    @router.handle(Auth.SSO_EXCHANGE, max_workers=MAX_IN_FLIGHT)
    async def sso_exchange(body: SsoExchangeCommand) -> LoginReply:
        return LoginReply(await rt.db.run(sso.exchange, cfg, body.code))

    return router
