from __future__ import annotations

import pytest
from browserfleet_core.errors import NotFound
from browserfleet_core.lookup import found


def test_a_row_is_returned_as_it_is() -> None:
    row = object()
    assert found(row, "row not found") is row
    assert found(0, "zero is a value") == 0


def test_no_row_is_a_404_naming_what_and_where() -> None:
    with pytest.raises(NotFound) as exc:
        found(None, "worker not found", code="worker_not_found")
    assert (exc.value.message, exc.value.code, exc.value.status, exc.value.field) == (
        "worker not found",
        "worker_not_found",
        404,
        None,
    )
    with pytest.raises(NotFound) as exc:
        found(None, "webhook delivery not found", field="id")
    assert (exc.value.code, exc.value.field) == ("not_found", "id")
