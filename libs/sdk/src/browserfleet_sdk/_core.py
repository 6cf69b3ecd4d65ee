"""What the sync and async clients share: tokens, headers, request bodies, error answers as exceptions."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Generic, TypedDict, TypeVar

import httpx

from .errors import BrowserfleetError

TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "timed_out"})
DEFAULT_TIMEOUT = 30.0


def task_body(task: Mapping[str, Any] | None, fields: Mapping[str, Any]) -> dict[str, Any]:
    body = dict(task or {})
    body.update(fields)
    if not body:
        raise ValueError("create_task needs a task: steps=[...] or goal='...'")
    return body


def without_none(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


class Send(TypedDict, total=False):
    """What a client's `request` sends besides the method and path (each left out: none)."""

    json: Any
    params: Mapping[str, Any] | None
    headers: Mapping[str, str] | None


class ClientCore:
    """What both clients share: tokens, headers and turning error answers into exceptions."""

    def __init__(self, token: str | None, refresh_token: str | None) -> None:
        self.token = token
        self.refresh_token = refresh_token

    def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _signed(self, send: Send) -> dict[str, Any]:
        """The keywords of the httpx request: `send` with the token (the current one, also after a refresh)."""
        return {**send, "headers": self._headers(send.get("headers"))}

    def _remember(self, pair: dict[str, Any]) -> dict[str, Any]:
        self.token = pair.get("access_token")
        self.refresh_token = pair.get("refresh_token")
        return pair

    def _should_refresh(self, response: httpx.Response, path: str) -> bool:
        return (
            response.status_code == 401
            and self.refresh_token is not None
            and not path.startswith("/auth/")
            and error_code(response) == "token_expired"
        )

    @staticmethod
    def _check(response: httpx.Response) -> httpx.Response:
        if response.is_error:
            raise BrowserfleetError.from_response(response)
        return response

    @staticmethod
    def _readiness(response: httpx.Response) -> dict[str, Any]:
        """The readiness report, also when degraded (a 503 here is an answer, not an error)."""
        if response.status_code == 503 and "checks" in response.text:
            result: dict[str, Any] = response.json()
            return result
        return dict(ClientCore._check(response).json())

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        return None if response.status_code == 204 or not response.content else response.json()


H = TypeVar("H", httpx.Client, httpx.AsyncClient)
T = TypeVar("T")


class HttpClientCore(ClientCore, Generic[H, T]):
    """The constructor both clients share; each names the httpx client (and so the transport) it runs on."""

    _http_class: Callable[..., H]

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        refresh_token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: T | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(token, refresh_token)
        self._http: H = self._http_class(
            base_url=base_url.rstrip("/"), timeout=timeout, transport=transport, headers=dict(headers or {})
        )


def error_code(response: httpx.Response) -> str | None:
    try:
        err = response.json().get("error")
    except (ValueError, AttributeError):
        return None
    return err.get("code") if isinstance(err, dict) else None


class SseParser:
    """Server-Sent Events, one line at a time: `feed` answers (event, data, id) when a line ends an event;
    comments and `retry:` are skipped."""

    def __init__(self) -> None:
        self.event = "message"
        self.event_id: str | None = None
        self.data: list[str] = []

    def feed(self, line: str) -> tuple[str, str, str | None] | None:
        if not line:
            done = (self.event, "\n".join(self.data), self.event_id) if self.data else None
            self.event, self.event_id, self.data = "message", None, []
            return done
        if not line.startswith(":"):
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                self.event = value
            elif name == "data":
                self.data.append(value)
            elif name == "id":
                self.event_id = value
        return None


def sse_events(lines: Iterable[str]) -> Iterator[tuple[str, str, str | None]]:
    """(event, data, id) of each Server-Sent Event in a stream's lines."""
    parser = SseParser()
    for line in lines:
        event = parser.feed(line)
        if event is not None:
            yield event
