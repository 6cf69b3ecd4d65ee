"""Every plain call of the API, written once: what it sends and how its answer is read. Both clients get
them as methods from `Endpoint`s (`_endpoints.ApiCalls`), which run them synchronously or awaitably, so the
two cannot drift apart; the calls that loop, stream or keep tokens stay in each client."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, get_args, get_type_hints, overload
from urllib.parse import quote

import httpx

from ._core import ClientCore, HttpClientCore, Send, task_body, without_none

P = ParamSpec("P")
R = TypeVar("R")


def _q(value: str) -> str:
    return quote(value, safe="")


def _nothing(response: httpx.Response) -> None:
    return None


def _content(response: httpx.Response) -> bytes:
    return response.content


@dataclass(frozen=True)
class Call(Generic[R]):
    """One request and how its (successful) answer becomes the method's result."""

    method: str
    path: str
    json: Any = None
    params: Mapping[str, Any] | None = None
    headers: Mapping[str, str] | None = None
    read: Callable[[httpx.Response], R] = ClientCore._json

    def send(self) -> Send:
        """The keywords of the client's `request`."""
        return {"json": self.json, "params": self.params, "headers": self.headers}


def _as_method(method: Callable[..., Any], build: Callable[..., Any]) -> None:
    """Name, document and sign `method` as `build` with a leading `self` and the answer's type, so that help()
    and inspect show the call's own signature."""
    signature = inspect.signature(build)
    self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    method.__name__ = method.__qualname__ = build.__name__
    method.__doc__ = build.__doc__
    (result,) = get_args(get_type_hints(build)["return"])
    result = None if result is type(None) else result
    method.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[self_param, *signature.parameters.values()], return_annotation=result
    )


def sync_call(build: Callable[P, Call[R]]) -> Callable[Concatenate[Any, P], R]:
    def method(self: Any, /, *args: P.args, **kwargs: P.kwargs) -> R:
        call = build(*args, **kwargs)
        return call.read(self.request(call.method, call.path, **call.send()))

    _as_method(method, build)
    return method


def async_call(build: Callable[P, Call[R]]) -> Callable[Concatenate[Any, P], Coroutine[Any, Any, R]]:
    async def method(self: Any, /, *args: P.args, **kwargs: P.kwargs) -> R:
        call = build(*args, **kwargs)
        return call.read(await self.request(call.method, call.path, **call.send()))

    _as_method(method, build)
    return method


SyncClient = HttpClientCore[httpx.Client, Any]
AsyncClient = HttpClientCore[httpx.AsyncClient, Any]


class Endpoint(Generic[P, R]):
    """A call as a method of both clients: on a client whose `request` is awaitable it is a coroutine
    function, else it returns the answer (a plain function either way, for help() and inspect)."""

    def __init__(self, build: Callable[P, Call[R]]) -> None:
        self.sync = sync_call(build)
        self.async_ = async_call(build)

    @overload
    def __get__(self, client: None, owner: type[SyncClient]) -> Callable[Concatenate[Any, P], R]: ...
    @overload
    def __get__(
        self, client: None, owner: type[AsyncClient]
    ) -> Callable[Concatenate[Any, P], Coroutine[Any, Any, R]]: ...
    @overload
    def __get__(self, client: SyncClient, owner: type[Any]) -> Callable[P, R]: ...
    @overload
    def __get__(self, client: AsyncClient, owner: type[Any]) -> Callable[P, Coroutine[Any, Any, R]]: ...
    def __get__(self, client: object, owner: type[Any]) -> Any:
        method = self.async_ if inspect.iscoroutinefunction(owner.request) else self.sync
        return method.__get__(client, owner)


# --- auth -----------------------------------------------------------------------------------------------
def me() -> Call[dict[str, Any]]:
    return Call("GET", "/auth/me")


# --- tasks ----------------------------------------------------------------------------------------------
def create_task(
    task: Mapping[str, Any] | None = None, *, idempotency_key: str | None = None, **fields: Any
) -> Call[dict[str, Any]]:
    """`task` is the body of POST /api/v1/tasks (or pass its fields as keywords: `goal="..."`).
    With `idempotency_key`, retrying the same call never creates a second task."""
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
    return Call("POST", "/api/v1/tasks", json=task_body(task, fields), headers=headers)


def get_task(task_id: str) -> Call[dict[str, Any]]:
    return Call("GET", f"/api/v1/tasks/{_q(task_id)}")


def list_tasks(
    *, status: str | None = None, limit: int = 50, cursor: str | None = None
) -> Call[dict[str, Any]]:
    """One page: `{"items": [...], "next_cursor": ...}`. `iter_tasks()` follows the cursor."""
    return Call("GET", "/api/v1/tasks", params=without_none(status=status, limit=limit, cursor=cursor))


def cancel_task(task_id: str, reason: str | None = None) -> Call[dict[str, Any]]:
    return Call("POST", f"/api/v1/tasks/{_q(task_id)}/cancel", params=without_none(reason=reason))


def task_logs(task_id: str, *, since: int = 0, limit: int = 200) -> Call[dict[str, Any]]:
    """One page of log lines after `since`: `{"items", "next_since", "finished"}`."""
    return Call("GET", f"/admin/tasks/{_q(task_id)}/logs", params={"since": since, "limit": limit})


def list_artifacts(task_id: str) -> Call[list[dict[str, Any]]]:
    return Call("GET", f"/api/v1/tasks/{_q(task_id)}/artifacts")


def download_artifact(task_id: str, name: str) -> Call[bytes]:
    return Call("GET", f"/api/v1/tasks/{_q(task_id)}/artifacts/{_q(name)}", read=_content)


class LogCursor:
    """Where `follow_logs` stands: the id of the last line it gave and whether the task has finished. A stream
    that ends before the task finished is opened again after that line, so no line is lost or repeated."""

    def __init__(self, task_id: str, since: int) -> None:
        self.task_id = task_id
        self.last = since
        self.finished = False
        self.stream_ended = False

    def stream(self) -> Call[None]:
        """The SSE request of the next stream, resumed after the last line."""
        self.stream_ended = False
        return Call(
            "GET",
            f"/admin/tasks/{_q(self.task_id)}/logs",
            params={"follow": "true", "since": self.last},
            headers={"Accept": "text/event-stream", "Last-Event-ID": str(self.last)},
            read=_nothing,
        )

    def line(self, event: str, data: str, event_id: str | None) -> dict[str, Any] | None:
        """The log line an event carries; None for any other event (an `end` ends the stream)."""
        if event == "log":
            line: dict[str, Any] = json.loads(data)
            self.last = int(event_id) if event_id is not None else self.last
            return line
        if event == "end":
            self.stream_ended = True
            self.finished = bool(json.loads(data).get("finished"))
        return None


# --- credentials ----------------------------------------------------------------------------------------
def put_credential(
    name: str, value: str, *, type: str = "password", description: str | None = None
) -> Call[dict[str, Any]]:
    """Store a secret for `{{ secrets.NAME }}`; the value is write-only and never comes back."""
    body = {"name": name, "value": value, "type": type, "description": description}
    return Call("POST", "/api/v1/credentials", json=body)


def list_credentials() -> Call[list[dict[str, Any]]]:
    return Call("GET", "/api/v1/credentials")


def delete_credential(name: str) -> Call[None]:
    return Call("DELETE", f"/api/v1/credentials/{_q(name)}", read=_nothing)


def update_credential(
    credential_id: str,
    *,
    value: str | None = None,
    type: str | None = None,
    description: str | None = None,
) -> Call[dict[str, Any]]:
    """Change a credential found by id (its name stays)."""
    body = without_none(value=value, type=type, description=description)
    return Call("PUT", f"/admin/credentials/{_q(credential_id)}", json=body)


def delete_credential_by_id(credential_id: str) -> Call[None]:
    return Call("DELETE", f"/admin/credentials/{_q(credential_id)}", read=_nothing)


# --- webhooks -------------------------------------------------------------------------------------------
def create_webhook(
    url: str, events: list[str] | None = None, *, description: str | None = None
) -> Call[dict[str, Any]]:
    """The answer carries the endpoint's signing `secret`; it is shown only this once."""
    return Call("POST", "/admin/webhooks", json=without_none(url=url, events=events, description=description))


def list_webhooks() -> Call[list[dict[str, Any]]]:
    return Call("GET", "/admin/webhooks")


def delete_webhook(endpoint_id: str) -> Call[None]:
    return Call("DELETE", f"/admin/webhooks/{_q(endpoint_id)}", read=_nothing)


def list_deliveries(endpoint_id: str | None = None, *, limit: int = 50) -> Call[list[dict[str, Any]]]:
    return Call(
        "GET", "/admin/webhooks/deliveries", params=without_none(endpoint_id=endpoint_id, limit=limit)
    )


def get_webhook(endpoint_id: str) -> Call[dict[str, Any]]:
    return Call("GET", f"/admin/webhooks/{_q(endpoint_id)}")


def update_webhook(endpoint_id: str, **fields: Any) -> Call[dict[str, Any]]:
    """Change `url`, `events`, `description` or `enabled`."""
    return Call("PATCH", f"/admin/webhooks/{_q(endpoint_id)}", json=fields)


def get_delivery(delivery_id: str) -> Call[dict[str, Any]]:
    """One delivery with its payload and every attempt."""
    return Call("GET", f"/admin/webhooks/deliveries/{_q(delivery_id)}")


def replay_delivery(delivery_id: str) -> Call[dict[str, Any]]:
    return Call("POST", f"/admin/webhooks/deliveries/{_q(delivery_id)}/replay")


def replay_failed(endpoint_id: str, since: str) -> Call[dict[str, Any]]:
    """Every failed delivery of the endpoint since `since` (ISO time), as a background job."""
    return Call("POST", f"/admin/webhooks/{_q(endpoint_id)}/replay", json={"since": since})


def get_replay_job(job_id: str) -> Call[dict[str, Any]]:
    return Call("GET", f"/admin/webhooks/replays/{_q(job_id)}")


def send_test_event(endpoint_id: str) -> Call[dict[str, Any]]:
    return Call("POST", f"/admin/webhooks/{_q(endpoint_id)}/test")


def rotate_webhook_secret(endpoint_id: str) -> Call[dict[str, Any]]:
    return Call("POST", f"/admin/webhooks/{_q(endpoint_id)}/secret/rotate")


# --- workers --------------------------------------------------------------------------------------------
def create_worker_invite(
    tags: list[str] | None = None,
    *,
    ttl_seconds: int | None = None,
    name: str | None = None,
    capabilities: list[str] | None = None,
    pool: str | None = None,
    multi_use: bool | None = None,
) -> Call[dict[str, Any]]:
    """The answer's `invite_code` is shown only this once."""
    body = without_none(
        tags=tags,
        ttl_seconds=ttl_seconds,
        name=name,
        capabilities=capabilities,
        pool=pool,
        multi_use=multi_use,
    )
    return Call("POST", "/admin/workers/invite", json=body)


def list_workers() -> Call[list[dict[str, Any]]]:
    return Call("GET", "/admin/workers")


def drain_worker(worker_id: str) -> Call[dict[str, Any]]:
    return Call("POST", f"/admin/workers/{_q(worker_id)}/drain")


def revoke_worker(worker_id: str) -> Call[None]:
    """Remove a worker: its key stops working at once."""
    return Call("DELETE", f"/admin/workers/{_q(worker_id)}", read=_nothing)


# --- API keys -------------------------------------------------------------------------------------------
def create_api_key(name: str, scopes: list[str], *, expires_at: str | None = None) -> Call[dict[str, Any]]:
    """The answer's `key` is shown only this once."""
    return Call("POST", "/admin/api-keys", json=without_none(name=name, scopes=scopes, expires_at=expires_at))


def list_api_keys() -> Call[list[dict[str, Any]]]:
    return Call("GET", "/admin/api-keys")


def revoke_api_key(key_id: str) -> Call[None]:
    return Call("DELETE", f"/admin/api-keys/{_q(key_id)}", read=_nothing)


# --- ops ------------------------------------------------------------------------------------------------
def health() -> Call[dict[str, Any]]:
    return Call("GET", "/health")
