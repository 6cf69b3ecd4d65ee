"""The SDK's own logic, without a server: how error answers become exceptions, when a call refreshes its
token, how request bodies are built, and that the sync and async clients offer the same calls.
The SDK against the real gateway is `services/gateway/tests/test_sdk_client.py`."""

from __future__ import annotations

import inspect
from typing import Any

import httpx
import pytest
from browserfleet_sdk import client as sdk
from browserfleet_sdk._core import ClientCore, task_body, without_none
from browserfleet_sdk.client import (
    TERMINAL_STATUSES,
    AsyncBrowserfleetClient,
    BrowserfleetClient,
    BrowserfleetError,
    TaskTimeout,
)


def answer(status: int, body: Any = None, *, text: str | None = None, **headers: str) -> httpx.Response:
    if text is not None:
        return httpx.Response(status, text=text, headers=headers)
    return httpx.Response(status, json=body, headers=headers)


def api_error(status: int, code: str, message: str = "m", **extra: Any) -> dict[str, Any]:
    return {"error": {"status": status, "code": code, "message": message, **extra}}


# --- error answers ------------------------------------------------------------------------------------
def test_an_api_error_keeps_every_field() -> None:
    detail = [{"loc": ["steps", "0", "url"], "msg": "bad", "type": "value_error"}]
    err = BrowserfleetError.from_response(
        answer(
            422, api_error(422, "validation_error", "steps.0.url: bad", field="steps.0.url", detail=detail)
        )
    )
    assert (err.status, err.code, err.message, err.field, err.detail) == (
        422,
        "validation_error",
        "steps.0.url: bad",
        "steps.0.url",
        detail,
    )
    assert err.retry_after is None
    assert str(err) == "422 validation_error: steps.0.url: bad (steps.0.url)"


def test_str_without_a_field_names_status_code_and_message() -> None:
    err = BrowserfleetError.from_response(answer(404, api_error(404, "not_found", "task t1 not found")))
    assert str(err) == "404 not_found: task t1 not found"


def test_retry_after_is_read_as_seconds_and_a_bad_one_is_ignored() -> None:
    limited = answer(429, api_error(429, "rate_limited"), **{"Retry-After": "2.5"})
    assert BrowserfleetError.from_response(limited).retry_after == 2.5
    garbled = answer(429, api_error(429, "rate_limited"), **{"Retry-After": "soon"})
    assert BrowserfleetError.from_response(garbled).retry_after is None


def test_missing_parts_of_an_api_error_fall_back_to_the_response() -> None:
    err = BrowserfleetError.from_response(answer(409, {"error": {}}))
    assert (err.status, err.code, err.message, err.field) == (409, "error", "Conflict", None)


def test_an_answer_not_in_our_shape_keeps_a_short_text() -> None:
    proxy = BrowserfleetError.from_response(answer(502, text="<html>" + "x" * 500))
    assert (proxy.status, proxy.code) == (502, "http_error")
    assert proxy.message == ("<html>" + "x" * 500)[:200]
    other_json = BrowserfleetError.from_response(answer(500, {"detail": "boom"}))
    assert (other_json.status, other_json.code) == (500, "http_error")
    empty = BrowserfleetError.from_response(answer(503, text=""))
    assert empty.message == "Service Unavailable"


def test_task_timeout_is_a_timeout_and_an_api_error_carrying_the_task() -> None:
    task = {"id": "t1", "status": "running"}
    err = TaskTimeout(task, 1.5)
    assert isinstance(err, TimeoutError)
    assert isinstance(err, BrowserfleetError)
    assert (err.status, err.code, err.task) == (408, "wait_timeout", task)
    assert err.message == "task t1 still running after 1.5s"


def test_check_raises_for_error_answers_only() -> None:
    ok = answer(200, {"a": 1})
    assert ClientCore._check(ok) is ok
    assert ClientCore._check(answer(302, None)) is not None
    with pytest.raises(BrowserfleetError) as caught:
        ClientCore._check(answer(403, api_error(403, "forbidden")))
    assert caught.value.code == "forbidden"
    with pytest.raises(BrowserfleetError):
        ClientCore._check(answer(500, text="oops"))


def test_json_of_a_no_content_answer_is_none() -> None:
    assert ClientCore._json(httpx.Response(204)) is None
    assert ClientCore._json(httpx.Response(200, content=b"")) is None
    assert ClientCore._json(answer(200, [1, 2])) == [1, 2]


# --- tokens -------------------------------------------------------------------------------------------
def test_headers_carry_the_token_and_the_extra_headers() -> None:
    core = ClientCore(None, None)
    assert core._headers({"Idempotency-Key": "k"}) == {"Idempotency-Key": "k"}
    core.token = "abc"
    assert core._headers() == {"Authorization": "Bearer abc"}
    assert core._headers({"X": "1"}) == {"X": "1", "Authorization": "Bearer abc"}


def test_remember_takes_both_tokens_of_a_pair() -> None:
    core = ClientCore("old", "old-refresh")
    pair = {"access_token": "a2", "refresh_token": "r2", "token_type": "bearer"}
    assert core._remember(pair) is pair
    assert (core.token, core.refresh_token) == ("a2", "r2")


@pytest.mark.parametrize(
    ("status", "code", "refresh_token", "path", "expected"),
    [
        (401, "token_expired", "r", "/api/v1/tasks", True),
        (401, "token_expired", None, "/api/v1/tasks", False),  # nothing to refresh with
        (401, "token_expired", "r", "/auth/me", False),  # auth's own answers are final
        (401, "invalid_token", "r", "/api/v1/tasks", False),  # only an expired token is refreshed
        (403, "token_expired", "r", "/api/v1/tasks", False),
    ],
)
def test_only_an_expired_token_outside_auth_is_refreshed(
    status: int, code: str, refresh_token: str | None, path: str, expected: bool
) -> None:
    core = ClientCore("t", refresh_token)
    assert core._should_refresh(answer(status, api_error(status, code)), path) is expected


def test_a_401_without_our_error_shape_is_not_refreshed() -> None:
    core = ClientCore("t", "r")
    assert core._should_refresh(answer(401, text="nope"), "/api/v1/tasks") is False
    assert core._should_refresh(answer(401, ["token_expired"]), "/api/v1/tasks") is False


def test_refresh_without_a_refresh_token_asks_to_log_in() -> None:
    with BrowserfleetClient("http://127.0.0.1:9") as bf, pytest.raises(BrowserfleetError) as caught:
        bf.refresh()
    assert (caught.value.status, caught.value.code) == (401, "no_refresh_token")


async def test_async_refresh_without_a_refresh_token_asks_to_log_in() -> None:
    async with AsyncBrowserfleetClient("http://127.0.0.1:9") as bf:
        with pytest.raises(BrowserfleetError) as caught:
            await bf.refresh()
    assert (caught.value.status, caught.value.code) == (401, "no_refresh_token")


# --- request bodies -----------------------------------------------------------------------------------
def test_task_body_merges_keywords_over_the_task_without_changing_it() -> None:
    task = {"goal": "a", "priority": "low"}
    assert task_body(task, {"priority": "high"}) == {"goal": "a", "priority": "high"}
    assert task == {"goal": "a", "priority": "low"}
    assert task_body(None, {"goal": "b"}) == {"goal": "b"}


@pytest.mark.parametrize("task", [None, {}])
def test_task_body_refuses_an_empty_task(task: dict[str, Any] | None) -> None:
    with pytest.raises(ValueError, match="create_task needs a task"):
        task_body(task, {})


def test_without_none_drops_unset_values_only() -> None:
    assert without_none(a=None, b=0, c="", d=False, e=[]) == {"b": 0, "c": "", "d": False, "e": []}


# --- public surface -----------------------------------------------------------------------------------
def test_the_client_module_exports_its_names() -> None:
    assert set(sdk.__all__) == {
        "TERMINAL_STATUSES",
        "AsyncBrowserfleetClient",
        "BrowserfleetClient",
        "BrowserfleetError",
        "TaskTimeout",
    }
    for name in sdk.__all__:
        assert getattr(sdk, name) is not None
    assert frozenset({"completed", "failed", "cancelled", "timed_out"}) == TERMINAL_STATUSES


def _calls(cls: type) -> dict[str, inspect.Signature]:
    """Every public call of a client class, its own and inherited (the one-request calls come from a mixin),
    as the class hands it out."""
    found = {name: getattr(cls, name) for name in dir(cls) if not name.startswith("_")}
    return {name: inspect.signature(fn) for name, fn in found.items() if inspect.isfunction(fn)}


def test_sync_and_async_clients_offer_the_same_calls() -> None:
    sync, asyn = _calls(BrowserfleetClient), _calls(AsyncBrowserfleetClient)
    assert sync.pop("close") is not None
    assert asyn.pop("aclose") is not None
    assert sorted(sync) == sorted(asyn)
    for name, signature in sync.items():
        assert list(signature.parameters) == list(asyn[name].parameters), name
        for param in signature.parameters.values():
            assert param.default == asyn[name].parameters[param.name].default, (name, param.name)
    for name in asyn:
        fn = getattr(AsyncBrowserfleetClient, name)
        assert inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn), name


def test_sse_events_are_read_line_by_line() -> None:
    from browserfleet_sdk._core import sse_events

    stream = [
        "retry: 2000",
        "",
        ": keep-alive",
        "",
        "id: 7",
        "event: log",
        'data: {"a": 1}',
        "",
        "event: end",
        "data: {}",
        "",
    ]
    assert list(sse_events(stream)) == [("log", '{"a": 1}', "7"), ("end", "{}", None)]
