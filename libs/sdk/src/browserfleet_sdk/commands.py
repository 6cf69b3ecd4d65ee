"""The `browserfleet` commands that call the API: tasks, credentials, webhooks, workers, API keys.

Where to call and as whom: `--url` / `BROWSERFLEET_URL`, and `--api-key` / `BROWSERFLEET_API_KEY` (an
`sk_api_…` key) or `--token` / `BROWSERFLEET_TOKEN` (an access token). Answers print as tables for people;
`--json` prints the API's JSON for scripts. An API error prints `error: <status> <code>: <message> (<field>)`
on stderr and exits 1; `tasks wait` exits 0 only for a completed task.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from . import output
from ._core import TERMINAL_STATUSES
from .client import BrowserfleetClient
from .errors import BrowserfleetError

Handler = Callable[[BrowserfleetClient, argparse.Namespace], Any]
TASK_COLUMNS = ("id", "status", "kind", "priority", "attempt", "title", "created_at")


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--url", default=None, help="the gateway (default $BROWSERFLEET_URL)")
    p.add_argument("--api-key", default=None, help="an sk_api_ key (default $BROWSERFLEET_API_KEY)")
    p.add_argument("--token", default=None, help="an access token instead (default $BROWSERFLEET_TOKEN)")
    p.add_argument("--json", action="store_true", help="print the API's JSON (for scripts)")
    return p


def _group(sub: Any, name: str, help_: str) -> Any:
    return sub.add_parser(name, help=help_).add_subparsers(dest="action", required=True, metavar="ACTION")


def _cmd(group: Any, name: str, help_: str, handler: Handler) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = group.add_parser(name, help=help_, parents=[_common()])
    p.set_defaults(handler=handler)
    return p


def _by_id(group: Any, name: str, help_: str, call: Callable[[BrowserfleetClient, str], Any]) -> None:
    """A command whose one argument is the id `call` takes."""
    _cmd(group, name, help_, lambda c, a: call(c, a.id)).add_argument("id")


# --- tasks -----------------------------------------------------------------------------------------
def _task_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = (
        json.loads(Path(args.file).read_text() if args.file != "-" else sys.stdin.read()) if args.file else {}
    )
    if args.goal:
        body["goal"] = args.goal
    if args.step:
        body["steps"] = [json.loads(s) for s in args.step]
    for key in ("priority", "webhook_url", "title"):
        if getattr(args, key) is not None:
            body[key] = getattr(args, key)
    if args.tag:
        body["worker_tags"] = args.tag
    if args.timeout is not None:
        body["timeout_seconds"] = args.timeout
    return body


def _submit(c: BrowserfleetClient, a: argparse.Namespace) -> Any:
    task = c.create_task(_task_body(a), idempotency_key=a.idempotency_key)
    return _wait(c, a, task["id"]) if a.wait else task


def _wait(c: BrowserfleetClient, a: argparse.Namespace, task_id: str) -> Any:
    """Polls the task, showing each change of status (and the latest log line) on stderr."""
    deadline = time.monotonic() + a.timeout_wait
    shown, since = "", 0
    while True:
        task = c.get_task(task_id)
        page = c.task_logs(task_id, since=since, limit=1000)
        since = page["next_since"]
        state = f"{task['status']} (attempt {task['attempt']})"
        if state != shown:
            print(f"[{time.strftime('%H:%M:%S')}] {task_id} {state}", file=sys.stderr, flush=True)
            shown = state
        for line in page["items"]:
            print(f"    {line.get('level', 'info')}: {line['message']}", file=sys.stderr, flush=True)
        if task["status"] in TERMINAL_STATUSES:
            a.exit_code = 0 if task["status"] == "completed" else 1
            return task
        if time.monotonic() > deadline:
            print(f"gave up after {a.timeout_wait:g} s; the task goes on", file=sys.stderr)
            a.exit_code = 3
            return task
        time.sleep(a.poll)


def _logs(c: BrowserfleetClient, a: argparse.Namespace) -> None:
    lines = c.follow_logs(a.id) if a.follow else iter(c.task_logs(a.id, limit=1000)["items"])
    for line in lines:
        if a.json:
            print(json.dumps(line, default=str), flush=True)
        else:
            print(f"{line.get('at', '')} {line.get('level', 'info'):7} {line['message']}", flush=True)


def _download(c: BrowserfleetClient, a: argparse.Namespace) -> dict[str, Any]:
    data = c.download_artifact(a.id, a.name)
    target = Path(a.output or a.name)
    target.write_bytes(data)
    return {"name": a.name, "path": str(target), "size": len(data)}


def _tasks(sub: Any) -> None:
    g = _group(sub, "tasks", "submit, follow and cancel tasks")
    p = _cmd(g, "submit", "submit a task (steps or a goal)", _submit)
    p.add_argument("--file", help="the task's JSON body (a file, or - for stdin)")
    p.add_argument("--goal", help="a natural-language goal for the agent")
    p.add_argument(
        "--step", action="append", help='one step as JSON, e.g. \'{"action":"navigate","url":"…"}\''
    )
    p.add_argument("--priority", choices=("low", "normal", "high", "urgent"))
    p.add_argument("--tag", action="append", help="a worker tag (repeat)")
    p.add_argument("--timeout", type=int, help="the task's timeout_seconds")
    p.add_argument("--webhook-url", help="where the task's events go too")
    p.add_argument("--title")
    p.add_argument("--idempotency-key", help="same key and body, same task")
    p.add_argument("--wait", action="store_true", help="wait for the end, showing progress")
    p.add_argument(
        "--timeout-wait", type=float, default=600.0, help="give up waiting after this many seconds"
    )
    p.add_argument("--poll", type=float, default=1.0, help=argparse.SUPPRESS)
    _by_id(g, "get", "one task, with its result", BrowserfleetClient.get_task)
    p = _cmd(
        g,
        "list",
        "the organization's tasks, newest first",
        lambda c, a: c.list_tasks(status=a.status, limit=a.limit)["items"],
    )
    p.add_argument("--status")
    p.add_argument("--limit", type=int, default=50)
    p = _cmd(g, "wait", "wait for a task to end, showing its progress", lambda c, a: _wait(c, a, a.id))
    p.add_argument("id")
    p.add_argument("--timeout-wait", type=float, default=600.0, help="give up after this many seconds")
    p.add_argument("--poll", type=float, default=1.0, help=argparse.SUPPRESS)
    p = _cmd(g, "cancel", "cancel a task", lambda c, a: c.cancel_task(a.id, a.reason))
    p.add_argument("id")
    p.add_argument("--reason")
    p = _cmd(g, "logs", "a task's log lines (--follow: as they come, until it ends)", _logs)
    p.add_argument("id")
    p.add_argument("--follow", "-f", action="store_true")
    _by_id(g, "artifacts", "a task's artifacts", BrowserfleetClient.list_artifacts)
    p = _cmd(g, "download", "download one artifact", _download)
    p.add_argument("id")
    p.add_argument("name")
    p.add_argument("-o", "--output", help="file to write (default: the artifact's name)")


# --- credentials, webhooks, workers, API keys ------------------------------------------------------
def _credentials(sub: Any) -> None:
    g = _group(sub, "credentials", "secrets tasks name as {{ secrets.NAME }} (values never shown)")
    _cmd(g, "list", "names, types and times", lambda c, a: c.list_credentials())

    def put(c: BrowserfleetClient, a: argparse.Namespace) -> Any:
        value = a.value if a.value is not None else sys.stdin.read().rstrip("\n")
        return c.put_credential(a.name, value, type=a.type, description=a.description)

    p = _cmd(g, "set", "store or replace a credential (value from --value or stdin)", put)
    p.add_argument("name")
    p.add_argument("--value")
    p.add_argument("--type", default="password")
    p.add_argument("--description")
    p = _cmd(
        g,
        "update",
        "change a credential by id",
        lambda c, a: c.update_credential(a.id, value=a.value, type=a.type, description=a.description),
    )
    p.add_argument("id")
    p.add_argument("--value")
    p.add_argument("--type")
    p.add_argument("--description")
    _cmd(g, "delete", "delete a credential by name", lambda c, a: c.delete_credential(a.name)).add_argument(
        "name"
    )


def _webhooks(sub: Any) -> None:
    g = _group(sub, "webhooks", "endpoints, deliveries and replays")
    _cmd(g, "list", "the endpoints", lambda c, a: c.list_webhooks())
    p = _cmd(
        g,
        "create",
        "add an endpoint (its secret is shown once)",
        lambda c, a: c.create_webhook(a.target, a.event, description=a.description),
    )
    p.add_argument("target", metavar="URL", help="where deliveries go")
    p.add_argument("--event", action="append", help="an event type or wildcard (repeat); default all")
    p.add_argument("--description")
    _by_id(g, "get", "one endpoint with its health", BrowserfleetClient.get_webhook)

    def update(c: BrowserfleetClient, a: argparse.Namespace) -> Any:
        fields = {k: v for k, v in (("url", a.to), ("events", a.event), ("description", a.description)) if v}
        if a.enabled is not None:
            fields["enabled"] = a.enabled
        return c.update_webhook(a.id, **fields)

    p = _cmd(g, "update", "change an endpoint", update)
    p.add_argument("id")
    p.add_argument("--to", metavar="URL", help="the endpoint's new URL")
    p.add_argument("--event", action="append")
    p.add_argument("--description")
    p.add_argument("--enable", dest="enabled", action="store_const", const=True, default=None)
    p.add_argument("--disable", dest="enabled", action="store_const", const=False)
    _by_id(g, "delete", "remove an endpoint", BrowserfleetClient.delete_webhook)
    p = _cmd(g, "deliveries", "the delivery log", lambda c, a: c.list_deliveries(a.endpoint, limit=a.limit))
    p.add_argument("--endpoint")
    p.add_argument("--limit", type=int, default=50)
    _by_id(g, "delivery", "one delivery and its attempts", BrowserfleetClient.get_delivery)
    _by_id(g, "replay", "send one delivery again", BrowserfleetClient.replay_delivery)
    p = _cmd(
        g,
        "replay-failed",
        "replay an endpoint's failed deliveries since a time (a job)",
        lambda c, a: c.replay_failed(a.id, a.since),
    )
    p.add_argument("id")
    p.add_argument("--since", required=True, help="ISO time, e.g. 2026-01-01T00:00:00Z")
    _by_id(g, "replay-job", "a replay job's progress", BrowserfleetClient.get_replay_job)
    _by_id(g, "test", "send a webhook.test event", BrowserfleetClient.send_test_event)
    _by_id(
        g, "rotate", "a new signing secret (the old one overlaps)", BrowserfleetClient.rotate_webhook_secret
    )


def _workers(sub: Any) -> None:
    g = _group(sub, "workers", "the fleet: list, invite, drain, revoke")
    _cmd(g, "list", "the organization's workers", lambda c, a: c.list_workers())
    p = _cmd(
        g,
        "invite",
        "a one-time invite code (shown once)",
        lambda c, a: c.create_worker_invite(
            name=a.name,
            capabilities=a.capability,
            pool=a.pool,
            multi_use=a.multi_use or None,
            ttl_seconds=a.ttl,
        ),
    )
    p.add_argument("--name")
    p.add_argument("--capability", action="append", help="a tag its tasks may ask for (repeat)")
    p.add_argument("--pool")
    p.add_argument("--multi-use", action="store_true", help="a pool invite every replica registers with")
    p.add_argument("--ttl", type=int, help="seconds the invite is valid")
    _by_id(g, "drain", "take no new task, finish the running ones", BrowserfleetClient.drain_worker)
    _by_id(g, "revoke", "remove a worker: its key stops working at once", BrowserfleetClient.revoke_worker)


def _api_keys(sub: Any) -> None:
    g = _group(sub, "api-keys", "keys for programs (shown once)")
    _cmd(g, "list", "the organization's keys", lambda c, a: c.list_api_keys())
    p = _cmd(
        g, "create", "a new key", lambda c, a: c.create_api_key(a.name, a.scope, expires_at=a.expires_at)
    )
    p.add_argument("name")
    p.add_argument("--scope", action="append", required=True, help="tasks:read, tasks:write, ... (repeat)")
    p.add_argument("--expires-at")
    _by_id(g, "revoke", "revoke a key", BrowserfleetClient.revoke_api_key)


COLUMNS: dict[tuple[str, str], tuple[str, ...]] = {
    ("tasks", "list"): TASK_COLUMNS,
    ("tasks", "artifacts"): ("name", "content_type", "size", "attempt"),
    ("credentials", "list"): ("id", "name", "type", "description", "updated_at"),
    ("webhooks", "list"): ("id", "url", "events", "enabled", "description"),
    ("webhooks", "deliveries"): ("id", "event_type", "status", "attempts", "endpoint_id", "created_at"),
    ("workers", "list"): ("id", "name", "status", "pool", "tags", "running_tasks", "last_seen"),
    ("api-keys", "list"): ("id", "name", "prefix", "scopes", "expires_at", "revoked_at"),
}
API_COMMANDS = ("tasks", "credentials", "webhooks", "workers", "api-keys")


def add_api_commands(sub: Any) -> None:
    for add in (_tasks, _credentials, _webhooks, _workers, _api_keys):
        add(sub)


def run_api_command(args: argparse.Namespace) -> int:
    url = args.url or os.environ.get("BROWSERFLEET_URL")
    token = (
        args.api_key
        or args.token
        or os.environ.get("BROWSERFLEET_API_KEY")
        or os.environ.get("BROWSERFLEET_TOKEN")
    )
    if not url or not token:
        print(
            "error: set BROWSERFLEET_URL and BROWSERFLEET_API_KEY (or --url and --api-key / --token)",
            file=sys.stderr,
        )
        return 2
    args.exit_code = 0
    try:
        with BrowserfleetClient(url, token) as client:
            answer = args.handler(client, args)
    except BrowserfleetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (httpx.HTTPError, OSError, ValueError) as exc:  # unreachable gateway, unreadable file, bad JSON
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if answer is None:
        return int(args.exit_code)
    if args.json:
        output.as_json(answer)
    elif isinstance(answer, list):
        output.table(answer, COLUMNS.get((args.command, args.action), ("id", "name", "status")))
    else:
        output.record(answer)
    return int(args.exit_code)
