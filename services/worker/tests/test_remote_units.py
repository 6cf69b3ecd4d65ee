"""The remote worker's command line and its platform URL (the rest runs against the whole platform in
tests/seed_api/test_remote_worker.py)."""

from __future__ import annotations

import pytest
from browserfleet_worker.__main__ import parse
from browserfleet_worker.settings import WorkerSettings
from browserfleet_worker.socketlink import socket_url
from pydantic import ValidationError


@pytest.mark.parametrize(
    ("given", "url"),
    [
        ("https://fleet.example.com", "wss://fleet.example.com/workers/ws"),
        ("https://fleet.example.com/", "wss://fleet.example.com/workers/ws"),
        ("http://127.0.0.1:8080/prefix", "ws://127.0.0.1:8080/prefix/workers/ws"),
        ("wss://fleet.example.com/workers/ws", "wss://fleet.example.com/workers/ws"),
    ],
)
def test_the_socket_url_of_a_platform_url(given: str, url: str) -> None:
    assert socket_url(given) == url


def test_not_a_platform_url() -> None:
    with pytest.raises(ValueError, match="not an http"):
        socket_url("fleet.example.com")


def test_the_flags_stand_for_the_settings() -> None:
    command, env = parse(
        ["--gateway", "https://f.example", "--invite", "inv_x", "--slots", "3", "--tags", "a,b"]
    )
    assert command == "run"
    assert env == {
        "GATEWAY_URL": "https://f.example",
        "WORKER_INVITE_CODE": "inv_x",
        "WORKER_SLOTS": "3",
        "WORKER_TAGS": "a,b",
    }
    assert parse([]) == ("run", {})


def test_a_worker_needs_nats_or_the_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NATS_URL", raising=False)
    monkeypatch.delenv("GATEWAY_URL", raising=False)
    with pytest.raises(ValidationError, match=r"set NATS_URL .* or GATEWAY_URL"):
        WorkerSettings()
    assert WorkerSettings(gateway_url="https://f.example").nats_url == ""
    with pytest.raises(ValidationError, match="gateway_url"):
        WorkerSettings(gateway_url="ftp://f.example")
