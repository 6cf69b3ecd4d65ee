"""The server configuration Compose and Kubernetes render (`python -m browserfleet_core.busauth render`, from
NATS_PASSWORD_* and BUS_CALLOUT_SEED) started as it is configured: TLS with a self-signed CA, a service in
with its password over tls:// (the server requires TLS of every client), nobody without one."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import os
import stat
import subprocess
import sys
from pathlib import Path

from browserfleet_contracts import bus, endpoints
from browserfleet_core.busauth import new_secrets
from browserfleet_core.messaging import BusCredentials, connect
from browserfleet_devkit.embedded import free_port, nats_server_binary, wait_for_port
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _self_signed(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 / localhost signed by it (tests only)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "browserfleet test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nats")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.pem", folder / "server.pem", folder / "server-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


async def _check(url: str, port: int, ca: Path, password: str) -> None:
    me = BusCredentials(
        user=bus.SCHEDULER, password=password, inbox_prefix=bus.inbox_prefix(bus.SCHEDULER), tls_ca=ca
    )
    nc = await connect(url, name="config-test", credentials=me, allow_reconnect=False)
    try:
        await nc.subscribe(endpoints.Scheduler.CLAIM.subject)
        await nc.flush()
        assert nc.is_connected and nc.last_error is None
        assert nc._server_info["tls_required"]  # the server talks to no client in the clear
    finally:
        await nc.close()
    # nobody: no callout answers here, so the server refuses when its wait ends (nats-py over TLS may hand
    # back the client before that: it is then closed, never connected)
    try:
        nobody = await connect(
            url,
            name="nobody",
            credentials=BusCredentials(tls_ca=ca),
            allow_reconnect=False,
            max_reconnect_attempts=0,
            connect_timeout=10,
        )
    except Exception:
        return
    with contextlib.suppress(Exception):
        await nobody.flush(timeout=10)
    assert not nobody.is_connected
    await nobody.close()


def test_the_rendered_configuration_runs_with_tls(tmp_path: Path) -> None:
    ca, cert, key = _self_signed(tmp_path)
    port = free_port()
    secrets = new_secrets()
    env = {
        **os.environ,
        **secrets,
        "NATS_LISTEN": f"127.0.0.1:{port}",
        "NATS_STORE_DIR": str(tmp_path / "js"),
        "NATS_TLS_CERT_FILE": str(cert),
        "NATS_TLS_KEY_FILE": str(key),
    }
    conf = tmp_path / "nats.conf"
    subprocess.run(
        [sys.executable, "-m", "browserfleet_core.busauth", "render", "--out", str(conf)], env=env, check=True
    )
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600  # it holds every password
    server = subprocess.Popen(
        [nats_server_binary(), "-c", str(conf), "-l", str(tmp_path / "nats.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc=server)
        asyncio.run(_check(f"tls://127.0.0.1:{port}", port, ca, secrets["NATS_PASSWORD_SCHEDULER"]))
    finally:
        server.terminate()
        server.wait(10)
