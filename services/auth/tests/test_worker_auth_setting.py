"""How long auth trusts a verified worker key is WORKER_AUTH_CACHE_SECONDS, the knob the scheduler and vault
share (it was a constant of auth's wiring): auth keeps its 5 s default, takes the operator's value, and
refuses a negative one."""

from __future__ import annotations

import pytest
from browserfleet_auth.app import build
from browserfleet_auth.settings import AuthSettings
from pydantic import ValidationError


def test_the_worker_key_cache_is_a_setting(nats_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORKER_AUTH_CACHE_SECONDS", raising=False)
    assert build(AuthSettings(nats_url=nats_url)).runtime.worker_keys.ttl == 5.0  # auth's own default
    monkeypatch.setenv("WORKER_AUTH_CACHE_SECONDS", "7.5")
    assert build(AuthSettings(nats_url=nats_url)).runtime.worker_keys.ttl == 7.5
    monkeypatch.setenv("WORKER_AUTH_CACHE_SECONDS", "0")  # ask worker-gateway every time
    assert build(AuthSettings(nats_url=nats_url)).runtime.worker_keys.ttl == 0
    monkeypatch.setenv("WORKER_AUTH_CACHE_SECONDS", "-1")
    with pytest.raises(ValidationError, match="worker_auth_cache_seconds"):
        AuthSettings(nats_url=nats_url)
