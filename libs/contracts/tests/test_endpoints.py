"""The endpoint registry: every request/reply subject declared once, with its service's queue and types."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest
from browserfleet_contracts import endpoints
from browserfleet_contracts.common import Contract
from browserfleet_contracts.endpoints import SERVICES, Endpoint, all_endpoints, by_subject
from pydantic import BaseModel, TypeAdapter, ValidationError

# the subject's service token and the queue group that serves it (the worker-gateway serves `svc.workers`)
QUEUE_OF_SERVICE = {
    "auth": "auth",
    "scheduler": "scheduler",
    "vault": "vault",
    "webhooks": "webhooks",
    "workers": "worker-gateway",
}

ENDPOINTS = all_endpoints()


def test_the_registry_is_not_empty_and_holds_only_endpoints() -> None:
    assert len(ENDPOINTS) > 40
    assert all(isinstance(e, Endpoint) for e in ENDPOINTS)


def test_every_subject_is_declared_once() -> None:
    subjects = [e.subject for e in ENDPOINTS]
    duplicates = sorted({s for s in subjects if subjects.count(s) > 1})
    assert duplicates == []


def test_every_declaration_is_one_object() -> None:
    """An endpoint object reached under two names would be one subject served twice."""
    assert len({id(e) for e in ENDPOINTS}) == len(ENDPOINTS)


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_subject_is_svc_service_op(endpoint: Endpoint[Any, Any]) -> None:
    assert re.fullmatch(r"svc\.[a-z]+\.[a-z][a-z_]*", endpoint.subject), endpoint.subject


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.__name__)
def test_each_service_class_has_one_subject_prefix_and_its_queue(service: type) -> None:
    declared = {name: v for name, v in vars(service).items() if isinstance(v, Endpoint)}
    assert declared, f"{service.__name__} declares no endpoint"
    token = service.__name__.lower()
    for name, endpoint in declared.items():
        assert endpoint.subject.startswith(f"svc.{token}."), (name, endpoint.subject)
        assert endpoint.queue == service.QUEUE == QUEUE_OF_SERVICE[token], (name, endpoint.queue)  # type: ignore[attr-defined]
        # the declaration's name is its op, so `svc.scheduler.get_task` is `Scheduler.GET_TASK`
        assert endpoint.subject.split(".")[2] == name.lower(), (name, endpoint.subject)


def test_every_service_token_is_served_by_exactly_one_queue() -> None:
    queues: dict[str, set[str]] = {}
    for endpoint in ENDPOINTS:
        queues.setdefault(endpoint.subject.split(".")[1], set()).add(endpoint.queue)
    assert {token: sorted(q) for token, q in queues.items()} == {
        token: [queue] for token, queue in QUEUE_OF_SERVICE.items()
    }


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_by_subject_round_trips(endpoint: Endpoint[Any, Any]) -> None:
    assert by_subject(endpoint.subject) is endpoint


@pytest.mark.parametrize("subject", ["svc.auth.nope", "svc.auth", "auth.login", "", "svc.auth.login.x"])
def test_by_subject_of_an_undeclared_subject_is_a_key_error(subject: str) -> None:
    with pytest.raises(KeyError):
        by_subject(subject)


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_request_is_a_contract_that_refuses_unknown_fields(endpoint: Endpoint[Any, Any]) -> None:
    assert isinstance(endpoint.request, type)
    assert issubclass(endpoint.request, BaseModel)
    assert issubclass(endpoint.request, Contract)
    with pytest.raises(ValidationError) as caught:
        endpoint.request.model_validate({"__surely_not_a_field__": 1})
    assert any(e["type"] == "extra_forbidden" for e in caught.value.errors())


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_reply_is_a_type_pydantic_can_read_and_document(endpoint: Endpoint[Any, Any]) -> None:
    schema = TypeAdapter(endpoint.reply).json_schema()
    assert schema


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_every_endpoint_says_what_it_does(endpoint: Endpoint[Any, Any]) -> None:
    assert endpoint.description.strip()


def test_title_and_str() -> None:
    endpoint = endpoints.Scheduler.GET_TASK
    assert endpoint.title == "scheduler.get_task"
    assert str(endpoint) == "svc.scheduler.get_task"
    assert endpoints.Workers.LIST.title == "workers.list"


def test_an_endpoint_is_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        endpoints.Auth.LOGIN.subject = "svc.auth.other"  # type: ignore[misc]
