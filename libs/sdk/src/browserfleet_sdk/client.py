"""Python client for the browserfleet HTTP API (only depends on httpx).

    from browserfleet_sdk.client import BrowserfleetClient

    with BrowserfleetClient("http://127.0.0.1:8080") as bf:
        bf.login("admin@browserfleet.local", "...")
        task = bf.create_task({"steps": [{"action": "navigate", "url": "https://example.com"}]})
        done = bf.wait_for_task(task["id"], timeout=120)

Every error answer of the API (`{"error": {status, code, message, field, detail}}`) is raised as a
`BrowserfleetError`. Replies are returned as plain dicts, exactly as the API documents them.
`AsyncBrowserfleetClient` has the same methods, awaitable.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Unpack

import httpx

from . import _calls as calls
from ._core import TERMINAL_STATUSES, HttpClientCore, Send, sse_events
from ._endpoints import ApiCalls
from .async_client import AsyncBrowserfleetClient
from .errors import BrowserfleetError, TaskTimeout

__all__ = [
    "TERMINAL_STATUSES",
    "AsyncBrowserfleetClient",
    "BrowserfleetClient",
    "BrowserfleetError",
    "TaskTimeout",
]


class BrowserfleetClient(ApiCalls, HttpClientCore[httpx.Client, httpx.BaseTransport]):
    """Synchronous client. `token` is an access token or an API key (`sk_api_…`); `login()` sets one (and
    refreshes it when it expires, using the refresh token it got)."""

    _http_class = httpx.Client

    # --- plumbing -------------------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> BrowserfleetClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **send: Unpack[Send]) -> httpx.Response:
        """One call to the API (`json`, `params`, `headers` as keywords); raises `BrowserfleetError` for any
        error answer."""
        response = self._http.request(method, path, **self._signed(send))
        if self._should_refresh(response, path):
            self.refresh()
            response = self._http.request(method, path, **self._signed(send))
        return self._check(response)

    def _call(self, method: str, path: str, **send: Unpack[Send]) -> Any:
        return self._json(self.request(method, path, **send))

    # --- auth -----------------------------------------------------------------------------------
    def login(self, email: str, password: str) -> dict[str, Any]:
        pair = self._call("POST", "/auth/login", json={"email": email, "password": password})
        return self._remember(pair)

    def refresh(self) -> dict[str, Any]:
        if not self.refresh_token:
            raise BrowserfleetError(401, "no_refresh_token", "log in first")
        response = self._http.post("/auth/refresh", json={"refresh_token": self.refresh_token})
        return self._remember(self._check(response).json())

    def logout(self) -> None:
        if self.refresh_token:
            self._call("POST", "/auth/logout", json={"refresh_token": self.refresh_token})
        self.token = self.refresh_token = None

    # --- tasks ----------------------------------------------------------------------------------
    def iter_tasks(self, *, status: str | None = None, page_size: int = 100) -> Iterator[dict[str, Any]]:
        cursor: str | None = None
        while True:
            page = self.list_tasks(status=status, limit=page_size, cursor=cursor)
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def wait_for_task(
        self, task_id: str, timeout: float = 300.0, *, poll_interval: float = 1.0
    ) -> dict[str, Any]:
        """Poll until the task is completed, failed, cancelled or timed out; returns it.
        Raises `TaskTimeout` (a `TimeoutError`) if it is still running after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            task = self.get_task(task_id)
            if task["status"] in TERMINAL_STATUSES:
                return task
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TaskTimeout(task, timeout)
            time.sleep(min(poll_interval, remaining))

    def follow_logs(self, task_id: str, *, since: int = 0) -> Iterator[dict[str, Any]]:
        """Every log line as the task writes it (the SSE route), until the task is finished; reconnects with
        the last line's id when a stream ends early, so no line is lost or repeated."""
        cursor = calls.LogCursor(task_id, since)
        while not cursor.finished:
            call = cursor.stream()
            with self._http.stream(
                call.method, call.path, params=call.params, headers=self._headers(call.headers), timeout=None
            ) as response:
                if response.is_error:
                    response.read()
                    self._check(response)
                for event in sse_events(response.iter_lines()):
                    line = cursor.line(*event)
                    if line is not None:
                        yield line
                    elif cursor.stream_ended:
                        break

    # --- ops ------------------------------------------------------------------------------------
    def ready(self) -> dict[str, Any]:
        """The readiness report, also when degraded (a 503 here is an answer, not an error)."""
        return self._readiness(self._http.get("/health/ready"))
