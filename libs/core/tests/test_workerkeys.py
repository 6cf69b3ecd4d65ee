"""The worker-key cache forgets a removed worker as soon as `workers.revoked` is broadcast (real NATS), not
after its TTL; another worker's entry stays cached."""

from __future__ import annotations

import asyncio

import nats
from browserfleet_contracts import subjects
from browserfleet_contracts.workers import WorkerIdentity, WorkerRevoked
from browserfleet_core.errors import Unauthorized
from browserfleet_core.workerkeys import WorkerKeys

WAIT_CAP = 10.0  # hang protection only


async def test_a_revocation_broadcast_drops_the_worker_at_once(nats_url: str) -> None:
    removed: set[str] = set()
    asked: list[str] = []

    async def lookup(key: str) -> WorkerIdentity:
        asked.append(key)
        worker_id = key.removeprefix("sk_worker_")
        if worker_id in removed:
            raise Unauthorized("this worker was removed", code="worker_revoked")
        return WorkerIdentity(worker_id=worker_id, org_id=None, name=worker_id, tags=[])

    keys = WorkerKeys(lookup, ttl_seconds=3600)  # a TTL that would outlive the test
    nc = await nats.connect(nats_url)
    try:
        sub = await keys.listen(nc)
        await nc.flush()
        assert await keys.identify("sk_worker_w1") is not None
        assert await keys.identify("sk_worker_w2") is not None
        assert asked == ["sk_worker_w1", "sk_worker_w2"]

        removed.add("w1")
        await nc.publish(subjects.WORKER_REVOKED, b"not json")  # ignored, not fatal
        await nc.publish(subjects.WORKER_REVOKED, WorkerRevoked(worker_id="w1").model_dump_json().encode())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_CAP
        while await keys.identify("sk_worker_w1") is not None:
            assert loop.time() < deadline, "the revoked worker stayed cached"
            await asyncio.sleep(0.02)
        assert await keys.identify("sk_worker_w2") is not None
        assert asked.count("sk_worker_w2") == 1, "another worker's entry stays cached"
        await sub.unsubscribe()
    finally:
        await nc.close()


async def test_a_fresh_lookup_replaces_a_cached_identity() -> None:
    """The vault asks past the cache when a worker's public key differs from the cached one (a restart made
    a new key pair): the new answer is returned and cached in place of the old one."""
    keys_by_start = iter(["key-of-run-1", "key-of-run-2"])
    asked: list[str] = []

    async def lookup(key: str) -> WorkerIdentity:
        asked.append(key)
        return WorkerIdentity(worker_id="w1", org_id=None, name="w1", tags=[], public_key=next(keys_by_start))

    keys = WorkerKeys(lookup, ttl_seconds=3600)
    assert (await keys.verify("sk_worker_w1")).public_key == "key-of-run-1"
    assert (await keys.verify("sk_worker_w1")).public_key == "key-of-run-1"
    assert len(asked) == 1
    assert (await keys.verify("sk_worker_w1", fresh=True)).public_key == "key-of-run-2"
    assert (await keys.verify("sk_worker_w1")).public_key == "key-of-run-2"
    assert len(asked) == 2
