"""Secret references: `{{ secrets.NAME }}` (or `{{ secrets.NAME.totp }}`) in a task's steps, goal, proxy
or an organization's policy, replaced by the worker with the value the vault releases."""

from __future__ import annotations

import re

SECRET_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
# `{{ secrets.NAME }}` or `{{ secrets.NAME.totp }}`; anything else that looks like a reference is an error.
SECRET_REF = re.compile(r"\{\{\s*secrets\.([A-Za-z_][A-Za-z0-9_]{0,63})(\.totp)?\s*\}\}")
_LOOSE_REF = re.compile(r"\{\{\s*secrets\b[^}]*\}\}")


def secret_refs(text: str) -> set[str]:
    """Names referenced as `{{ secrets.NAME }}` in `text`; raises ValueError on a malformed reference."""
    names = {m.group(1) for m in SECRET_REF.finditer(text)}
    stripped = SECRET_REF.sub("", text)
    if _LOOSE_REF.search(stripped):
        raise ValueError("malformed secret reference: use {{ secrets.NAME }} with NAME of letters, digits, _")
    return names
