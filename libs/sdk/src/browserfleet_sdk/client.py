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

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any
from urllib.parse import quote

import httpx

__all__ = [
    "TERMINAL_STATUSES",
    "AsyncBrowserfleetClient",
    "BrowserfleetClient",
    "BrowserfleetError",
    "TaskTimeout",
]

TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "timed_out"})
_DEFAULT_TIMEOUT = 30.0


class BrowserfleetError(Exception):
    """An error answer from the API. `field` names the offending input for validation errors (422)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        detail: list[dict[str, Any]] | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.detail = detail
        self.retry_after = retry_after

    def __str__(self) -> str:
        where = f" ({self.field})" if self.field else ""
        return f"{self.status} {self.code}: {self.message}{where}"

    @classmethod
    def from_response(cls, response: httpx.Response) -> BrowserfleetError:
        retry_after: float | None = None
        with contextlib.suppress(KeyError, ValueError):
            retry_after = float(response.headers["retry-after"])
        try:
            body = response.json()
        except ValueError:
            body = None
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict):
            return cls(
                int(err.get("status") or response.status_code),
                str(err.get("code") or "error"),
                str(err.get("message") or response.reason_phrase),
                err.get("field"),
                err.get("detail"),
                retry_after=retry_after,
            )
        # Not our error shape (a proxy in between, say): keep what there is, briefly.
        return cls(
            response.status_code,
            "http_error",
            response.text[:200] or response.reason_phrase,
            retry_after=retry_after,
        )


class TaskTimeout(BrowserfleetError, TimeoutError):
    """`wait_for_task` gave up before the task reached a terminal status; `task` is its last state."""

    def __init__(self, task: dict[str, Any], timeout: float) -> None:
        super().__init__(
            408, "wait_timeout", f"task {task.get('id')} still {task.get('status')} after {timeout:g}s"
        )
        self.task = task


def _task_body(task: Mapping[str, Any] | None, fields: Mapping[str, Any]) -> dict[str, Any]:
    body = dict(task or {})
    body.update(fields)
    if not body:
        raise ValueError("create_task needs a task: steps=[...] or goal='...'")
    return body


def _params(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


class _Core:
    """What both clients share: tokens, headers and turning error answers into exceptions."""

    def __init__(self, token: str | None, refresh_token: str | None) -> None:
        self.token = token
        self.refresh_token = refresh_token

    def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _remember(self, pair: dict[str, Any]) -> dict[str, Any]:
        self.token = pair.get("access_token")
        self.refresh_token = pair.get("refresh_token")
        return pair

    def _should_refresh(self, response: httpx.Response, path: str) -> bool:
        return (
            response.status_code == 401
            and self.refresh_token is not None
            and not path.startswith("/auth/")
            and _error_code(response) == "token_expired"
        )

    @staticmethod
    def _check(response: httpx.Response) -> httpx.Response:
        if response.is_error:
            raise BrowserfleetError.from_response(response)
        return response

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        return None if response.status_code == 204 or not response.content else response.json()


def _error_code(response: httpx.Response) -> str | None:
    try:
        err = response.json().get("error")
    except (ValueError, AttributeError):
        return None
    return err.get("code") if isinstance(err, dict) else None


class BrowserfleetClient(_Core):
    """Synchronous client. `token` is an access token; `login()` sets one (and refreshes it when it
    expires, using the refresh token it got)."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        refresh_token: str | None = None,
        timeout: float = _DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(token, refresh_token)
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"), timeout=timeout, transport=transport, headers=dict(headers or {})
        )

    # --- plumbing -------------------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> BrowserfleetClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One call to the API; raises `BrowserfleetError` for any error answer."""
        response = self._http.request(method, path, json=json, params=params, headers=self._headers(headers))
        if self._should_refresh(response, path):
            self.refresh()
            response = self._http.request(
                method, path, json=json, params=params, headers=self._headers(headers)
            )
        return self._check(response)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._json(self.request(method, path, **kwargs))

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

    def me(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/auth/me")
        return result

    # --- tasks ----------------------------------------------------------------------------------
    def create_task(
        self, task: Mapping[str, Any] | None = None, *, idempotency_key: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        """`task` is the body of POST /api/v1/tasks (or pass its fields as keywords: `goal="..."`).
        With `idempotency_key`, retrying the same call never creates a second task."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        result: dict[str, Any] = self._call(
            "POST", "/api/v1/tasks", json=_task_body(task, fields), headers=headers
        )
        return result

    def get_task(self, task_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/api/v1/tasks/{quote(task_id, safe='')}")
        return result

    def list_tasks(
        self, *, status: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> dict[str, Any]:
        """One page: `{"items": [...], "next_cursor": ...}`. `iter_tasks()` follows the cursor."""
        result: dict[str, Any] = self._call(
            "GET", "/api/v1/tasks", params=_params(status=status, limit=limit, cursor=cursor)
        )
        return result

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

    def download_artifact(self, task_id: str, name: str) -> bytes:
        path = f"/api/v1/tasks/{quote(task_id, safe='')}/artifacts/{quote(name, safe='')}"
        return self.request("GET", path).content

    # --- credentials ----------------------------------------------------------------------------
    def put_credential(
        self, name: str, value: str, *, type: str = "password", description: str | None = None
    ) -> dict[str, Any]:
        """Store a secret for `{{ secrets.NAME }}`; the value is write-only and never comes back."""
        body = {"name": name, "value": value, "type": type, "description": description}
        result: dict[str, Any] = self._call("POST", "/api/v1/credentials", json=body)
        return result

    def list_credentials(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/api/v1/credentials")
        return result

    def delete_credential(self, name: str) -> None:
        self._call("DELETE", f"/api/v1/credentials/{quote(name, safe='')}")

    # --- admin ----------------------------------------------------------------------------------
    def create_webhook(
        self, url: str, events: list[str] | None = None, *, description: str | None = None
    ) -> dict[str, Any]:
        """The answer carries the endpoint's signing `secret`; it is shown only this once."""
        body = _params(url=url, events=events, description=description)
        result: dict[str, Any] = self._call("POST", "/admin/webhooks", json=body)
        return result

    def list_webhooks(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/admin/webhooks")
        return result

    def delete_webhook(self, endpoint_id: str) -> None:
        self._call("DELETE", f"/admin/webhooks/{quote(endpoint_id, safe='')}")

    def list_deliveries(self, endpoint_id: str | None = None, *, limit: int = 50) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call(
            "GET", "/admin/webhooks/deliveries", params=_params(endpoint_id=endpoint_id, limit=limit)
        )
        return result

    def create_worker_invite(
        self, tags: list[str] | None = None, *, ttl_seconds: int | None = None
    ) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "POST", "/admin/workers/invite", json=_params(tags=tags, ttl_seconds=ttl_seconds)
        )
        return result

    def list_workers(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/admin/workers")
        return result

    # --- ops ------------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/health")
        return result

    def ready(self) -> dict[str, Any]:
        """The readiness report, also when degraded (a 503 here is an answer, not an error)."""
        response = self._http.get("/health/ready")
        if response.status_code == 503 and "checks" in response.text:
            result: dict[str, Any] = response.json()
            return result
        return dict(self._check(response).json())


class AsyncBrowserfleetClient(_Core):
    """The same API as `BrowserfleetClient`, for asyncio code."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        refresh_token: str | None = None,
        timeout: float = _DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(token, refresh_token)
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), timeout=timeout, transport=transport, headers=dict(headers or {})
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncBrowserfleetClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        response = await self._http.request(
            method, path, json=json, params=params, headers=self._headers(headers)
        )
        if self._should_refresh(response, path):
            await self.refresh()
            response = await self._http.request(
                method, path, json=json, params=params, headers=self._headers(headers)
            )
        return self._check(response)

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._json(await self.request(method, path, **kwargs))

    async def login(self, email: str, password: str) -> dict[str, Any]:
        pair = await self._call("POST", "/auth/login", json={"email": email, "password": password})
        return self._remember(pair)

    async def refresh(self) -> dict[str, Any]:
        if not self.refresh_token:
            raise BrowserfleetError(401, "no_refresh_token", "log in first")
        response = await self._http.post("/auth/refresh", json={"refresh_token": self.refresh_token})
        return self._remember(self._check(response).json())

    async def logout(self) -> None:
        if self.refresh_token:
            await self._call("POST", "/auth/logout", json={"refresh_token": self.refresh_token})
        self.token = self.refresh_token = None

    async def me(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "/auth/me")
        return result

    async def create_task(
        self, task: Mapping[str, Any] | None = None, *, idempotency_key: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        result: dict[str, Any] = await self._call(
            "POST", "/api/v1/tasks", json=_task_body(task, fields), headers=headers
        )
        return result

    async def get_task(self, task_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", f"/api/v1/tasks/{quote(task_id, safe='')}")
        return result

    async def list_tasks(
        self, *, status: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "GET", "/api/v1/tasks", params=_params(status=status, limit=limit, cursor=cursor)
        )
        return result

    async def iter_tasks(
        self, *, status: str | None = None, page_size: int = 100
    ) -> AsyncIterator[dict[str, Any]]:
        cursor: str | None = None
        while True:
            page = await self.list_tasks(status=status, limit=page_size, cursor=cursor)
            for item in page["items"]:
                yield item
            cursor = page.get("next_cursor")
            if not cursor:
                return

    async def wait_for_task(
        self, task_id: str, timeout: float = 300.0, *, poll_interval: float = 1.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            task = await self.get_task(task_id)
            if task["status"] in TERMINAL_STATUSES:
                return task
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TaskTimeout(task, timeout)
            await asyncio.sleep(min(poll_interval, remaining))

    async def download_artifact(self, task_id: str, name: str) -> bytes:
        path = f"/api/v1/tasks/{quote(task_id, safe='')}/artifacts/{quote(name, safe='')}"
        return (await self.request("GET", path)).content

    async def put_credential(
        self, name: str, value: str, *, type: str = "password", description: str | None = None
    ) -> dict[str, Any]:
        body = {"name": name, "value": value, "type": type, "description": description}
        result: dict[str, Any] = await self._call("POST", "/api/v1/credentials", json=body)
        return result

    async def list_credentials(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._call("GET", "/api/v1/credentials")
        return result

    async def delete_credential(self, name: str) -> None:
        await self._call("DELETE", f"/api/v1/credentials/{quote(name, safe='')}")

    async def create_webhook(
        self, url: str, events: list[str] | None = None, *, description: str | None = None
    ) -> dict[str, Any]:
        body = _params(url=url, events=events, description=description)
        result: dict[str, Any] = await self._call("POST", "/admin/webhooks", json=body)
        return result

    async def list_webhooks(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._call("GET", "/admin/webhooks")
        return result

    async def delete_webhook(self, endpoint_id: str) -> None:
        await self._call("DELETE", f"/admin/webhooks/{quote(endpoint_id, safe='')}")

    async def list_deliveries(
        self, endpoint_id: str | None = None, *, limit: int = 50
    ) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._call(
            "GET", "/admin/webhooks/deliveries", params=_params(endpoint_id=endpoint_id, limit=limit)
        )
        return result

    async def create_worker_invite(
        self, tags: list[str] | None = None, *, ttl_seconds: int | None = None
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "POST", "/admin/workers/invite", json=_params(tags=tags, ttl_seconds=ttl_seconds)
        )
        return result

    async def list_workers(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._call("GET", "/admin/workers")
        return result

    async def health(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "/health")
        return result

    async def ready(self) -> dict[str, Any]:
        response = await self._http.get("/health/ready")
        if response.status_code == 503 and "checks" in response.text:
            result: dict[str, Any] = response.json()
            return result
        return dict(self._check(response).json())
