"""Pure logic: templating, TOTP, masking, Chromium discovery, settings and the saved identity."""

from __future__ import annotations

import asyncio
import logging
import stat
from pathlib import Path

import pytest
from browserfleet_core.observability import SecretMask
from browserfleet_worker.browser import BrowserNotFound, find_chromium, launch_flags
from browserfleet_worker.presence import Identity, WorkerConfigError, load_identity, save_identity
from browserfleet_worker.secret_values import Masker, MaskRegistry, SecretUnavailable, render, totp
from browserfleet_worker.settings import WorkerSettings


def test_render_substitutes_released_values_only() -> None:
    assert render("a {{ secrets.A }} b {{secrets.B}}", {"A": "1", "B": "2"}) == "a 1 b 2"
    with pytest.raises(SecretUnavailable, match="secret C was not released"):
        render("{{ secrets.C }}", {"A": "1"})


def test_totp_matches_rfc6238_vector() -> None:
    # RFC 6238 appendix B, SHA-1 seed "12345678901234567890", T=59 -> 94287082 (8 digits)
    seed = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
    assert totp(seed, at=59, digits=8) == "94287082"
    assert render("{{ secrets.OTP.totp }}", {"OTP": seed}).isdigit()
    with pytest.raises(SecretUnavailable, match="base32"):
        totp("not base32 !!")


def test_masker_masks_nested_values_and_url_encodings() -> None:
    m = Masker(["p@ss word", "p@ss"])
    out = m.deep({"a": ["x p@ss word y", {"u": "http://h/?q=p%40ss+word"}], "n": 3})
    assert out == {"a": ["x *** y", {"u": "http://h/?q=***"}], "n": 3}


def test_mask_registry_keeps_a_value_masked_while_any_task_holds_it() -> None:
    reg = MaskRegistry()
    first = reg.register(["shared-value-1"])
    second = reg.register(["shared-value-1"])
    reg.release(first)
    assert SecretMask.mask("x shared-value-1") == "x ***"
    reg.release(second)
    assert SecretMask.mask("x shared-value-1") == "x shared-value-1"


def test_find_chromium_prefers_configured_then_playwright_then_system(tmp_path: Path) -> None:
    exe = tmp_path / "chrome"
    exe.write_text("")
    missing = str(tmp_path / "missing")
    assert find_chromium(str(exe), None, missing) == str(exe)
    assert find_chromium(None, str(exe), missing) == str(exe)
    assert find_chromium(None, missing, str(exe)) == str(exe)
    with pytest.raises(BrowserNotFound, match="playwright install chromium"):
        find_chromium(None, missing, missing)
    with pytest.raises(BrowserNotFound, match="BROWSER_EXECUTABLE"):
        find_chromium(missing, str(exe), str(exe))


def test_no_sandbox_flag_only_when_the_sandbox_is_off() -> None:
    assert "--no-sandbox" in launch_flags(sandbox=False)
    assert "--no-sandbox" not in launch_flags(sandbox=True)


def test_settings_read_comma_separated_tags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NATS_URL", "nats://127.0.0.1:1")
    monkeypatch.setenv("WORKER_TAGS", "gpu, eu-west,,")
    monkeypatch.setenv("BROWSER_EXECUTABLE", "/opt/chrome")
    s = WorkerSettings()
    assert s.worker_tags == ["gpu", "eu-west"]
    assert s.browser_executable == "/opt/chrome"
    assert s.worker_slots == 2
    assert s.service_name == "worker"


def test_saved_identity_is_private_and_round_trips(tmp_path: Path) -> None:
    path = save_identity(tmp_path / "state", Identity("sk_worker_x", "w1", "gpu"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_identity(tmp_path / "state") == Identity("sk_worker_x", "w1", "gpu")
    path.write_text("{}")
    with pytest.raises(WorkerConfigError, match="not a saved worker identity"):
        load_identity(tmp_path / "state")


def test_log_lines_cannot_carry_a_registered_secret() -> None:
    reg = MaskRegistry()
    held = reg.register(["tops3cret"])
    try:
        record = logging.LogRecord("t", logging.INFO, __file__, 1, "typed %s", ("tops3cret",), None)
        SecretMask().filter(record)
        assert record.getMessage() == "typed ***"
    finally:
        reg.release(held)


async def test_a_ring_that_beats_its_message_is_followed_by_quick_reprobes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """JetStream offers a stored message to its consumers asynchronously, so the doorbell can ring before a
    no-wait pull sees the new dispatch. The pull loop must probe again shortly, not sleep IDLE_WAIT_SECONDS
    (made an hour here: without the re-probes this test would hit its cap)."""
    from browserfleet_core import taskpull
    from browserfleet_worker import consumer as worker_consumer

    monkeypatch.setattr(taskpull, "IDLE_WAIT_SECONDS", 3600.0)
    worker = worker_consumer.TaskConsumer(
        None,  # type: ignore[arg-type]  # never used: the pulls are the fake below
        "default",
        lambda _msg: asyncio.sleep(0),
        slots=1,
        lease_extend_seconds=30.0,
    )
    probes: list[str] = []
    arrived = asyncio.Event()
    message = object()

    async def pull(durable: str) -> object | None:
        if durable != "pool-default-normal":
            return None
        probes.append(durable)
        if len(probes) == 1:  # the first probe finds nothing; then the ring comes ahead of the message
            asyncio.get_running_loop().call_later(0.05, worker.doorbell.set)
            return None
        if len(probes) == 2:
            asyncio.get_running_loop().call_later(0.01, arrived.set)
            return None
        return message if arrived.is_set() else None

    worker.pull_no_wait = pull  # type: ignore[method-assign, assignment]  # a stand-in message, not a Msg
    got = await asyncio.wait_for(worker.next_message(asyncio.Event()), timeout=10)
    assert got is message and len(probes) >= 3
