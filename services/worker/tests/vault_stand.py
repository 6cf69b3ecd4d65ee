"""What a stand-in vault (another service) answers on `svc.vault.release`: the values sealed to the public key
the worker sent, bound to the task, its attempt and the worker, exactly as the real vault seals them
(browserfleet_vault.delivery), so the worker under test has to open them with its own key pair."""

from __future__ import annotations

from browserfleet_contracts.vault import ReleasedSecrets, ReleaseReply, ReleaseRequest
from browserfleet_core import sealing


def sealed_release(request: ReleaseRequest, values: dict[str, str], worker_id: str) -> bytes:
    """The reply's bytes as NATS carries them; a request without a public key or an attempt is a bug in the
    worker (it always sends both), so it fails the test here."""
    assert request.public_key is not None, "the worker did not say which key it opens with"
    assert request.attempt is not None, "the worker did not say which attempt it runs"
    box = sealing.seal(
        request.public_key,
        ReleasedSecrets(values=values).model_dump_json().encode(),
        sealing.binding(request.task_id, request.attempt, worker_id),
        purpose="release",
    )
    return ReleaseReply(sealed=box).model_dump_json().encode()
