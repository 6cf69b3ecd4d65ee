"""The live view's contracts: which tasks may hand off to a person, which secrets count as shown on a page, and
the viewer's client messages (a takeover's input is bounded, unknown fields are refused)."""

from __future__ import annotations

from typing import Any

import pytest
from browserfleet_contracts.live import ContinueInput, Input, KeyInput, MouseInput
from browserfleet_contracts.steps import handoffs
from browserfleet_contracts.tasks import TaskCreate
from pydantic import TypeAdapter, ValidationError

HANDOFF = {"action": "handoff", "message": "solve the captcha"}
NAVIGATE = {"action": "navigate", "url": "https://example.test/"}
TYPED = {"action": "fill", "selector": "#pw", "value": "{{ secrets.PW }}"}
CLIENT: TypeAdapter[Any] = TypeAdapter(Input)


def task(**body: Any) -> TaskCreate:
    return TaskCreate.model_validate(body)


def test_handoffs_are_counted_inside_if_and_repeat() -> None:
    nested = [NAVIGATE, {"action": "if", "selector": "#c", "then": [HANDOFF], "otherwise": [HANDOFF]}]
    nested.append({"action": "repeat", "next": "#next", "steps": [HANDOFF]})
    assert handoffs(task(steps=nested).spec().steps) == 3
    assert handoffs(task(steps=[NAVIGATE]).spec().steps) == 0


def test_a_task_that_types_secrets_cannot_hand_off() -> None:
    with pytest.raises(ValidationError, match="cannot hand off to a person"):
        task(steps=[NAVIGATE, TYPED, HANDOFF])
    with pytest.raises(ValidationError, match="cannot hand off to a person"):
        task(steps=[{"action": "navigate", "url": "https://example.test/?k={{ secrets.KEY }}"}, HANDOFF])
    with pytest.raises(ValidationError, match="cannot hand off to a person"):
        task(steps=[NAVIGATE, {"action": "if", "selector": "#c", "then": [HANDOFF]}, TYPED])
    # a proxy's password never reaches the page
    proxied = {"server": "http://proxy.test:3128", "username": "u", "password": "{{ secrets.PROXY_PW }}"}
    assert task(steps=[NAVIGATE, HANDOFF], proxy=proxied).spec().page_secret_names() == set()


def test_page_secrets_leave_out_the_proxy_and_the_llm_key() -> None:
    agent = task(goal="find the price", agent={"api_key_secret": "LLM_KEY"}).spec()
    assert agent.secret_names() == {"LLM_KEY"} and agent.page_secret_names() == set()
    typed = task(goal="sign in with {{ secrets.PW }}", secrets=["OTP"], agent={"api_key_secret": "LLM_KEY"})
    assert typed.spec().page_secret_names() == {"PW", "OTP"}


def test_client_messages() -> None:
    mouse = {"type": "INPUT", "kind": "mouse", "event": "mousePressed", "x": 1, "y": 2, "button": "left"}
    assert isinstance(CLIENT.validate_python(mouse), MouseInput)
    key = {"type": "INPUT", "kind": "key", "event": "keyDown", "key": "Enter", "code": "Enter"}
    assert isinstance(CLIENT.validate_python(key), KeyInput)
    assert isinstance(CLIENT.validate_python({"type": "INPUT", "kind": "continue"}), ContinueInput)
    for bad in (
        {**mouse, "x": -1},
        {**mouse, "y": 1e9},
        {**mouse, "button": "fourth"},
        {**mouse, "click_count": 9},
        {**mouse, "modifiers": 16},
        {**key, "text": "too long"},
        {**key, "key": "k" * 33},
        {"type": "INPUT", "kind": "continue", "extra": 1},
        {"type": "INPUT", "kind": "touch"},
        {"type": "INPUT"},
    ):
        with pytest.raises(ValidationError):
            CLIENT.validate_python(bad)
