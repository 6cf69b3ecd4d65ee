"""Password hashing cost (`PASSWORD_HASH_PROFILE`): production's default is RFC 9106's low-memory profile, the
test suite's is OWASP's minimum, an unknown name stops the process at import, and a hash made under one
profile verifies under the other and is then due for a rehash. Each case imports the module in a fresh
interpreter, since the profile is read once at import."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = """
import sys
from browserfleet_core import security
stored = sys.argv[1] if len(sys.argv) > 1 else security.hash_password("a password")
print(stored)
print(security.verify_password(stored, "a password"), security.password_needs_rehash(stored))
"""


def run(profile: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PASSWORD_HASH_PROFILE"}
    if profile is not None:
        env["PASSWORD_HASH_PROFILE"] = profile
    return subprocess.run(
        [sys.executable, "-c", PROBE, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    ("profile", "params"),
    [(None, "m=65536,t=3,p=4"), ("", "m=65536,t=3,p=4"), ("owasp-minimum", "m=19456,t=2,p=1")],
)
def test_the_profile_sets_the_cost_of_new_hashes(profile: str | None, params: str) -> None:
    done = run(profile)
    assert done.returncode == 0, done.stderr
    stored, checked = done.stdout.split()[0], done.stdout.split()[1:]
    assert stored.startswith(f"$argon2id$v=19${params}$")
    assert checked == ["True", "False"]


def test_a_hash_of_the_other_profile_verifies_and_is_due_for_a_rehash() -> None:
    made = run("owasp-minimum").stdout.split()[0]
    done = run(None, made)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[1:] == ["True", "True"]


def test_an_unknown_profile_is_refused_naming_the_choices() -> None:
    done = run("md5")
    assert done.returncode != 0
    assert "PASSWORD_HASH_PROFILE='md5': must be one of rfc9106-low-memory, owasp-minimum" in done.stderr
