"""The encrypted, checksummed backup file (docs/operations.md "The archive format").

    magic "BFBACKUP" | version 0x01 | header length (u32, big endian) | header (JSON)
    records: u32 length (the top bit marks the last record) | AES-256-GCM ciphertext of one chunk + tag
    trailer: SHA-256 of every byte before it (the whole file's checksum; needs no key)

The plaintext is a tar stream (`tarfile` "w|"). The key is derived from the operator's secret with scrypt
(salt in the header), then split with HKDF into the encryption key and a key-check value stored in the
header, so a wrong key is told apart from a damaged file before anything is decrypted. Chunk `i`'s nonce is
a random 7-byte prefix, `i` (u32) and the last-record flag, and every chunk authenticates the header as
associated data: reordered, dropped, truncated or appended chunks and an edited header all fail.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

MAGIC = b"BFBACKUP"
VERSION = 1
FORMAT = "browserfleet-backup"
CHUNK_SIZE = 1 << 20
TAG = 16
LAST = 0x8000_0000
MIN_KEY_LENGTH = 16
# scrypt cost: ~0.1 s and 32 MiB once per archive, so guessing a weak key is slow
SCRYPT = {"n": 1 << 15, "r": 8, "p": 1}


class ArchiveError(Exception):
    """The archive cannot be used: damaged, not ours, or the key is wrong (the message says which)."""


class WrongKey(ArchiveError):
    pass


def load_key(key_file: Path | None, env: dict[str, str] | None = None) -> str:
    """The operator's backup key: `--key-file` (its first line) or BROWSERFLEET_BACKUP_KEY."""
    environ = env if env is not None else dict(os.environ)
    if key_file is not None:
        try:
            key = key_file.read_text().strip()
        except OSError as exc:
            raise ArchiveError(f"cannot read the key file {key_file}: {exc.strerror}") from None
    else:
        key = environ.get("BROWSERFLEET_BACKUP_KEY", "").strip()
        if not key:
            raise ArchiveError("no backup key: set BROWSERFLEET_BACKUP_KEY or pass --key-file")
    if len(key) < MIN_KEY_LENGTH:
        raise ArchiveError(f"the backup key must be at least {MIN_KEY_LENGTH} characters")
    return key


@dataclass(frozen=True)
class _Keys:
    encryption: bytes
    check: bytes


def _derive(secret: str, salt: bytes, n: int, r: int, p: int) -> _Keys:
    master = Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(secret.encode())

    def expand(info: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(master)

    return _Keys(expand(b"browserfleet-backup aes-256-gcm"), expand(b"browserfleet-backup key-check"))


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    return prefix + struct.pack(">IB", index, 1 if last else 0)


class ArchiveWriter:
    """A file-like sink: `write()` plaintext, `close()` seals the last chunk and the trailer."""

    def __init__(self, out: IO[bytes], secret: str, *, chunk_size: int = CHUNK_SIZE) -> None:
        salt, prefix = os.urandom(16), os.urandom(7)
        keys = _derive(secret, salt, **SCRYPT)
        header = {
            "format": FORMAT,
            "version": VERSION,
            "cipher": "AES-256-GCM",
            "chunk_size": chunk_size,
            "kdf": {"name": "scrypt", **SCRYPT, "salt": base64.b64encode(salt).decode()},
            "nonce_prefix": base64.b64encode(prefix).decode(),
            "key_check": base64.b64encode(keys.check).decode(),
            "created_at": datetime.now(UTC).isoformat(),
        }
        body = json.dumps(header, sort_keys=True).encode()
        self._head = MAGIC + bytes([VERSION]) + struct.pack(">I", len(body)) + body
        self._out = out
        self._sha = hashlib.sha256()
        self._aead = AESGCM(keys.encryption)
        self._prefix = prefix
        self._chunk = chunk_size
        self._buf = bytearray()
        self._index = 0
        self._closed = False
        self._emit(self._head)

    def _emit(self, data: bytes) -> None:
        self._sha.update(data)
        self._out.write(data)

    def _seal(self, plain: bytes, last: bool) -> None:
        sealed = self._aead.encrypt(_nonce(self._prefix, self._index, last), plain, self._head)
        self._emit(struct.pack(">I", len(sealed) | (LAST if last else 0)) + sealed)
        self._index += 1

    def write(self, data: bytes) -> int:
        self._buf += data
        while len(self._buf) > self._chunk:
            self._seal(bytes(self._buf[: self._chunk]), False)
            del self._buf[: self._chunk]
        return len(data)

    def flush(self) -> None:  # tarfile calls it; chunks are sealed only when full
        pass

    def close(self) -> str:
        """Seals what is left and writes the trailer; returns the whole file's SHA-256 (hex)."""
        if self._closed:
            raise ArchiveError("archive already closed")
        self._closed = True
        self._seal(bytes(self._buf), True)
        digest = self._sha.digest()
        self._out.write(digest)
        return digest.hex()


def file_checksum(path: Path) -> str:
    """Checks the trailer against the bytes before it; returns the checksum (hex). Needs no key."""
    size = path.stat().st_size
    if size < len(MAGIC) + 5 + 32:
        raise ArchiveError(f"{path} is too short to be a browserfleet backup")
    sha = hashlib.sha256()
    with path.open("rb") as fh:
        if fh.read(len(MAGIC)) != MAGIC:
            raise ArchiveError(f"{path} is not a browserfleet backup")
        sha.update(MAGIC)
        remaining = size - len(MAGIC) - 32
        while remaining:
            block = fh.read(min(remaining, 1 << 20))
            if not block:
                raise ArchiveError(f"{path} ended early")
            sha.update(block)
            remaining -= len(block)
        trailer = fh.read(32)
    if not hmac.compare_digest(sha.digest(), trailer):
        raise ArchiveError(f"{path} is damaged: its checksum does not match its contents")
    return trailer.hex()


def _read_exact(fh: IO[bytes], n: int, what: str) -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise ArchiveError(f"the archive ended inside its {what}")
    return data


def read_header(fh: IO[bytes]) -> tuple[dict[str, Any], bytes]:
    if _read_exact(fh, len(MAGIC), "magic") != MAGIC:
        raise ArchiveError("not a browserfleet backup")
    version = _read_exact(fh, 1, "version")[0]
    if version != VERSION:
        raise ArchiveError(f"archive format version {version} is not supported (this code reads {VERSION})")
    (length,) = struct.unpack(">I", _read_exact(fh, 4, "header length"))
    if length > 1 << 16:
        raise ArchiveError("archive header too large")
    body = _read_exact(fh, length, "header")
    try:
        header = json.loads(body)
    except ValueError:
        raise ArchiveError("archive header is not JSON") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ArchiveError("not a browserfleet backup header")
    return header, MAGIC + bytes([version]) + struct.pack(">I", length) + body


def _keys_for(header: dict[str, Any], secret: str) -> _Keys:
    try:
        kdf = header["kdf"]
        if kdf["name"] != "scrypt" or header["cipher"] != "AES-256-GCM":
            raise ArchiveError(f"unsupported cipher or key derivation: {header['cipher']}, {kdf['name']}")
        keys = _derive(secret, base64.b64decode(kdf["salt"]), int(kdf["n"]), int(kdf["r"]), int(kdf["p"]))
        expected = base64.b64decode(header["key_check"])
    except (KeyError, TypeError, ValueError):
        raise ArchiveError("archive header is incomplete") from None
    if not hmac.compare_digest(keys.check, expected):
        raise WrongKey("wrong backup key: this archive was encrypted with another key")
    return keys


def check_key(path: Path, secret: str) -> dict[str, Any]:
    """The header, once the key is known to be the archive's (nothing is decrypted)."""
    with path.open("rb") as fh:
        header, _ = read_header(fh)
    _keys_for(header, secret)
    return header


def decrypt_chunks(path: Path, secret: str) -> Iterator[bytes]:
    """The plaintext, chunk by chunk, each authenticated before it is yielded. Ends only after the last
    record, and only when exactly the 32-byte trailer follows it."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        header, head = read_header(fh)
        keys = _keys_for(header, secret)
        aead = AESGCM(keys.encryption)
        prefix = base64.b64decode(header["nonce_prefix"])
        chunk = int(header["chunk_size"])
        index = 0
        while True:
            if fh.tell() + 4 > size - 32:
                raise ArchiveError("the archive is truncated: its last chunk is missing")
            (word,) = struct.unpack(">I", _read_exact(fh, 4, "record length"))
            last, length = bool(word & LAST), word & ~LAST
            if length > chunk + TAG or length < TAG:
                raise ArchiveError(f"record {index} has an impossible length")
            sealed = _read_exact(fh, length, f"record {index}")
            try:
                plain = aead.decrypt(_nonce(prefix, index, last), sealed, head)
            except InvalidTag:
                raise ArchiveError(f"record {index} failed authentication: the archive was altered") from None
            yield plain
            index += 1
            if last:
                break
        if size - fh.tell() != 32:
            raise ArchiveError("unexpected bytes after the last record")


class DecryptingReader:
    """A file-like reader over `decrypt_chunks`, for `tarfile.open(fileobj=..., mode="r|")`."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = bytearray()
        self._done = False

    def read(self, n: int = -1) -> bytes:
        while not self._done and (n < 0 or len(self._buf) < n):
            try:
                self._buf += next(self._chunks)
            except StopIteration:
                self._done = True
        if n < 0:
            n = len(self._buf)
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out
