"""What the client raises: every error answer of the API, and a wait that gave up."""

from __future__ import annotations

import contextlib
from typing import Any

import httpx


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
