"""The worker's end of sealed secrets (`browserfleet_core.sealing`): releases and profile leases come sealed
to this process's X25519 key, bound to the task, its attempt and this worker; a profile's storage state goes
back sealed to the key the lease names. The opened values live only in memory, as long as the task runs."""

from __future__ import annotations

import json
from typing import Any

from browserfleet_contracts.profiles import LeasedProfile, ProfileLease
from browserfleet_contracts.sealed import SealedBox
from browserfleet_contracts.tasks import TaskDispatch
from browserfleet_contracts.vault import ReleasedSecrets, ReleaseReply
from browserfleet_core import sealing
from browserfleet_core.sealing import SealError
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from pydantic import ValidationError

from .presence import Identity

__all__ = ["SealError", "open_lease", "open_release", "public_key", "seal_state"]


def public_key(identity: Identity) -> str | None:
    """This process's registered public key (what the vault must seal to), if it has a key pair."""
    return sealing.public_key_text(identity.private_key) if identity.private_key is not None else None


def _key_and_binding(identity: Identity, task: TaskDispatch) -> tuple[X25519PrivateKey, bytes]:
    if identity.private_key is None or identity.worker_id is None:
        raise SealError("this worker process has no registered key pair to open sealed secrets with")
    return identity.private_key, sealing.binding(task.task_id, task.attempt, identity.worker_id)


def open_release(identity: Identity, task: TaskDispatch, reply: ReleaseReply) -> dict[str, str]:
    key, aad = _key_and_binding(identity, task)
    data = sealing.open(key, reply.sealed, aad, purpose="release")
    try:
        return ReleasedSecrets.model_validate_json(data).values
    except ValidationError:
        raise SealError("a sealed release does not hold secret values") from None


def open_lease(identity: Identity, task: TaskDispatch, lease: ProfileLease) -> LeasedProfile:
    if lease.sealed is None:
        raise SealError(f"the lease on profile {lease.profile} came without its sealed state")
    key, aad = _key_and_binding(identity, task)
    data = sealing.open(key, lease.sealed, aad, purpose="profile_lease")
    try:
        return LeasedProfile.model_validate_json(data)
    except ValidationError:
        raise SealError(f"the sealed lease on profile {lease.profile} does not hold a profile") from None


def seal_state(
    identity: Identity, task: TaskDispatch, leased: LeasedProfile, state: dict[str, Any]
) -> SealedBox:
    """A storage state on its way back to the vault, sealed to the lease's own key."""
    _, aad = _key_and_binding(identity, task)
    data = json.dumps(state, separators=(",", ":")).encode()
    return sealing.seal(leased.save_key, data, aad, purpose="profile_save")
