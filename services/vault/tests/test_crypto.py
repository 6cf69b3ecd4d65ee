from __future__ import annotations

import base64
import json
import os

import pytest
from browserfleet_vault import crypto
from browserfleet_vault.__main__ import load_settings
from browserfleet_vault.crypto import DecryptionError, Keyring
from browserfleet_vault.settings import VaultSettings
from pydantic import ValidationError


def _keyring(version: int = 1, previous: dict[int, bytes] | None = None) -> Keyring:
    return Keyring(current_version=version, keys={**(previous or {}), version: os.urandom(32)})


def test_value_round_trip() -> None:
    key = crypto.new_data_key()
    nonce, ciphertext = crypto.encrypt_value(key, "org-a", "PASSWORD", "hunter2 ✓")
    assert b"hunter2" not in ciphertext
    assert len(nonce) == 12
    assert crypto.decrypt_value(key, "org-a", "PASSWORD", nonce, ciphertext) == "hunter2 ✓"


def test_nonces_are_fresh() -> None:
    key = crypto.new_data_key()
    first = crypto.encrypt_value(key, "o", "N", "same")
    second = crypto.encrypt_value(key, "o", "N", "same")
    assert first[0] != second[0] and first[1] != second[1]


def test_tampered_ciphertext_fails() -> None:
    key = crypto.new_data_key()
    nonce, ciphertext = crypto.encrypt_value(key, "org-a", "PASSWORD", "secret")
    tampered = bytes([ciphertext[0] ^ 1]) + ciphertext[1:]
    with pytest.raises(DecryptionError):
        crypto.decrypt_value(key, "org-a", "PASSWORD", nonce, tampered)
    with pytest.raises(DecryptionError):
        crypto.decrypt_value(key, "org-a", "PASSWORD", bytes(12), ciphertext)


@pytest.mark.parametrize(("org", "name"), [("org-b", "PASSWORD"), ("org-a", "OTHER")])
def test_ciphertext_moved_to_another_org_or_name_fails(org: str, name: str) -> None:
    key = crypto.new_data_key()
    nonce, ciphertext = crypto.encrypt_value(key, "org-a", "PASSWORD", "secret")
    with pytest.raises(DecryptionError):
        crypto.decrypt_value(key, org, name, nonce, ciphertext)


def test_wrap_binds_org_and_version() -> None:
    ring = _keyring()
    data_key = crypto.new_data_key()
    wrapped, version = ring.wrap("org-a", data_key)
    assert data_key not in wrapped
    assert ring.unwrap("org-a", wrapped, version) == data_key
    with pytest.raises(DecryptionError):
        ring.unwrap("org-b", wrapped, version)
    with pytest.raises(DecryptionError):
        ring.unwrap("org-a", wrapped, version + 1)


def test_previous_master_key_still_unwraps() -> None:
    old = _keyring(version=1)
    wrapped, version = old.wrap("org-a", b"k" * 32)
    new = Keyring(current_version=2, keys={1: old.keys[1], 2: os.urandom(32)})
    assert new.unwrap("org-a", wrapped, version) == b"k" * 32
    assert new.wrap("org-a", b"k" * 32)[1] == 2


def test_keyring_repr_hides_keys() -> None:
    ring = _keyring()
    assert ring.keys[1].hex() not in repr(ring) and str(ring.keys[1]) not in repr(ring)


def test_settings_require_a_32_byte_master_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NATS_URL", "nats://127.0.0.1:1")
    monkeypatch.delenv("VAULT_MASTER_KEY", raising=False)
    with pytest.raises(ValidationError, match="vault_master_key"):
        VaultSettings()
    short = base64.b64encode(b"x" * 16).decode()
    monkeypatch.setenv("VAULT_MASTER_KEY", short)
    with pytest.raises(ValidationError, match="16 bytes"):
        VaultSettings()
    monkeypatch.setenv("VAULT_MASTER_KEY", base64.b64encode(os.urandom(32)).decode())
    monkeypatch.setenv("VAULT_PREVIOUS_MASTER_KEYS", '{"1": "not base64!"}')
    with pytest.raises(ValidationError, match="not valid base64"):
        VaultSettings()
    monkeypatch.setenv(
        "VAULT_PREVIOUS_MASTER_KEYS", json.dumps({"1": base64.b64encode(os.urandom(32)).decode()})
    )
    monkeypatch.setenv("VAULT_MASTER_KEY_VERSION", "2")
    assert sorted(Keyring.from_settings(VaultSettings()).keys) == [1, 2]


def test_startup_error_is_clear_and_never_echoes_the_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NATS_URL", "nats://127.0.0.1:1")
    bad = base64.b64encode(b"leaky-master-key-20b").decode()
    monkeypatch.setenv("VAULT_MASTER_KEY", bad)
    with pytest.raises(SystemExit) as exc:
        load_settings()
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "VAULT_MASTER_KEY" in err and "32" in err
    assert bad not in err
    monkeypatch.delenv("VAULT_MASTER_KEY")
    with pytest.raises(SystemExit):
        load_settings()
    assert "VAULT_MASTER_KEY: is required" in capsys.readouterr().err
