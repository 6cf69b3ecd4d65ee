"""Reply models filled from the rows (or frames) they describe, field by field under the same names: the
services' `*_public` functions then spell out only what differs (a renamed or computed field)."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)


def attributes(source: object, *names: str) -> dict[str, Any]:
    """`{name: source.name}` for each name."""
    return {name: getattr(source, name) for name in names}


def project(model: type[M], source: object, /, **values: Any) -> M:
    """`model` with every field read from `source`'s attribute of the same name, but those given in `values`
    (named otherwise on the source, or computed). A field the source lacks is an AttributeError rather than
    the field's default: a reply quietly falling back would hide a renamed column."""
    names = [name for name in model.model_fields if name not in values]
    return model(**attributes(source, *names), **values)
