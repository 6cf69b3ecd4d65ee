"""A service runtime's optional parts (its database, relay, ...), which a broker built only to describe the
service (or a replica without DATABASE_URL) lacks: asking for a missing one is a RuntimeError naming why."""

from __future__ import annotations

from typing import Generic, TypeVar, overload

T = TypeVar("T")


def required(part: T | None, missing: str) -> T:
    """`part`, or RuntimeError(`missing`) when this runtime was built without it."""
    if part is None:
        raise RuntimeError(missing)
    return part


class Required(Generic[T]):
    """A runtime's property for the optional part it keeps in `_<name>`: `required(part, missing)`.
    `db = Required[Database]("...")` stands for the property that returns `self._db` or raises."""

    def __init__(self, missing: str) -> None:
        self.missing = missing
        self.attribute = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.attribute = f"_{name}"

    @overload
    def __get__(self, runtime: None, owner: type) -> Required[T]: ...
    @overload
    def __get__(self, runtime: object, owner: type) -> T: ...
    def __get__(self, runtime: object | None, owner: type) -> Required[T] | T:
        if runtime is None:
            return self
        part: T | None = getattr(runtime, self.attribute)
        return required(part, self.missing)
