"""Secret templating and masking: values exist only at the moment a step uses them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qs, quote, quote_plus, urlsplit

from browserfleet_contracts.secret_refs import SECRET_REF
from browserfleet_core.observability import SecretMask

MASK = "***"


class SecretUnavailable(Exception):
    pass


def totp(seed: str, *, at: float | None = None, digits: int = 6, period: int = 30) -> str:
    """RFC 6238 code for a base32 seed (or an otpauth:// URI), the way authenticator apps compute it."""
    if seed.startswith("otpauth://"):
        seed = parse_qs(urlsplit(seed).query).get("secret", [""])[0]
    cleaned = seed.replace(" ", "").replace("-", "").upper()
    try:
        key = base64.b32decode(cleaned + "=" * (-len(cleaned) % 8))
    except ValueError as exc:
        raise SecretUnavailable("a .totp secret must hold a base32 seed") from exc
    counter = int((time.time() if at is None else at) // period)
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    code = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(code % 10**digits).zfill(digits)


def render(text: str, values: Mapping[str, str]) -> str:
    """`text` with every `{{ secrets.NAME }}` replaced by its released value."""

    def sub(m: Any) -> str:
        name, suffix = m.group(1), m.group(2)
        if name not in values:
            raise SecretUnavailable(f"secret {name} was not released to this task")
        return totp(values[name]) if suffix else values[name]

    return SECRET_REF.sub(sub, text)


def variants(value: str) -> set[str]:
    # a value typed into a form comes back percent-encoded in URLs (GET forms, redirects)
    return {v for v in (value, quote(value, safe=""), quote_plus(value)) if v}


class Substitution:
    """Replaces secret values (each as `variants` gives it) in text by what stands for them."""

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        # longest first, so a secret that contains another is replaced whole
        self._pairs = sorted(pairs, key=lambda p: len(p[0]), reverse=True)

    def text(self, text: str) -> str:
        for value, replacement in self._pairs:
            if value in text:
                text = text.replace(value, replacement)
        return text


class Masker(Substitution):
    """Masks a known set of values out of text and JSON-like structures."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        found: set[str] = set()
        for v in values:
            found |= variants(v)
        super().__init__((v, MASK) for v in found)

    def deep(self, obj: Any) -> Any:
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, dict):
            return {self.deep(k): self.deep(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [self.deep(v) for v in obj]
        return obj


class MaskRegistry:
    """Reference-counts values registered with the process-wide log filter.

    Two tasks may hold the same secret at once; forgetting it when the first ends would unmask it in the
    second one's log lines.
    """

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()

    def register(self, values: Iterable[str]) -> list[str]:
        held: list[str] = []
        for value in values:
            for v in variants(value):
                self._counts[v] += 1
                held.append(v)
        SecretMask.register(*held)
        return held

    def release(self, held: Iterable[str]) -> None:
        gone: list[str] = []
        for v in held:
            self._counts[v] -= 1
            if self._counts[v] <= 0:
                del self._counts[v]
                gone.append(v)
        SecretMask.forget(*gone)
