"""Worker contracts: pool subject tokens, worker event ids, the X25519 public key field, invite validation."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from browserfleet_contracts import subjects
from browserfleet_contracts.events import EventType
from browserfleet_contracts.workers import InviteCreate, RegisterRequest, worker_event_id
from pydantic import ValidationError


def test_pool_keys_never_overlap() -> None:
    assert subjects.pool_key("default") == "default"
    assert subjects.pool_key("gpu", "3f2a-org") == "gpu_3f2a-org"
    # an org's pool is never a platform pool's name, nor another org's pool
    assert subjects.pool_key("gpu", "a") != subjects.pool_key("gpu", "b") != subjects.pool_key("gpu")
    for bad_name, org in (
        ("a_b", None),
        ("", None),
        ("a.b", None),
        ("gpu", "x.y"),
        ("gpu", "*"),
        ("gpu", ""),
    ):
        with pytest.raises(ValueError, match="cannot be a"):
            subjects.pool_key(bad_name, org)


def test_worker_event_ids() -> None:
    assert worker_event_id("w1", EventType.WORKER_ONLINE, 1) == "w1:online:1"
    assert worker_event_id("w1", EventType.WORKER_OFFLINE, 2) == "w1:offline:2"
    assert worker_event_id("w1", EventType.WORKER_DRAINING, 3) == "w1:draining:3"
    assert worker_event_id("w1", EventType.WORKER_REVOKED) == "w1:revoked"
    assert (
        subjects.event(subjects.PLATFORM_EVENTS_ORG, EventType.WORKER_OFFLINE)
        == "events.platform.worker.offline"
    )


def test_public_keys_are_32_byte_x25519_keys() -> None:
    raw = bytes(range(32))
    key = base64.urlsafe_b64encode(raw).decode()
    assert RegisterRequest(invite_code="c", public_key=key).public_key == key.rstrip("=")
    for bad in ("x" * 43 + "!", base64.urlsafe_b64encode(bytes(31)).decode(), "A" * 44):
        with pytest.raises(ValidationError) as exc:
            RegisterRequest(invite_code="c", public_key=bad)
        assert exc.value.errors()[0]["loc"] == ("public_key",)


def test_invite_validation_names_the_field() -> None:
    seed = InviteCreate.model_validate({"name": "Marketing Team Worker", "capabilities": ["web-automation"]})
    assert seed.all_tags() == ["web-automation"] and not seed.multi_use
    for body in (
        {"pool": "GPU"},
        {"pool": "a_b"},
        {"max_uses": 2},
        {"ttl_seconds": 30},
        {"expires_at": "2030-01-01T00:00:00"},
        {"expires_at": "2030-01-01T00:00:00Z", "ttl_seconds": 600},
        {"tags": ["Not A Tag"]},
    ):
        with pytest.raises(ValidationError):
            InviteCreate.model_validate(body)
    assert InviteCreate(expires_at=datetime(2030, 1, 1, tzinfo=UTC)).expires_at is not None
