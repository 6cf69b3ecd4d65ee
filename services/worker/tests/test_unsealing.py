"""The worker's end of sealed releases: only this process's key pair opens a release, and only for the task,
attempt and worker it was sealed for; a release the worker cannot have (no key registered, or a box for
another attempt) fails the task with the cause and runs nothing. The vault is stood in on
`svc.vault.release` (another service) by a responder that seals as the real one does (vault_stand.py), or
answers with the real vault's refusal."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest
from browserfleet_contracts import endpoints
from browserfleet_contracts.tasks import TaskDispatch, TaskSpec
from browserfleet_contracts.vault import ReleaseReply, ReleaseRequest
from browserfleet_core.errors import Forbidden
from browserfleet_core.messaging import ERROR_HEADER
from browserfleet_worker import unsealing
from browserfleet_worker.browser import BrowserHost
from browserfleet_worker.execution import execute
from browserfleet_worker.presence import Identity
from browserfleet_worker.runtime import WorkerRuntime
from browserfleet_worker.settings import WorkerSettings
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from .vault_stand import sealed_release

VALUE = "pw-Worker!unseal-7Q"


def dispatch(task_id: str = "t-seal", attempt: int = 1) -> TaskDispatch:
    return TaskDispatch(
        task_id=task_id,
        org_id="org-seal",
        attempt=attempt,
        priority="normal",
        timeout_seconds=60,
        spec=TaskSpec.model_validate(
            {"steps": [{"action": "fill", "selector": "#password", "value": "{{ secrets.SITE_PW }}"}]}
        ),
    )


def identity(worker_id: str, key: X25519PrivateKey | None = None) -> Identity:
    return Identity(f"sk_worker_{worker_id}", worker_id, "default", key or X25519PrivateKey.generate())


def release_for(holder: Identity, task: TaskDispatch) -> ReleaseReply:
    """What the vault answers the holder for `task`."""
    request = ReleaseRequest(
        task_id=task.task_id,
        worker_key=holder.worker_key,
        names=["SITE_PW"],
        attempt=task.attempt,
        public_key=unsealing.public_key(holder),
    )
    return ReleaseReply.model_validate_json(
        sealed_release(request, {"SITE_PW": VALUE}, holder.worker_id or "")
    )


def test_a_release_opens_for_its_worker_task_and_attempt_only() -> None:
    a, b = identity("w-a"), identity("w-b")
    task = dispatch()
    reply = release_for(a, task)
    assert unsealing.open_release(a, task, reply) == {"SITE_PW": VALUE}

    with pytest.raises(unsealing.SealError, match="another public key"):
        unsealing.open_release(b, task, reply)  # worker B's process: not its box
    # B holding A's key material would still be B: the box is bound to A's worker id
    b_with_a_key = Identity(b.worker_key, b.worker_id, "default", a.private_key)
    with pytest.raises(unsealing.SealError, match="failed authentication"):
        unsealing.open_release(b_with_a_key, task, reply)
    for other in (dispatch(attempt=2), dispatch(task_id="t-other")):
        with pytest.raises(unsealing.SealError, match="failed authentication"):
            unsealing.open_release(a, other, reply)
    # a process without a key pair cannot open anything, and says so
    with pytest.raises(unsealing.SealError, match="no registered key pair"):
        unsealing.open_release(Identity(a.worker_key, a.worker_id, "default"), task, reply)


class Vault:
    """The vault's answer to the next release: `seal_for` (the attempt it seals for), or `refusal`."""

    def __init__(self, nc: NatsClient) -> None:
        self.nc = nc
        self.asked: list[ReleaseRequest] = []
        self.refusal: Forbidden | None = None
        self.seal_for_attempt: int | None = None

    async def release(self, msg: Msg) -> None:
        req = ReleaseRequest.model_validate_json(msg.data)
        self.asked.append(req)
        if self.refusal is not None:
            body = self.refusal.body().model_dump_json().encode()
            await self.nc.publish(msg.reply, body, headers={ERROR_HEADER: str(self.refusal.status)})
            return
        bound = req.model_copy(update={"attempt": self.seal_for_attempt or req.attempt})
        await msg.respond(sealed_release(bound, {"SITE_PW": VALUE}, "w-seal"))


@pytest.fixture
async def vault(nats_url: str) -> AsyncIterator[Vault]:
    nc = await nats.connect(nats_url)
    stand = Vault(nc)
    sub = await nc.subscribe(endpoints.Vault.RELEASE.subject, cb=stand.release)
    yield stand
    await sub.unsubscribe()
    await nc.close()


async def run(nats_url: str, browser: BrowserHost, who: Identity, task: TaskDispatch) -> tuple[str, str]:
    nc = await nats.connect(nats_url)
    try:
        settings = WorkerSettings(nats_url=nats_url, worker_key=who.worker_key, trace_on_failure=False)
        out = await execute(WorkerRuntime.create(settings, nc, browser, who), task)
    finally:
        await nc.close()
    assert VALUE not in repr(out)
    return out.status, out.error_message or ""


async def test_a_worker_without_a_registered_key_fails_the_task_with_the_cause(
    nats_url: str, browser: BrowserHost, vault: Vault
) -> None:
    vault.refusal = Forbidden(
        "worker w-seal has no registered public key, and secrets are only released sealed to one: restart "
        "the worker (it registers a new key pair at every start)",
        code="public_key_missing",
    )
    keyless = Identity("sk_worker_w-seal", "w-seal", "default")
    status, cause = await run(nats_url, browser, keyless, dispatch())
    assert status == "failed"
    assert cause.startswith("secrets not released: worker w-seal has no registered public key"), cause
    assert vault.asked[-1].public_key is None and vault.asked[-1].attempt == 1


async def test_a_release_sealed_for_another_attempt_fails_the_task(
    nats_url: str, browser: BrowserHost, vault: Vault
) -> None:
    holder = identity("w-seal")
    vault.seal_for_attempt = 1  # a stale (or replayed) release of attempt 1, handed to attempt 2
    status, cause = await run(nats_url, browser, holder, dispatch(attempt=2))
    assert status == "failed"
    assert cause.startswith("secrets not opened: a sealed box failed authentication"), cause
    assert vault.asked[-1].public_key == unsealing.public_key(holder)
    assert vault.asked[-1].attempt == 2
