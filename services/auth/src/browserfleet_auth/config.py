"""What the auth logic is tuned with: token lifetimes, the brute-force policy, the clock and the password
check. `app.py` builds it from `AuthSettings`; tests pass their own clock, policy or password spy."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from browserfleet_core import security
from browserfleet_core.db import utcnow

from .throttle import BruteForcePolicy

PasswordVerifier = Callable[[str | None, str], bool]


@dataclass(frozen=True)
class AuthConfig:
    access_ttl_seconds: int = 900
    refresh_ttl_seconds: int = 604_800
    mfa_challenge_ttl_seconds: int = 300
    totp_issuer: str = "browserfleet"
    sso_state_ttl_seconds: int = 600
    sso_handoff_ttl_seconds: int = 60
    brute_force: BruteForcePolicy = field(default_factory=BruteForcePolicy)
    verify_password: PasswordVerifier = security.verify_password
    now: Callable[[], datetime] = utcnow
