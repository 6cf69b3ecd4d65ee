"""The dev stack's bus credentials: one random password per service (and for `admin`, the launcher's and the
tests' privileged user, and worker-gateway's system-account user) and the account key worker-gateway signs
worker identities with, kept in `<home>/keys/bus.json` (0600) so a restart keeps them. The server
configuration rendered from them (`browserfleet_core.busauth`) goes to `<home>/nats.conf` (0600)."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from browserfleet_contracts import bus
from browserfleet_core import natsjwt
from browserfleet_core.busauth import STATIC_USERS, ServerConfig, render
from browserfleet_core.messaging import BusCredentials

USERS = (*STATIC_USERS, bus.WORKER_GATEWAY_SYSTEM)


def write_private(path: Path, text: str) -> None:
    """Written 0600 from the first byte, then renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


@dataclass(frozen=True)
class BusSecrets:
    passwords: dict[str, str]
    callout_seed: str

    @classmethod
    def create(cls) -> BusSecrets:
        return cls({user: secrets.token_urlsafe(24) for user in USERS}, natsjwt.new_seed())

    @classmethod
    def load_or_create(cls, folder: Path) -> BusSecrets:
        path = folder / "bus.json"
        if path.is_file():
            data = json.loads(path.read_text())
            found = cls(dict(data["passwords"]), str(data["callout_seed"]))
            if all(user in found.passwords for user in USERS):
                return found
            # an older folder without some user: add it, keep the rest
            created = cls.create()
            found = cls({**created.passwords, **found.passwords}, found.callout_seed)
        else:
            found = cls.create()
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)
        write_private(path, json.dumps({"passwords": found.passwords, "callout_seed": found.callout_seed}))
        return found

    @property
    def issuer(self) -> str:
        return natsjwt.public_key(self.callout_seed)

    def server_config(self, *, host: str, port: int, store_dir: Path) -> str:
        return render(
            ServerConfig(
                passwords=self.passwords, issuer=self.issuer, host=host, port=port, store_dir=str(store_dir)
            )
        )

    def credentials(self, identity: str) -> BusCredentials:
        return BusCredentials(
            user=identity, password=self.passwords[identity], inbox_prefix=bus.inbox_prefix(identity)
        )

    def url_as(self, identity: str, url: str) -> str:
        """`url` with `identity`'s user and password in it (for clients that take only a URL)."""
        scheme, _, rest = url.partition("://")
        return f"{scheme}://{quote(identity)}:{quote(self.passwords[identity])}@{rest}"

    def service_env(self, service: str) -> dict[str, str]:
        """What a service process needs to join the bus as itself (a worker needs none: its key is its
        credential; worker-gateway also gets the callout's signing key and its system-account user)."""
        if service not in bus.SERVICES:
            return {}
        env = {"NATS_USER": service, "NATS_PASSWORD": self.passwords[service]}
        if service == bus.WORKER_GATEWAY:
            env["BUS_CALLOUT_SEED"] = self.callout_seed
            env["NATS_SYSTEM_PASSWORD"] = self.passwords[bus.WORKER_GATEWAY_SYSTEM]
        return env
