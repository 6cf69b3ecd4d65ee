"""The vault's subjects (`svc.vault.*`): credentials and browser profiles."""

from __future__ import annotations

from ..bus import AUTH, VAULT, WORKER
from ..common import Ack, ById, OrgScoped
from ..profiles import (
    ListProfilesRequest,
    ProfileAcquireRequest,
    ProfileLease,
    ProfileNameRequest,
    ProfilePublic,
    ProfileSaveReply,
    ProfileSaveRequest,
)
from ..vault import (
    CheckNamesReply,
    CheckNamesRequest,
    CredentialPublic,
    NameRequest,
    PutCredentialRequest,
    ReleaseReply,
    ReleaseRequest,
    SsoClientSecretReply,
    SsoClientSecretRequest,
    UpdateCredentialRequest,
)
from .base import Service, _db_health, _ep


class Vault(Service, queue=VAULT):
    PUT_CREDENTIAL = _ep(
        PutCredentialRequest,
        CredentialPublic,
        "Store or replace a credential (write-only: the value never comes back).",
    )
    LIST_CREDENTIALS = _ep(
        OrgScoped,
        list[CredentialPublic],
        "The org's credentials: names, types and times, never values.",
    )
    DELETE_CREDENTIAL = _ep(NameRequest, Ack, "Remove a credential by name.")
    UPDATE_CREDENTIAL = _ep(
        UpdateCredentialRequest,
        CredentialPublic,
        "Change a credential found by id: its value, type or description (404 for another org's).",
    )
    DELETE_CREDENTIAL_BY_ID = _ep(ById, Ack, "Remove a credential by id.")
    DB_HEALTH = _db_health("vault")
    CHECK_NAMES = _ep(
        CheckNamesRequest,
        CheckNamesReply,
        "Which of the given secret names the org lacks (task creation refuses unknown names).",
    )
    RELEASE = _ep(
        ReleaseRequest,
        ReleaseReply,
        "Secret values for the worker that holds a running task naming them, and for nobody else.",
        callers=(WORKER,),
    )
    SSO_CLIENT_SECRET = _ep(
        SsoClientSecretRequest,
        SsoClientSecretReply,
        "An organization's identity-provider client secret (a credential of type `sso_secret`, and no other "
        "type), for auth to redeem an SSO sign-in; audit-logged as a release. Only auth calls it.",
        callers=(AUTH,),
    )
    PROFILE_ACQUIRE = _ep(
        ProfileAcquireRequest,
        ProfileLease,
        "Lease a named browser profile (cookies, storage) for a running task.",
        callers=(WORKER,),
    )
    PROFILE_SAVE = _ep(
        ProfileSaveRequest,
        ProfileSaveReply,
        "Save a leased profile back, encrypted, after a successful task.",
        callers=(WORKER,),
    )
    LIST_PROFILES = _ep(
        ListProfilesRequest,
        list[ProfilePublic],
        "The org's browser profiles (names and times).",
    )
    DELETE_PROFILE = _ep(ProfileNameRequest, Ack, "Remove a browser profile.")
