"""One spelling per email, name and slug, and the size of an organization's settings: checked here so an
NFKC look-alike or a NUL cannot make a second account or slip into the database."""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

from browserfleet_contracts.auth import normalize_email as email_rule
from browserfleet_core.errors import Invalid

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
MAX_SETTINGS_BYTES = 16_384


def normalize_email(raw: str, *, field: str = "email") -> str:
    """The platform's one email rule (`browserfleet_contracts.auth.normalize_email`: the gateway's request
    models apply the same), as a 422 naming `field`."""
    try:
        return email_rule(raw)
    except ValueError as exc:
        raise Invalid(f"{field}: {exc}", field=field) from None


def clean_name(raw: str, *, field: str, max_length: int = 200) -> str:
    name = unicodedata.normalize("NFKC", raw).strip()
    if _CONTROL.search(name):
        raise Invalid(f"{field}: must not contain control characters", field=field)
    if not name:
        raise Invalid(f"{field}: must not be empty", field=field)
    if len(name) > max_length:
        raise Invalid(f"{field}: at most {max_length} characters", field=field)
    return name


def slugify(name: str, *, max_length: int = 63) -> str:
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:max_length].strip("-")


def normalize_slug(raw: str) -> str:
    """One spelling per slug: NFKC, trimmed, case-folded, then `[a-z0-9-]` only (no NUL, no look-alikes)."""
    if "\x00" in raw:
        raise Invalid("slug: must not contain NUL", field="slug")
    slug = unicodedata.normalize("NFKC", raw).strip().casefold()
    if not _SLUG.match(slug):
        raise Invalid(
            "slug: 1 to 63 of a-z, 0-9 and '-', starting and ending with a letter or digit", field="slug"
        )
    return slug


def check_settings(value: dict[str, Any]) -> dict[str, Any]:
    if len(json.dumps(value)) > MAX_SETTINGS_BYTES:
        raise Invalid(f"settings: at most {MAX_SETTINGS_BYTES} bytes of JSON", field="settings")
    if "\\u0000" in json.dumps(value):
        raise Invalid("settings: must not contain NUL", field="settings")
    return value
