"""How the CLI shows answers: a table (lists) or `key: value` lines (one object) for people, JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(_cell(v) for v in value) or "-"
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str], out: TextIO = sys.stdout) -> None:
    """Rows as aligned columns under an upper-case header; an empty list says so."""
    if not rows:
        print("(none)", file=out)
        return
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip(), file=out)
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip(), file=out)


def record(obj: dict[str, Any], fields: Sequence[str] | None = None, out: TextIO = sys.stdout) -> None:
    keys = [k for k in (fields or obj.keys()) if k in obj]
    width = max((len(k) for k in keys), default=0)
    for k in keys:
        print(
            f"{k.ljust(width)}  {_cell(obj[k]) if not isinstance(obj[k], dict) else json.dumps(obj[k])}",
            file=out,
        )


def as_json(value: Any, out: TextIO = sys.stdout) -> None:
    print(json.dumps(value, indent=2, sort_keys=True, default=str), file=out)
