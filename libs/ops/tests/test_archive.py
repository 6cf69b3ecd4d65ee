"""The archive format on its own: what goes in comes out, and every kind of damage or a wrong key is refused
with the reason, before any plaintext is returned."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest
from browserfleet_ops.archive import (
    ArchiveError,
    ArchiveWriter,
    WrongKey,
    check_key,
    decrypt_chunks,
    file_checksum,
    load_key,
)

KEY = "a-backup-key-of-some-length"


def write(path: Path, data: bytes, chunk: int = 1000) -> bytes:
    buf = io.BytesIO()
    writer = ArchiveWriter(buf, KEY, chunk_size=chunk)
    for i in range(0, len(data), 333):
        writer.write(data[i : i + 333])
    writer.close()
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def reseal(path: Path, body: bytes) -> None:
    """`body` with a valid whole-file checksum: damage only the key-dependent checks can find."""
    path.write_bytes(body + hashlib.sha256(body).digest())


def test_round_trip_across_chunks(tmp_path: Path) -> None:
    data = os.urandom(5_500)
    write(tmp_path / "a", data)
    file_checksum(tmp_path / "a")
    assert b"".join(decrypt_chunks(tmp_path / "a", KEY)) == data


def test_empty_plaintext(tmp_path: Path) -> None:
    write(tmp_path / "a", b"")
    assert b"".join(decrypt_chunks(tmp_path / "a", KEY)) == b""


def test_wrong_key_is_told_apart_from_damage(tmp_path: Path) -> None:
    write(tmp_path / "a", b"secret rows")
    with pytest.raises(WrongKey):
        check_key(tmp_path / "a", "another-key-entirely")
    with pytest.raises(WrongKey):
        list(decrypt_chunks(tmp_path / "a", "another-key-entirely"))


def test_a_flipped_byte_fails_the_whole_file_checksum(tmp_path: Path) -> None:
    raw = bytearray(write(tmp_path / "a", os.urandom(3000)))
    raw[len(raw) // 2] ^= 1
    (tmp_path / "a").write_bytes(bytes(raw))
    with pytest.raises(ArchiveError, match="damaged"):
        file_checksum(tmp_path / "a")


def test_a_flipped_byte_with_a_recomputed_checksum_fails_authentication(tmp_path: Path) -> None:
    raw = bytearray(write(tmp_path / "a", os.urandom(3000))[:-32])
    raw[-20] ^= 1
    reseal(tmp_path / "a", bytes(raw))
    file_checksum(tmp_path / "a")
    with pytest.raises(ArchiveError, match="failed authentication"):
        list(decrypt_chunks(tmp_path / "a", KEY))


def test_dropping_the_last_record_is_truncation(tmp_path: Path) -> None:
    data = os.urandom(2500)  # records of 1000, 1000 and a last one of 500
    raw = write(tmp_path / "a", data)[:-32]
    last = 4 + 500 + 16
    reseal(tmp_path / "a", raw[:-last])
    with pytest.raises(ArchiveError, match="truncated"):
        list(decrypt_chunks(tmp_path / "a", KEY))


def test_an_edited_header_fails_every_record(tmp_path: Path) -> None:
    raw = write(tmp_path / "a", b"rows")[:-32]
    edited = raw.replace(b'"created_at": "', b'"created_at": "1', 1)
    edited = edited[:9] + (int.from_bytes(raw[9:13], "big") + 1).to_bytes(4, "big") + edited[13:]
    reseal(tmp_path / "a", edited)
    with pytest.raises(ArchiveError, match="failed authentication"):
        list(decrypt_chunks(tmp_path / "a", KEY))


def test_not_an_archive(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(ArchiveError, match="not a browserfleet backup"):
        file_checksum(tmp_path / "a")


def test_the_key_comes_from_a_file_or_the_environment(tmp_path: Path) -> None:
    (tmp_path / "k").write_text(KEY + "\n")
    assert load_key(tmp_path / "k", env={}) == KEY
    assert load_key(None, env={"BROWSERFLEET_BACKUP_KEY": KEY}) == KEY
    with pytest.raises(ArchiveError, match="no backup key"):
        load_key(None, env={})
    with pytest.raises(ArchiveError, match="at least 16"):
        load_key(None, env={"BROWSERFLEET_BACKUP_KEY": "short"})
