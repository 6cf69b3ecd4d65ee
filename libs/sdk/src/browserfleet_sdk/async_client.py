"""`AsyncBrowserfleetClient`: the client of `browserfleet_sdk.client`, for asyncio code."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, Unpack

import httpx

from . import _calls as calls
from ._core import TERMINAL_STATUSES, HttpClientCore, Send, SseParser
from ._endpoints import ApiCalls
from .errors import BrowserfleetError, TaskTimeout


class AsyncBrowserfleetClient(ApiCalls, HttpClientCore[httpx.AsyncClient, httpx.AsyncBaseTransport]):
    """The same API as `BrowserfleetClient`, for asyncio code."""

    _http_class = httpx.AsyncClient

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncBrowserfleetClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def request(self, method: str, path: str, **send: Unpack[Send]) -> httpx.Response:
        response = await self._http.request(method, path, **self._signed(send))
        if self._should_refresh(response, path):
            await self.refresh()
            response = await self._http.request(method, path, **self._signed(send))
        return self._check(response)

    async def _call(self, method: str, path: str, **send: Unpack[Send]) -> Any:
        return self._json(await self.request(method, path, **send))

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
