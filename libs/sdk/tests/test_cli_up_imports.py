"""`browserfleet up` starts the stack before it pays for the API commands' HTTP client: a launcher that
imported httpx first spent a third of a second of CPU while no service had started yet."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
from browserfleet_sdk import cli

seen = {}

def fake_up(args):
    seen["httpx"] = "httpx" in sys.modules
    seen["workers"] = args.workers
    return 0

cli._up = fake_up
code = cli.main(["up", "--workers", "3"])
assert code == 0 and seen == {"httpx": False, "workers": 3}, seen
"""


def test_up_does_not_import_the_http_client() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_api_commands_still_parse(capsys: pytest.CaptureFixture[str]) -> None:
    from browserfleet_sdk import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    listed = capsys.readouterr().out
    from browserfleet_sdk.commands import API_COMMANDS

    assert all(name in listed for name in ["up", *API_COMMANDS]), listed
