"""The auth service's subjects (`svc.auth.*`)."""

from __future__ import annotations

from ..auth import (
    ApiKeyCreated,
    ApiKeyPrincipal,
    ApiKeyPublic,
    AuditEntry,
    AuthenticateApiKeyRequest,
    BootstrapReply,
    BootstrapRequest,
    CreateApiKeyRequest,
    CreateOrganizationRequest,
    CreateUserRequest,
    Jwks,
    ListAuditRequest,
    LoginCommand,
    MePublic,
    MeRequest,
    OrganizationCreated,
    OrganizationDetail,
    OrgPolicy,
    RefreshRequest,
    RequestAudit,
    TokenPair,
    UpdateOrganizationRequest,
    UpdateOrgPolicyRequest,
    UpdateUserRequest,
    UserCreated,
    UserDetail,
    UserState,
    UserStateRequest,
    WorkerOrgPolicyRequest,
)
from ..bus import AUTH, VAULT, WORKER
from ..common import Ack, ById, Empty, OrgScoped, Page
from ..mfa import (
    LoginReply,
    MfaEnrolRequest,
    MfaPolicy,
    MfaStatus,
    MfaVerifyCommand,
    ResetUserMfaRequest,
    TotpEnrolment,
    UpdateMfaPolicyRequest,
    UserMfaRequest,
)
from ..sso import (
    PutSsoSettingsRequest,
    SsoCallbackRequest,
    SsoExchangeCommand,
    SsoHandoff,
    SsoSettingsPublic,
    SsoStartReply,
    SsoStartRequest,
)
from .base import Service, _ep


class Auth(Service, queue=AUTH):
    LOGIN = _ep(
        LoginCommand,
        LoginReply,
        "Email and password to an access token (Ed25519 JWT) and a rotating refresh token, or to an MFA "
        "challenge when a second factor applies. Repeated failures per account or client address slow down "
        "and then lock (429 `login_throttled`); an SSO-only organization's users are refused a password "
        "sign-in (403 `sso_required`) unless designated break-glass admin.",
    )
    REFRESH = _ep(
        RefreshRequest,
        TokenPair,
        "Rotate a refresh token; presenting a spent one revokes its whole family (401).",
    )
    LOGOUT = _ep(RefreshRequest, Ack, "Revoke the refresh token's family. Idempotent.")
    ME = _ep(MeRequest, MePublic, "The authenticated user and their organization.")
    JWKS = _ep(
        Empty,
        Jwks,
        "Public keys verifying access tokens, including recently retired ones.",
    )
    BOOTSTRAP = _ep(
        BootstrapRequest,
        BootstrapReply,
        "First start: create the first organization and its admin; the password is in this reply only.",
        callers=(),
    )
    CREATE_API_KEY = _ep(
        CreateApiKeyRequest,
        ApiKeyCreated,
        "A new `sk_api_…` key for the actor's org; the key is in this reply only (stored as SHA-256).",
    )
    LIST_API_KEYS = _ep(
        OrgScoped,
        list[ApiKeyPublic],
        "The org's API keys, without the keys themselves.",
    )
    REVOKE_API_KEY = _ep(
        ById,
        ApiKeyPublic,
        "Revoke a key (idempotent); every gateway is told on `auth.api_key.revoked` after the commit.",
    )
    AUTHENTICATE_API_KEY = _ep(
        AuthenticateApiKeyRequest,
        ApiKeyPrincipal,
        "The org, key id, scopes and plan of a valid key; 401 for an unknown, revoked or expired one.",
    )
    LIST_ORGANIZATIONS = _ep(
        OrgScoped,
        list[OrganizationDetail],
        "Every organization (platform operator only).",
    )
    CREATE_ORGANIZATION = _ep(
        CreateOrganizationRequest,
        OrganizationCreated,
        "A new organization (platform operator only); slugs are unique after NFKC and case folding.",
    )
    UPDATE_ORGANIZATION = _ep(
        UpdateOrganizationRequest,
        OrganizationDetail,
        "Rename, re-slug, change plan or settings (platform operator only; 404 for anyone else).",
    )
    DELETE_ORGANIZATION = _ep(
        ById,
        Ack,
        "Remove an organization with its users and keys; emits `organization.deleted` on EVENTS.",
    )
    LIST_USERS = _ep(OrgScoped, list[UserDetail], "The org's users (admins).")
    CREATE_USER = _ep(
        CreateUserRequest,
        UserCreated,
        "Create or invite (no password: a one-time password is in this reply only) a user of the org.",
    )
    UPDATE_USER = _ep(
        UpdateUserRequest,
        UserDetail,
        "Change a user's name or role, deactivate (ends their sessions) or reactivate them.",
    )
    LIST_AUDIT = _ep(
        ListAuditRequest,
        Page[AuditEntry],
        "The org's audit log, newest first, filtered by action, outcome, actor, target, request and time, "
        "keyset-paginated.",
    )
    RECORD_REQUEST = _ep(
        RequestAudit,
        Ack,
        "The gateway's audit entry of one state-changing call: `begin` before the change, `end` with its "
        "answer (append-only: nothing deletes an entry).",
    )
    GET_ORG_POLICY = _ep(
        OrgScoped,
        OrgPolicy,
        "The actor's organization's policy (any member may read it).",
    )
    UPDATE_ORG_POLICY = _ep(
        UpdateOrgPolicyRequest,
        OrgPolicy,
        "Replace the actor's organization's policy (admins); audit-logged.",
    )
    ORG_POLICY = _ep(
        WorkerOrgPolicyRequest,
        OrgPolicy,
        "The policy a worker enforces for a task of `org_id`; the worker key is verified with worker-gateway "
        "(cached briefly). 401 for an unknown key, 404 for an org the worker may not serve.",
        callers=(WORKER, VAULT),
    )
    USER_STATE = _ep(
        UserStateRequest,
        UserState,
        "Whether a user is active, their role now, the time before which their tokens no longer count and "
        "whether MFA applies: what the gateway checks (cached briefly) on each request with an access token.",
    )
    # --- MFA (TOTP) ---------------------------------------------------------------------------------------
    MFA_VERIFY = _ep(
        MfaVerifyCommand,
        TokenPair,
        "Complete a sign-in's MFA challenge with a TOTP or recovery code. A code is good once (a code of the "
        "same time step again is refused), within one step of now; failures are throttled like passwords.",
    )
    MFA_ENROL_CHALLENGE = _ep(
        MfaEnrolRequest,
        TotpEnrolment,
        "Enrol during sign-in, when the organization requires MFA and the user has none (the challenge is "
        "the credential); the first code, sent to mfa_verify, confirms it.",
    )
    MFA_ENROL = _ep(
        UserMfaRequest,
        TotpEnrolment,
        "Start TOTP enrolment for the signed-in user: secret, otpauth URI, QR (SVG) and recovery codes.",
    )
    MFA_CONFIRM = _ep(
        UserMfaRequest,
        TokenPair,
        "Confirm enrolment with a first code; answers fresh tokens that carry the second factor.",
    )
    MFA_STEP_UP = _ep(
        UserMfaRequest,
        TokenPair,
        "A fresh second factor for a signed-in user (sensitive actions need a recent one): new tokens.",
    )
    MFA_STATUS = _ep(OrgScoped, MfaStatus, "The signed-in user's MFA enrolment.")
    GET_MFA_POLICY = _ep(OrgScoped, MfaPolicy, "Whether the organization requires MFA.")
    UPDATE_MFA_POLICY = _ep(
        UpdateMfaPolicyRequest,
        MfaPolicy,
        "Require MFA for every member (admins); audit-logged; members without it enrol at next sign-in.",
    )
    RESET_USER_MFA = _ep(
        ResetUserMfaRequest,
        Ack,
        "Remove a user's second factor (admins): lost device and recovery codes. Ends their sessions.",
    )
    # --- SSO (OpenID Connect) -----------------------------------------------------------------------------
    GET_SSO_SETTINGS = _ep(
        OrgScoped,
        SsoSettingsPublic,
        "The organization's identity-provider settings (admins); 404 when none.",
    )
    PUT_SSO_SETTINGS = _ep(
        PutSsoSettingsRequest,
        SsoSettingsPublic,
        "Set the organization's identity provider (admins): issuer, client, owned email domains, role "
        "mapping, SSO-only with a break-glass admin. The issuer's discovery document is fetched and checked.",
    )
    DELETE_SSO_SETTINGS = _ep(
        OrgScoped,
        Ack,
        "Remove the organization's identity provider (admins); password sign-in applies again.",
    )
    SSO_START = _ep(
        SsoStartRequest,
        SsoStartReply,
        "Begin an OIDC sign-in: the IdP's authorization URL with state, nonce and a PKCE challenge "
        "(S256), remembered for ten minutes.",
    )
    SSO_CALLBACK = _ep(
        SsoCallbackRequest,
        SsoHandoff,
        "Finish an OIDC sign-in: redeem the code (with the PKCE verifier and the vault's client secret), "
        "verify the ID token (signature, issuer, audience, expiry, nonce), match or create the user, and "
        "answer a one-time code for sso_exchange. Every refusal names what was wrong and creates nothing.",
    )
    SSO_EXCHANGE = _ep(
        SsoExchangeCommand,
        LoginReply,
        "Turn an SSO one-time code (single use, one minute) into tokens, or an MFA challenge.",
    )
