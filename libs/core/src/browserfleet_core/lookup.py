"""What a lookup found, or the 404 a caller gets when it found nothing."""

from __future__ import annotations

from typing import TypeVar

from .errors import NotFound

T = TypeVar("T")


def found(row: T | None, message: str, *, field: str | None = None, code: str | None = None) -> T:
    """`row`; NotFound(`message`) when it is None (an id of another organization reads as no row at all)."""
    if row is None:
        raise NotFound(message, field=field, code=code)
    return row
