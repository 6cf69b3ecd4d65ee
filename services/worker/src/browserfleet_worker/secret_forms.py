"""The byte forms a secret value takes in what a browser writes down (trace events, DOM snapshots, request
bodies, URLs, HTML, JSON, base64 headers), and a scanner that finds or overwrites every one of them, also inside
gzip members, zip entries and PDF Flate streams.

Forms (each as UTF-8 bytes unless said otherwise):
* plain; also Windows-1252 (a page without a charset posts its form in it) and UTF-16 (LE, BE, BE as hex: PDF
  metadata strings);
* percent-encoded the way every URL encoder a page can use does it (RFC 3986, HTML forms, encodeURIComponent,
  the URL parser's query/path/userinfo sets), space as `%20` or `+`, hex upper or lower, in UTF-8 and 1252;
* JSON-escaped (as JSON.stringify writes it, ASCII-only `\\u00e9`, `\\/`, and `\\u003c` for `<>&'`) and
  HTML-escaped (`&quot;`/`&#34;`/`&#x27;`/`&#39;`, non-ASCII as `&#233;`), of the plain and of every
  percent-encoded form;
* base64 (standard and URL-safe) of the plain bytes at each of the three alignments: the characters that depend
  on the secret alone, whatever bytes come before or after it (`Basic dXNlcjpwQHNz...`).

A form shorter than MIN_FORM_BYTES is not searched: it occurs by chance in any binary file. Values shorter than
MIN_CHARS are therefore not searched at all (`SecretScanner.short` names them).
"""

from __future__ import annotations

import base64
import functools
import html
import io
import json
import re
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

MIN_CHARS = 4
MIN_FORM_BYTES = 4
ANCHOR_BYTES = 64
# what a deep scan may decompress in total: a larger file is "cannot verify", never "clean"
DEEP_SCAN_BUDGET = 256 * 1024 * 1024
DEEP_SCAN_DEPTH = 3

_ALNUM = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_PRINTABLE = frozenset(range(0x21, 0x7F))
# printable ASCII bytes each encoder leaves as they are (space, controls and non-ASCII are always encoded)
_KEEP = {
    "rfc3986": _ALNUM | frozenset(b"-._~"),
    "form": _ALNUM | frozenset(b"*-._"),
    "component": _ALNUM | frozenset(b"-_.!~*'()"),
    "query": _PRINTABLE - frozenset(b"\"#<>'"),
    "path": _PRINTABLE - frozenset(b'"#<>?`{}'),
    "userinfo": _PRINTABLE - frozenset(b'"#<>?`{}/:;=@[\\]^|'),
}


@functools.cache
def _percent_table(keep: frozenset[int], plus: bool, lower: bool) -> tuple[str, ...]:
    hexed = "%{:02x}" if lower else "%{:02X}"
    return tuple(chr(b) if b in keep else "+" if b == 0x20 and plus else hexed.format(b) for b in range(256))


def _percent(data: bytes, keep: frozenset[int], plus: bool, lower: bool) -> str:
    table = _percent_table(keep, plus, lower)
    return "".join([table[b] for b in data])


def _charsets(value: str) -> list[bytes]:
    encoded = [value.encode()]
    legacy = value.encode("cp1252", errors="xmlcharrefreplace")  # what a form posts from a 1252 page
    if legacy != encoded[0]:
        encoded.append(legacy)
    return encoded


def _json_forms(text: str) -> set[str]:
    raw = json.dumps(text, ensure_ascii=False)[1:-1]
    ascii_only = json.dumps(text)[1:-1]
    found = {raw, ascii_only, raw.replace("/", "\\/"), ascii_only.replace("/", "\\/")}
    found.add(re.sub(r"[<>&']", lambda m: f"\\u{ord(m.group()):04x}", ascii_only))
    return found


def _html_forms(text: str) -> set[str]:
    escaped = html.escape(text)
    return {
        escaped,
        html.escape(text, quote=False),
        escaped.replace("&quot;", "&#34;").replace("&#x27;", "&#39;"),
        escaped.encode("ascii", errors="xmlcharrefreplace").decode(),
    }


def _base64_forms(data: bytes) -> set[bytes]:
    found: set[bytes] = set()
    for shift in range(3):
        # characters i with 6i >= 8*shift hold no bit of the bytes before; those with 6i+6 <= 8*(shift+n)
        # none of the bytes after
        start = -(-8 * shift // 6)
        end = 8 * (shift + len(data)) // 6
        encoded = base64.b64encode(b"\0" * shift + data + b"\0\0")[start:end]
        found |= {encoded, encoded.replace(b"+", b"-").replace(b"/", b"_")}
    return found


def forms(value: str) -> set[bytes]:
    """Every byte form of `value` searched for (module docstring), at least MIN_FORM_BYTES long."""
    texts = {value}
    for data in _charsets(value):
        for keep in _KEEP.values():
            for plus in (False, True):
                for lower in (False, True):
                    texts.add(_percent(data, keep, plus, lower))
    escaped: set[str] = set()
    for text in texts:
        escaped |= _json_forms(text) | _html_forms(text)
    found = {t.encode() for t in texts | escaped}
    found |= set(_charsets(value))
    utf16 = value.encode("utf-16-be")
    found |= {value.encode("utf-16-le"), utf16, utf16.hex().encode(), utf16.hex().upper().encode()}
    for data in _charsets(value):
        found |= _base64_forms(data)
    return {f for f in found if len(f) >= MIN_FORM_BYTES}


@dataclass(frozen=True)
class Finding:
    """A secret form in a file: `secret` names the secret, or is None when the file could not be verified
    (compressed beyond the budget, encrypted, corrupt); `where` says inside what it was."""

    secret: str | None
    where: str = ""

    def describe(self) -> str:
        inside = f" ({self.where})" if self.where else ""
        if self.secret is None:
            return f"it could not be checked for secret values{inside}"
        return f"it contains the value of secret {self.secret}{inside}"


class _Unverifiable(Exception):
    pass


class SecretScanner:
    """Finds and overwrites the forms of a task's secret values (by name) in bytes. Cheap to create: the
    forms and their regex are built on the first search (in a worker thread, for a long value)."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        self.short = sorted(name for name, value in secrets.items() if len(value) < MIN_CHARS)
        self._values = {name: value for name, value in sorted(secrets.items()) if len(value) >= MIN_CHARS}

    def __bool__(self) -> bool:
        return bool(self._values)

    @functools.cached_property
    def _compiled(self) -> tuple[re.Pattern[bytes], dict[bytes, list[tuple[bytes, str]]], list[int]]:
        # The regex matches the forms' first ANCHOR_BYTES only (a long value's regex would take seconds to
        # compile); a match is then checked against the whole forms starting with it, longest first.
        by_anchor: dict[bytes, list[tuple[bytes, str]]] = {}
        for name, value in self._values.items():
            for form in forms(value):
                by_anchor.setdefault(form[:ANCHOR_BYTES], []).append((form, name))
        for candidates in by_anchor.values():
            candidates.sort(key=lambda c: len(c[0]), reverse=True)
        lengths = sorted({len(anchor) for anchor in by_anchor}, reverse=True)
        return _pattern(by_anchor), by_anchor, lengths

    @property
    def form_count(self) -> int:
        return sum(len(c) for c in self._compiled[1].values()) if self else 0

    def _matches(self, data: bytes) -> Iterator[tuple[int, bytes, str]]:
        """(offset, form, secret name) of each form in `data`, left to right, not overlapping."""
        if not self:
            return
        pattern, by_anchor, lengths = self._compiled
        pos = 0
        while (match := pattern.search(data, pos)) is not None:
            start, found = match.start(), match.group()
            hit = next(
                (
                    (form, name)
                    for length in lengths
                    if length <= len(found)
                    for form, name in by_anchor.get(found[:length], ())
                    if data.startswith(form, start)
                ),
                None,
            )
            if hit is None:
                pos = start + 1
                continue
            yield start, hit[0], hit[1]
            pos = start + len(hit[0])

    def first(self, data: bytes) -> str | None:
        """The name of a secret whose form is in `data` (not looking inside compressed content)."""
        return next((name for _, _, name in self._matches(data)), None)

    def scrub(self, data: bytes) -> tuple[bytes, int]:
        """`data` with every form overwritten by as many filler bytes (offsets inside the file keep)."""
        parts: list[bytes] = []
        done = count = 0
        for start, form, _name in self._matches(data):
            parts += [data[done:start], _filler(form) * len(form)]
            done = start + len(form)
            count += 1
        if not count:
            return data, 0
        parts.append(data[done:])
        return b"".join(parts), count

    def deep_find(self, data: bytes, *, raw: bool = True) -> Finding | None:
        """A form in `data` or in what it compresses (gzip, zip entries, PDF Flate streams, nested up to
        DEEP_SCAN_DEPTH); a Finding with no secret when part of it cannot be verified. `raw=False` looks
        only inside the compressed content (for bytes just scrubbed)."""
        if not self:
            return None
        budget = [DEEP_SCAN_BUDGET]
        try:
            return self._deep(data, "", DEEP_SCAN_DEPTH, budget, raw)
        except _Unverifiable as exc:
            return Finding(None, str(exc))

    def _deep(
        self, data: bytes, where: str, depth: int, budget: list[int], raw: bool = True
    ) -> Finding | None:
        name = self.first(data) if raw else None
        if name is not None:
            return Finding(name, where)
        if depth == 0:
            return None
        for label, inner in _expand(data, budget):
            found = self._deep(inner, f"{where} > {label}" if where else label, depth - 1, budget)
            if found is not None:
                return found
        return None


def _pattern(forms: Iterable[bytes]) -> re.Pattern[bytes]:
    """One regex matching any of `forms`, the longest where several start at one place. Built as a trie
    (`p(?:@ss|%40ss)...`): the forms share most of their bytes, and a plain alternation tries each of them at
    every position, about 3x slower on a trace."""
    try:
        return re.compile(_trie(sorted(set(forms))))
    except (RecursionError, re.error):  # a huge value with thousands of branch points
        ordered = sorted(forms, key=len, reverse=True)
        return re.compile(b"|".join(re.escape(f) for f in ordered))


def _trie(forms: list[bytes]) -> bytes:
    """The regex of sorted, distinct `forms`; an empty one means a form may end here."""
    ends = bool(forms) and forms[0] == b""
    rest = forms[1:] if ends else forms
    branches: list[bytes] = []
    start = 0
    while start < len(rest):
        end = start
        while end < len(rest) and rest[end][0] == rest[start][0]:
            end += 1
        group = rest[start:end]
        first, last = group[0], group[-1]  # sorted: their common prefix is the group's
        size = 0
        while size < min(len(first), len(last)) and first[size] == last[size]:
            size += 1
        prefix = first[:size]
        branches.append(re.escape(prefix) + _trie([f[len(prefix) :] for f in group]))
        start = end
    if not branches:
        return b""
    if len(branches) == 1 and not ends:
        return branches[0]
    alternatives = b"(?:" + b"|".join(branches) + b")"
    return alternatives + b"?" if ends else alternatives  # greedy: the longer form first


def _filler(form: bytes) -> bytes:
    for candidate in (b"*", b"#", b"x"):
        if candidate not in form:
            return candidate
    return b"?"


def _take(budget: list[int], size: int, what: str) -> None:
    budget[0] -= size
    if budget[0] < 0:
        raise _Unverifiable(f"{what}: more than {DEEP_SCAN_BUDGET // (1024 * 1024)} MiB once decompressed")


def _inflate(decompressor: zlib._Decompress, data: bytes, budget: list[int], what: str) -> bytes:
    out = decompressor.decompress(data, max(budget[0], 0) + 1)
    _take(budget, len(out), what)
    if decompressor.unconsumed_tail:
        raise _Unverifiable(f"{what}: more than {DEEP_SCAN_BUDGET // (1024 * 1024)} MiB once decompressed")
    return out


def _expand(data: bytes, budget: list[int]) -> Iterable[tuple[str, bytes]]:
    """What `data` holds compressed: (label, bytes) per gzip member, zip entry or PDF Flate stream."""
    if data.startswith(b"\x1f\x8b"):
        rest, member = data, 0
        while rest.startswith(b"\x1f\x8b"):
            member += 1
            decompressor = zlib.decompressobj(wbits=31)
            try:
                out = _inflate(decompressor, rest, budget, "gzip")
            except zlib.error:
                raise _Unverifiable("a gzip stream that does not decompress") from None
            if not decompressor.eof:
                raise _Unverifiable("a truncated gzip stream")
            yield f"gzip member {member}", out
            rest = decompressor.unused_data
    elif data.startswith(b"PK\x03\x04") or data.startswith(b"PK\x05\x06"):
        yield from _zip_entries(data, budget)
    elif data.startswith(b"%PDF-"):
        for index, match in enumerate(re.finditer(rb"(?<!end)stream\r?\n", data)):
            stream = _pdf_stream(data, match.end(), budget)
            if stream is not None:
                yield f"PDF stream {index}", stream


def _pdf_stream(data: bytes, start: int, budget: list[int]) -> bytes | None:
    """A Flate stream's content; None for a stream in another filter (an image): its raw bytes were scanned.
    The stream ends at an `endstream`, the first one that ends its compressed data (the word may occur in it)."""
    end = data.find(b"endstream", start)
    while end != -1:
        decompressor = zlib.decompressobj()
        try:
            out = _inflate(decompressor, data[start:end], budget, "PDF stream")
        except zlib.error:
            return None
        if decompressor.eof:
            return out
        budget[0] += len(out)  # tried again on a longer slice
        end = data.find(b"endstream", end + 1)
    return None


def _zip_entries(data: bytes, budget: list[int]) -> Iterable[tuple[str, bytes]]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, ValueError, EOFError):
        raise _Unverifiable("a zip archive that cannot be read") from None
    for info in infos:
        if info.flag_bits & 0x1:
            raise _Unverifiable(f"zip entry {info.filename} is encrypted")
        _take(budget, info.file_size, f"zip entry {info.filename}")
        try:
            with archive.open(info) as entry:
                content = entry.read(info.file_size + 1)
        except (zipfile.BadZipFile, NotImplementedError, ValueError, EOFError, zlib.error) as exc:
            raise _Unverifiable(f"zip entry {info.filename}: {type(exc).__name__}") from None
        yield f"zip entry {info.filename}", content
