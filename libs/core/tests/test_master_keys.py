from __future__ import annotations

import base64

import pytest
from browserfleet_core.master_keys import (
    MasterKeys,
    check_previous_keys,
    decode_master_key,
    keys_by_version,
    parse_previous_keys,
)
from pydantic import SecretStr

ONE, TWO = bytes(32), bytes([1]) * 32


def _b64(raw: bytes) -> SecretStr:
    return SecretStr(base64.b64encode(raw).decode())


def test_a_key_is_32_bytes_of_base64_and_errors_never_repeat_it() -> None:
    assert decode_master_key(_b64(ONE).get_secret_value(), "X_MASTER_KEY") == ONE
    with pytest.raises(ValueError, match="X_MASTER_KEY is not valid base64") as exc:
        decode_master_key("not-base64!", "X_MASTER_KEY")
    assert "not-base64!" not in str(exc.value)
    with pytest.raises(ValueError, match="decodes to 3 bytes"):
        decode_master_key("AAAA", "X_MASTER_KEY")


def test_previous_keys_come_as_json_and_are_checked() -> None:
    assert parse_previous_keys("", "X_PREVIOUS_MASTER_KEYS") == {}
    assert parse_previous_keys('{"1": "k"}', "X_PREVIOUS_MASTER_KEYS") == {"1": "k"}
    with pytest.raises(ValueError, match=r"X_PREVIOUS_MASTER_KEYS must be a JSON object \{version: base64\}"):
        parse_previous_keys("{", "X_PREVIOUS_MASTER_KEYS")
    with pytest.raises(ValueError, match="versions must be >= 1"):
        check_previous_keys({0: _b64(ONE)}, "X_PREVIOUS_MASTER_KEYS")
    with pytest.raises(ValueError, match=r"X_PREVIOUS_MASTER_KEYS\[2\] is not valid base64"):
        check_previous_keys({2: SecretStr("?")}, "X_PREVIOUS_MASTER_KEYS")


def test_keys_by_version_and_the_current_key_listed_twice() -> None:
    assert keys_by_version(_b64(TWO), 2, {1: _b64(ONE)}, prefix="X") == {1: ONE, 2: TWO}
    assert keys_by_version(_b64(TWO), 2, {2: _b64(TWO)}, prefix="X") == {2: TWO}
    with pytest.raises(ValueError, match=r"X_PREVIOUS_MASTER_KEYS\[2\] differs from X_MASTER_KEY"):
        keys_by_version(_b64(TWO), 2, {2: _b64(ONE)}, prefix="X")


def test_the_keyring_needs_its_current_key_and_never_prints_one() -> None:
    class Box(MasterKeys):
        pass

    assert repr(Box(current_version=2, keys={1: ONE, 2: TWO})) == "Box(current_version=2, versions=[1, 2])"
    with pytest.raises(ValueError, match="no master key for the current version 3"):
        Box(current_version=3, keys={1: ONE})
    with pytest.raises(ValueError, match="master key version 1 must be 32 bytes"):
        Box(current_version=1, keys={1: b"short"})


def test_settings_fields_check_their_keys_under_their_environment_names() -> None:
    from browserfleet_core.master_keys import MasterKey, PreviousMasterKeys
    from pydantic import BaseModel, Field, ValidationError

    class Settings(BaseModel):
        x_master_key: MasterKey | None = None
        x_previous_master_keys: PreviousMasterKeys = Field(default_factory=dict)

    ok = Settings(x_master_key=_b64(ONE), x_previous_master_keys=f'{{"1": "{_b64(TWO).get_secret_value()}"}}')
    assert ok.x_previous_master_keys[1].get_secret_value() == _b64(TWO).get_secret_value()
    assert Settings().x_master_key is None
    with pytest.raises(ValidationError, match="X_MASTER_KEY decodes to 3 bytes"):
        Settings(x_master_key=SecretStr("AAAA"))
    with pytest.raises(ValidationError, match="X_PREVIOUS_MASTER_KEYS must be a JSON object"):
        Settings(x_previous_master_keys="{")
    with pytest.raises(ValidationError, match=r"X_PREVIOUS_MASTER_KEYS\[1\] is not valid base64"):
        Settings(x_previous_master_keys='{"1": "?"}')
