from __future__ import annotations

from dataclasses import dataclass

import pytest
from browserfleet_core.runtime_parts import Required, required


def test_required_is_the_part_or_the_reason_it_is_missing() -> None:
    assert required(0, "never raised") == 0
    with pytest.raises(RuntimeError, match="no database here"):
        required(None, "no database here")


@dataclass
class Runtime:
    _db: str | None = None
    db = Required[str]("runtime has no database")


def test_a_required_property_reads_its_underscored_field() -> None:
    assert Runtime("pool").db == "pool"
    with pytest.raises(RuntimeError, match="runtime has no database"):
        _ = Runtime().db
    assert isinstance(Runtime.db, Required)
