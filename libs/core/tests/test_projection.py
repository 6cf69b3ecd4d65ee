from __future__ import annotations

from dataclasses import dataclass

import pytest
from browserfleet_core.projection import attributes, project
from pydantic import BaseModel


@dataclass
class Row:
    id: str
    name: str
    kind: str
    secret: str = "never shown"


class Public(BaseModel):
    id: str
    name: str
    kind: str
    note: str | None = None


def test_attributes_are_read_by_name() -> None:
    assert attributes(Row("r1", "one", "a"), "id", "kind") == {"id": "r1", "kind": "a"}


def test_project_reads_each_field_and_takes_the_given_ones_as_they_are() -> None:
    reply = project(Public, Row("r1", "one", "a"), kind="b", note="computed")
    assert reply == Public(id="r1", name="one", kind="b", note="computed")


def test_a_field_the_source_lacks_is_an_error_not_its_default() -> None:
    with pytest.raises(AttributeError, match="note"):
        project(Public, Row("r1", "one", "a"))
