"""What a task body may say: the validators of tasks and steps, and where their errors point
(`loc` becomes the `field` of the 422 a client gets), plus the artifact object-name convention."""

from __future__ import annotations

from typing import Any

import pytest
from browserfleet_contracts.steps import MAX_REPEAT, NavigateStep, UploadFile
from browserfleet_contracts.tasks import TaskCreate, artifact_attempt, artifact_object_name
from pydantic import ValidationError

NAVIGATE = {"action": "navigate", "url": "https://example.com/"}


def errors_of(body: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str, str]]:
    with pytest.raises(ValidationError) as caught:
        TaskCreate.model_validate(body)
    return [(tuple(e["loc"]), e["type"], e["msg"]) for e in caught.value.errors(include_url=False)]


def only_error(body: dict[str, Any]) -> tuple[tuple[str | int, ...], str, str]:
    errors = errors_of(body)
    assert len(errors) == 1, errors
    return errors[0]


def steps(*items: dict[str, Any]) -> dict[str, Any]:
    return {"steps": list(items)}


# --- steps -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "url", ["ftp://example.com/", "example.com", "https://", "javascript:alert(1)", "file:///etc/passwd"]
)
def test_navigate_takes_absolute_http_urls_only(url: str) -> None:
    loc, kind, msg = only_error(steps({"action": "navigate", "url": url}))
    assert (loc, kind) == (("steps", 0, "navigate", "url"), "value_error")
    assert "absolute http:// or https:// URL" in msg


def test_navigate_may_take_its_host_from_a_secret() -> None:
    step = NavigateStep.model_validate({"action": "navigate", "url": "https://{{ secrets.HOST }}/a"})
    assert step.url == "https://{{ secrets.HOST }}/a"


def test_an_unknown_action_points_at_the_step() -> None:
    loc, kind, _ = only_error(steps(NAVIGATE, {"action": "fly"}))
    assert (loc, kind) == (("steps", 1), "union_tag_invalid")


def test_a_step_without_action_points_at_the_step() -> None:
    loc, kind, _ = only_error(steps({"url": "https://example.com/"}))
    assert (loc, kind) == (("steps", 0), "union_tag_not_found")


def test_an_unknown_field_of_a_step_is_refused_by_name() -> None:
    loc, kind, _ = only_error(steps({"action": "click", "selector": "a", "selectr": "b"}))
    assert (loc, kind) == (("steps", 0, "click", "selectr"), "extra_forbidden")


def test_a_missing_field_of_a_step_is_named() -> None:
    loc, kind, _ = only_error(steps({"action": "fill", "selector": "#q"}))
    assert (loc, kind) == (("steps", 0, "fill", "value"), "missing")


@pytest.mark.parametrize(
    "condition",
    [
        {},
        {"selector": "#a", "delay_ms": 10},
        {"url": "**/done", "load_state": "load"},
    ],
)
def test_wait_for_takes_exactly_one_condition(condition: dict[str, Any]) -> None:
    loc, _, msg = only_error(steps({"action": "wait_for", **condition}))
    assert loc == ("steps", 0, "wait_for")
    assert "exactly one of selector, url, load_state, delay_ms" in msg


def test_wait_for_delay_is_capped() -> None:
    loc, kind, _ = only_error(steps({"action": "wait_for", "delay_ms": 30_001}))
    assert (loc, kind) == (("steps", 0, "wait_for", "delay_ms"), "less_than_equal")


def test_select_option_needs_values_or_labels() -> None:
    loc, _, msg = only_error(steps({"action": "select_option", "selector": "select"}))
    assert loc == ("steps", 0, "select_option")
    assert "needs `values` or `labels`" in msg


@pytest.mark.parametrize(
    ("step", "said"),
    [
        ({"action": "assert"}, "needs a `selector` or a `url`"),
        ({"action": "assert", "url": "**/x", "text": "hi"}, "text, visible and count need a `selector`"),
        ({"action": "assert", "url": "**/x", "count": 2}, "text, visible and count need a `selector`"),
    ],
)
def test_assert_conditions(step: dict[str, Any], said: str) -> None:
    loc, _, msg = only_error(steps(step))
    assert loc == ("steps", 0, "assert")
    assert said in msg


def test_errors_inside_nested_steps_are_located_inside_them() -> None:
    body = steps(
        NAVIGATE,
        {
            "action": "if",
            "selector": "#banner",
            "then": [{"action": "click", "selector": "#ok"}],
            "otherwise": [
                {"action": "repeat", "next": "a.next", "steps": [{"action": "click", "selector": ""}]}
            ],
        },
    )
    loc, kind, _ = only_error(body)
    assert loc == ("steps", 1, "if", "otherwise", 0, "repeat", "steps", 0, "click", "selector")
    assert kind == "string_too_short"


def test_repeat_is_bounded() -> None:
    loc, kind, _ = only_error(
        steps({"action": "repeat", "next": "a", "steps": [], "max_iterations": MAX_REPEAT + 1})
    )
    assert (loc, kind) == (("steps", 0, "repeat", "max_iterations"), "less_than_equal")


@pytest.mark.parametrize("name", ["a/b", "", "x" * 65, "with space"])
def test_names_are_safe_file_names(name: str) -> None:
    loc, _, _ = only_error(steps({"action": "screenshot", "name": name}))
    assert loc == ("steps", 0, "screenshot", "name")


# --- upload files ------------------------------------------------------------------------------------
def upload(*files: dict[str, Any]) -> dict[str, Any]:
    return steps({"action": "upload", "selector": "input[type=file]", "files": list(files)})


def test_inline_file_content_must_be_base64() -> None:
    loc, _, msg = only_error(upload({"name": "a.txt", "content_base64": "not base64!"}))
    assert loc == ("steps", 0, "upload", "files", 0, "content_base64")
    assert "not valid base64" in msg


@pytest.mark.parametrize(
    ("file", "said"),
    [
        ({"name": "a.txt"}, "exactly one of `content_base64` or `artifact`"),
        (
            {"name": "a.txt", "content_base64": "aGk=", "artifact": {"task_id": "t1", "name": "r.pdf"}},
            "exactly one of `content_base64` or `artifact`",
        ),
        ({"content_base64": "aGk="}, "needs a `name`"),
    ],
)
def test_a_file_has_exactly_one_source(file: dict[str, Any], said: str) -> None:
    loc, _, msg = only_error(upload(file))
    assert loc == ("steps", 0, "upload", "files", 0)
    assert said in msg


def test_a_file_from_an_artifact_takes_its_name_later() -> None:
    file = UploadFile.model_validate({"artifact": {"task_id": "t1", "name": "report.pdf", "attempt": 2}})
    assert file.name is None
    assert file.artifact is not None
    assert file.artifact.attempt == 2


def test_file_names_have_no_path() -> None:
    loc, kind, _ = only_error(upload({"name": "../etc/passwd", "content_base64": "aGk="}))
    assert (loc, kind) == (("steps", 0, "upload", "files", 0, "name"), "string_pattern_mismatch")


# --- the task ----------------------------------------------------------------------------------------
def test_the_short_form_is_an_agent_task() -> None:
    task = TaskCreate.model_validate({"task": "find the price"})
    assert (task.kind, task.goal, task.task) == ("agent", "find the price", None)


def test_the_kind_follows_from_the_body() -> None:
    assert TaskCreate.model_validate(steps(NAVIGATE)).kind == "steps"
    assert TaskCreate.model_validate({"goal": "g"}).kind == "agent"


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ({"task": "a", "goal": "b"}, "either `task` or `goal`, not both"),
        ({}, "a steps task needs a non-empty `steps` list"),
        ({"kind": "steps", "steps": []}, "a steps task needs a non-empty `steps` list"),
        ({"kind": "agent"}, "an agent task needs a `goal`"),
        ({"kind": "agent", "goal": "g", "steps": [NAVIGATE]}, "takes a `goal`, not `steps`"),
    ],
)
def test_task_shape(body: dict[str, Any], said: str) -> None:
    loc, _, msg = only_error(body)
    assert loc == ()
    assert said in msg


def test_a_malformed_reference_anywhere_refuses_the_task() -> None:
    _, _, msg = only_error(steps({"action": "fill", "selector": "#pw", "value": "{{ secrets.p-w }}"}))
    assert "malformed secret reference" in msg
    _, _, msg = only_error({"goal": "log in with {{ secrets }}"})
    assert "malformed secret reference" in msg


@pytest.mark.parametrize(
    ("field", "value", "loc", "kind"),
    [
        ("worker_tags", ["GPU"], ("worker_tags", 0), "string_pattern_mismatch"),
        ("allowed_domains", ["https://example.com"], ("allowed_domains", 0), "string_pattern_mismatch"),
        ("timeout_seconds", 0, ("timeout_seconds",), "greater_than_equal"),
        ("max_attempts", 11, ("max_attempts",), "less_than_equal"),
        ("priority", "asap", ("priority",), "literal_error"),
        ("secrets", ["1BAD"], ("secrets", 0), "string_pattern_mismatch"),
        ("profile", "my profile", ("profile",), "string_pattern_mismatch"),
        ("proxy", {"server": "ftp://p:1"}, ("proxy", "server"), "string_pattern_mismatch"),
        ("webhook_url", "not a url", ("webhook_url",), "url_parsing"),
        ("agent", {"max_steps": 0}, ("agent", "max_steps"), "greater_than_equal"),
        ("surprise", 1, ("surprise",), "extra_forbidden"),
    ],
)
def test_task_fields_are_checked_by_name(field: str, value: Any, loc: tuple[Any, ...], kind: str) -> None:
    assert only_error({"goal": "g", field: value})[:2] == (loc, kind)


@pytest.mark.parametrize("domain", ["example.com", "*.example.com", "a-b.example.co.uk", "localhost:8080"])
def test_allowed_domains_take_hosts_and_wildcards(domain: str) -> None:
    assert TaskCreate.model_validate({"goal": "g", "allowed_domains": [domain]}).allowed_domains == [domain]


def test_result_schema_must_be_a_json_schema() -> None:
    pytest.importorskip("jsonschema")
    loc, _, msg = only_error({"goal": "g", "result_schema": {"type": "no-such-type"}})
    assert loc == ("result_schema",)
    assert "not a valid JSON Schema" in msg


def test_spec_carries_what_the_worker_needs() -> None:
    task = TaskCreate.model_validate(
        {
            "title": "t",
            "steps": [NAVIGATE],
            "profile": "shop",
            "allowed_domains": ["example.com"],
            "secrets": ["A"],
        }
    )
    spec = task.spec()
    assert (spec.kind, spec.profile, spec.allowed_domains, spec.secrets) == (
        "steps",
        "shop",
        ["example.com"],
        ["A"],
    )
    assert [s.action for s in spec.steps] == ["navigate"]


# --- artifacts ---------------------------------------------------------------------------------------
def test_artifact_object_name() -> None:
    assert artifact_object_name("t1", 3, "report.pdf") == "t1/3/report.pdf"


@pytest.mark.parametrize("attempt", [1, 2, 17])
@pytest.mark.parametrize("name", ["screenshot.png", "page.pdf", "a.b.c"])
def test_artifact_attempt_reads_the_name_back(attempt: int, name: str) -> None:
    assert artifact_attempt(artifact_object_name("task-1", attempt, name)) == attempt


@pytest.mark.parametrize(
    "object_name", ["t1/report.pdf", "t1/x/report.pdf", "report.pdf", "t1/-1/a", "t1//a", ""]
)
def test_an_object_not_named_by_the_convention_has_no_attempt(object_name: str) -> None:
    assert artifact_attempt(object_name) is None
