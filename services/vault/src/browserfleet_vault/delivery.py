"""What leaves the vault for a worker leaves sealed (`browserfleet_core.sealing`), and what comes back is
opened here: a release and a lease are sealed to the public key worker-gateway has registered for the worker
holding the task; a profile's storage state comes back sealed to a key of that lease alone.

The lease's key pair is derived, never stored: HKDF-SHA256 of a master key, with the org, the profile and
the lease token as context. The vault can recompute it when the save arrives (any replica, after a restart),
a new lease token gives an unrelated key, and the public half travels inside the sealed lease, so only the
worker holding the lease learns what to seal to. The box's `to` names the key, which also says which master
key version derived it, so a rotation between lease and save does not lose the save.
"""

from __future__ import annotations

import json
from typing import Any

from browserfleet_contracts.profiles import LeasedProfile
from browserfleet_contracts.sealed import SealedBox
from browserfleet_contracts.vault import ReleasedSecrets
from browserfleet_core import sealing
from browserfleet_core.errors import Invalid
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from .crypto import Keyring

_SAVE_KEY_SALT = b"browserfleet/vault/profile-save-key/v1"


def seal_release(public_key: str, aad: bytes, values: dict[str, str]) -> SealedBox:
    plaintext = ReleasedSecrets(values=values).model_dump_json().encode()
    return sealing.seal(public_key, plaintext, aad, purpose="release")


def _save_key(
    keyring: Keyring, version: int, org_id: str, profile: str, lease_token: str
) -> X25519PrivateKey:
    context = b"\x00".join(part.encode() for part in (org_id, profile, lease_token))
    return sealing.derive_private_key(keyring.keys[version], _SAVE_KEY_SALT, context)


def seal_lease(
    keyring: Keyring,
    public_key: str,
    aad: bytes,
    *,
    org_id: str,
    profile: str,
    lease_token: str,
    state: dict[str, Any] | None,
) -> SealedBox:
    """The stored state (None for a new profile) and this lease's save key, sealed to the worker."""
    save_key = _save_key(keyring, keyring.current_version, org_id, profile, lease_token)
    leased = LeasedProfile(state=state, save_key=sealing.public_key_text(save_key))
    return sealing.seal(public_key, leased.model_dump_json().encode(), aad, purpose="profile_lease")


def open_saved_state(
    keyring: Keyring, aad: bytes, box: SealedBox, *, org_id: str, profile: str, lease_token: str
) -> dict[str, Any]:
    """The storage state a worker sealed back to its lease's key. Anything that does not open, or is not a
    JSON object, is a 422 on `sealed_state`."""
    for version in sorted(keyring.keys, reverse=True):
        key = _save_key(keyring, version, org_id, profile, lease_token)
        if sealing.public_key_text(key) == box.to:
            break
    else:
        raise Invalid(
            "sealed_state is not sealed to this lease's save key (LeasedProfile.save_key)",
            field="sealed_state",
            code="sealed_state_refused",
        )
    try:
        data = sealing.open(key, box, aad, purpose="profile_save")
    except sealing.SealError as exc:
        raise Invalid(f"sealed_state: {exc}", field="sealed_state", code="sealed_state_refused") from None
    try:
        state = json.loads(data)
    except ValueError:
        state = None
    if not isinstance(state, dict):
        raise Invalid(
            "sealed_state must hold a storage state (a JSON object)",
            field="sealed_state",
            code="sealed_state_refused",
        )
    return state
