"""The guard proxy decides a host once per task: later connections of the same task go to the addresses it
checked, without resolving again (a rebinding answer cannot reach the task), while every refusal is decided
and reported again, and another task decides for itself."""

from __future__ import annotations

import ipaddress

import pytest
from browserfleet_worker import netguard
from browserfleet_worker.netguard import Blocked, IPAddress, Policy, Upstream, check, check_upstream

PUBLIC = ipaddress.ip_address("93.184.216.34")
INTERNAL = ipaddress.ip_address("169.254.169.254")


@pytest.fixture
def answers(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """DNS that answers public first and internal ever after (a rebinding server); records each question."""
    asked: list[tuple[str, int]] = []

    async def resolve(host: str, port: int) -> list[IPAddress]:
        asked.append((host, port))
        return [PUBLIC if len(asked) == 1 else INTERNAL]

    monkeypatch.setattr(netguard, "resolve", resolve)
    return asked


async def test_a_task_resolves_a_host_once_and_keeps_the_checked_address(
    answers: list[tuple[str, int]],
) -> None:
    task = Policy()
    assert await check(task, "Example.com.", 443) == [PUBLIC]
    assert await check(task, "example.com", 443) == [PUBLIC]  # not asked again: the rebind never lands
    assert answers == [("example.com", 443)]
    with pytest.raises(Blocked):  # another port is another decision, asked anew (and now internal)
        await check(task, "example.com", 8443)
    other = Policy()
    with pytest.raises(Blocked, match="link-local"):  # another task decides for itself
        await check(other, "example.com", 443)


async def test_refusals_are_decided_and_reported_every_time(answers: list[tuple[str, int]]) -> None:
    reported: list[str] = []
    task = Policy(allowed_domains=["example.com"], on_block=lambda host, reason, url: reported.append(host))
    for _ in range(2):
        with pytest.raises(Blocked):
            await check(task, "evil.test", 80)
    answers.append(("first answer spent", 0))
    for _ in range(2):
        with pytest.raises(Blocked):
            await check(task, "example.com", 80)  # resolves internal: refused, never kept
    assert reported == ["evil.test", "evil.test", "example.com", "example.com"]
    assert task.checked == {}


async def test_the_upstream_proxy_is_checked_once_per_task_apart_from_targets(
    answers: list[tuple[str, int]],
) -> None:
    task = Policy()
    up = Upstream("proxy.example", 3128, None)
    assert await check_upstream(task, up) == [PUBLIC]
    assert await check_upstream(task, up) == [PUBLIC]
    with pytest.raises(Blocked):  # the same name as a target is its own decision
        await check(task, "proxy.example", 3128)
    assert len(answers) == 2
