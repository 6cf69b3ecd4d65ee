"""`AsyncBrowserfleetClient`: the client of `browserfleet_sdk.client`, for asyncio code."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx

from . import _calls as calls
from ._calls import async_call
from ._core import TERMINAL_STATUSES, HttpClientCore, SseParser
from .errors import BrowserfleetError, TaskTimeout


class AsyncBrowserfleetClient(HttpClientCore[httpx.AsyncClient, httpx.AsyncBaseTransport]):
    """The same API as `BrowserfleetClient`, for asyncio code."""

    _http_class = httpx.AsyncClient

    # the calls that are one request each (`_calls`)
    me = async_call(calls.me)
    create_task = async_call(calls.create_task)
    get_task = async_call(calls.get_task)
    list_tasks = async_call(calls.list_tasks)
    cancel_task = async_call(calls.cancel_task)
    task_logs = async_call(calls.task_logs)
    list_artifacts = async_call(calls.list_artifacts)
    download_artifact = async_call(calls.download_artifact)
    put_credential = async_call(calls.put_credential)
    list_credentials = async_call(calls.list_credentials)
    delete_credential = async_call(calls.delete_credential)
    update_credential = async_call(calls.update_credential)
    delete_credential_by_id = async_call(calls.delete_credential_by_id)
    create_webhook = async_call(calls.create_webhook)
    list_webhooks = async_call(calls.list_webhooks)
    delete_webhook = async_call(calls.delete_webhook)
    list_deliveries = async_call(calls.list_deliveries)
    get_webhook = async_call(calls.get_webhook)
    update_webhook = async_call(calls.update_webhook)
    get_delivery = async_call(calls.get_delivery)
    replay_delivery = async_call(calls.replay_delivery)
    replay_failed = async_call(calls.replay_failed)
    get_replay_job = async_call(calls.get_replay_job)
    send_test_event = async_call(calls.send_test_event)
    rotate_webhook_secret = async_call(calls.rotate_webhook_secret)
    create_worker_invite = async_call(calls.create_worker_invite)
    list_workers = async_call(calls.list_workers)
    drain_worker = async_call(calls.drain_worker)
    revoke_worker = async_call(calls.revoke_worker)
    create_api_key = async_call(calls.create_api_key)
    list_api_keys = async_call(calls.list_api_keys)
    revoke_api_key = async_call(calls.revoke_api_key)
    health = async_call(calls.health)

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

    async def follow_logs(self, task_id: str, *, since: int = 0) -> AsyncIterator[dict[str, Any]]:
        """Every log line as the task writes it (the SSE route), until the task is finished; reconnects with
        the last line's id when a stream ends early."""
        cursor = calls.LogCursor(task_id, since)
        while not cursor.finished:
            call = cursor.stream()
            async with self._http.stream(
                call.method, call.path, params=call.params, headers=self._headers(call.headers), timeout=None
            ) as response:
                if response.is_error:
                    await response.aread()
                    self._check(response)
                parser = SseParser()
                async for text in response.aiter_lines():
                    event = parser.feed(text)
                    line = None if event is None else cursor.line(*event)
                    if line is not None:
                        yield line
                    elif cursor.stream_ended:
                        break

    async def ready(self) -> dict[str, Any]:
        """The readiness report, also when degraded (a 503 here is an answer, not an error)."""
        return self._readiness(await self._http.get("/health/ready"))
