"""Versioned AES-256 master keys from the environment, as the services that seal data at rest take them: the
current key (`<PREFIX>_MASTER_KEY`, numbered `<PREFIX>_MASTER_KEY_VERSION`) and the older ones still needed to
open what they sealed (`<PREFIX>_PREVIOUS_MASTER_KEYS`, JSON `{"<version>": "<base64>"}`). No error message
ever repeats a key."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, SecretStr, ValidationInfo

MASTER_KEY_BYTES = 32
MASTER_KEY_HINT = (
    "base64 of 32 random bytes, e.g. "
    'python -c "import base64,os;print(base64.b64encode(os.urandom(32)).decode())"'
)


def decode_master_key(value: str, what: str) -> bytes:
    """Decode one master key (`what` names it in the error)."""
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} is not valid base64; it must be {MASTER_KEY_HINT}") from None
    if len(raw) != MASTER_KEY_BYTES:
        raise ValueError(f"{what} decodes to {len(raw)} bytes; it must be {MASTER_KEY_HINT}")
    return raw


def parse_previous_keys(value: Any, what: str) -> Any:
    """A settings validator's first step (mode="before"): the environment's JSON text as a dict."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except json.JSONDecodeError:
            raise ValueError(f"{what} must be a JSON object {{version: base64}}") from None
    return value


def check_previous_keys(value: dict[int, SecretStr], what: str) -> dict[int, SecretStr]:
    """Every previous key decodes, under a version from 1."""
    for version, key in value.items():
        if version < 1:
            raise ValueError(f"{what} versions must be >= 1")
        decode_master_key(key.get_secret_value(), f"{what}[{version}]")
    return value


def _env_name(info: ValidationInfo) -> str:
    # settings read their fields from environment variables of the same name (no prefix)
    return (info.field_name or "").upper()


def _check_current(value: SecretStr, info: ValidationInfo) -> SecretStr:
    decode_master_key(value.get_secret_value(), _env_name(info))
    return value


def _parse_previous(value: Any, info: ValidationInfo) -> Any:
    return parse_previous_keys(value, _env_name(info))


def _check_previous(value: dict[int, SecretStr], info: ValidationInfo) -> dict[int, SecretStr]:
    return check_previous_keys(value, _env_name(info))


# settings field types: a key that decodes, and the previous keys' JSON, each checked under its own name
MasterKey = Annotated[SecretStr, AfterValidator(_check_current)]
PreviousMasterKeys = Annotated[
    dict[int, SecretStr], BeforeValidator(_parse_previous), AfterValidator(_check_previous)
]


def keys_by_version(
    current: SecretStr, version: int, previous: dict[int, SecretStr], *, prefix: str
) -> dict[int, bytes]:
    """Every configured key by its version; the current one may be listed among the previous ones too, but
    only as itself."""
    keys = {
        v: decode_master_key(key.get_secret_value(), f"{prefix}_PREVIOUS_MASTER_KEYS[{v}]")
        for v, key in previous.items()
    }
    raw = decode_master_key(current.get_secret_value(), f"{prefix}_MASTER_KEY")
    if keys.get(version, raw) != raw:
        raise ValueError(f"{prefix}_PREVIOUS_MASTER_KEYS[{version}] differs from {prefix}_MASTER_KEY")
    keys[version] = raw
    return keys


@dataclass(frozen=True, repr=False)
class MasterKeys:
    """The master keys this process knows, by version. `repr=False`: a traceback must not print them."""

    current_version: int
    keys: dict[int, bytes]

    def __post_init__(self) -> None:
        if self.current_version not in self.keys:
            raise ValueError(f"no master key for the current version {self.current_version}")
        for version, key in self.keys.items():
            if len(key) != MASTER_KEY_BYTES:
                raise ValueError(f"master key version {version} must be {MASTER_KEY_BYTES} bytes")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(current_version={self.current_version}, versions={sorted(self.keys)})"
