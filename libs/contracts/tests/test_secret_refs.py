"""`{{ secrets.NAME }}` references: what counts as one, what is refused as malformed, and what a task names."""

from __future__ import annotations

import re

import pytest
from browserfleet_contracts.secret_refs import SECRET_NAME_PATTERN, SECRET_REF, secret_refs
from browserfleet_contracts.tasks import TaskSpec


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("{{ secrets.PASSWORD }}", {"PASSWORD"}),
        ("{{secrets.PASSWORD}}", {"PASSWORD"}),
        ("{{   secrets.api_key   }}", {"api_key"}),
        ("{{ secrets.OTP.totp }}", {"OTP"}),
        ("user={{ secrets.U }}&pw={{ secrets.P }}&again={{ secrets.U }}", {"U", "P"}),
        ("_{{ secrets._x9 }}_", {"_x9"}),
        ("no reference here", set()),
        ("{{ secret.NAME }}", set()),  # not the secrets namespace
        ("{{ secretsNAME }}", set()),
        ("{ secrets.NAME }", set()),
        ("", set()),
    ],
)
def test_references_found(text: str, names: set[str]) -> None:
    assert secret_refs(text) == names


@pytest.mark.parametrize(
    "text",
    [
        "{{ secrets.1NAME }}",  # a name starts with a letter or _
        "{{ secrets.NA-ME }}",
        "{{ secrets.NAME.other }}",  # only .totp
        "{{ secrets.NAME.TOTP }}",
        "{{ secrets }}",
        "{{ secrets. }}",
        "{{ secrets.NAME extra }}",
        "{{ secrets." + "A" * 65 + " }}",
        "fine {{ secrets.OK }} then {{ secrets.b@d }}",
    ],
)
def test_malformed_references_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="malformed secret reference"):
        secret_refs(text)


def ref(name: str) -> str:
    return "{{ secrets." + name + " }}"


def test_the_longest_name_is_64_characters() -> None:
    name = "A" * 64
    assert secret_refs(ref(name)) == {name}


@pytest.mark.parametrize("name", ["A", "_", "a_b_1", "A" * 64, "1A", "", "a-b", "a.b", "A" * 65, "é"])
def test_the_name_pattern_and_the_reference_agree(name: str) -> None:
    """A credential may be stored under a name exactly when a task can reference it."""
    storable = re.fullmatch(SECRET_NAME_PATTERN, name) is not None
    try:
        referenced = secret_refs(ref(name)) == {name}
    except ValueError:
        referenced = False
    assert storable is referenced


def test_the_reference_pattern_captures_name_and_totp() -> None:
    match = SECRET_REF.fullmatch("{{ secrets.SEED.totp }}")
    assert match is not None
    assert match.groups() == ("SEED", ".totp")


def test_a_task_names_every_secret_it_references() -> None:
    spec = TaskSpec.model_validate(
        {
            "kind": "steps",
            "steps": [
                {"action": "navigate", "url": "https://{{ secrets.HOST }}/login"},
                {"action": "fill", "selector": "#pw", "value": "{{ secrets.PASSWORD }}"},
                {
                    "action": "if",
                    "selector": "#otp",
                    "then": [{"action": "fill", "selector": "#otp", "value": "{{ secrets.SEED.totp }}"}],
                },
                {
                    "action": "repeat",
                    "next": "a.next",
                    "steps": [{"action": "type", "selector": "#q", "text": "{{ secrets.QUERY }}"}],
                },
            ],
            "goal": "use {{ secrets.GOAL }}",
            "proxy": {"server": "http://proxy:3128", "username": "{{ secrets.PU }}", "password": "x"},
            "secrets": ["LISTED"],
            "agent": {"start_url": "https://{{ secrets.START }}/", "api_key_secret": "LLM_KEY"},
        }
    )
    assert spec.secret_names() == {
        "HOST",
        "PASSWORD",
        "SEED",
        "QUERY",
        "GOAL",
        "PU",
        "LISTED",
        "START",
        "LLM_KEY",
    }


def test_a_task_without_references_names_none() -> None:
    spec = TaskSpec.model_validate({"steps": [{"action": "navigate", "url": "https://example.com/"}]})
    assert spec.secret_names() == set()
