"""The bus's declarations cannot drift from the code: every service that names another service's endpoint
in its source is among that endpoint's declared callers (else the server would refuse the request it
makes), and every event type has the service that may publish it."""

from __future__ import annotations

import ast
from pathlib import Path

from browserfleet_contracts import bus, endpoints
from browserfleet_contracts.events import EventType

ROOT = Path(__file__).resolve().parents[2]
# each service's source and the identities it connects as (a worker registers as a registrant first)
SERVICES = {
    "gateway": (bus.GATEWAY,),
    "auth": (bus.AUTH,),
    "scheduler": (bus.SCHEDULER,),
    "vault": (bus.VAULT,),
    "webhooks": (bus.WEBHOOKS,),
    "worker-gateway": (bus.WORKER_GATEWAY,),
    "worker": (bus.WORKER, bus.REGISTRANT),
}
# worker-gateway's remote-worker bridge (socket_*.py) also joins the bus as each remote worker it serves, through
# the auth callout, and makes that worker's calls (its claims) on that connection
ALSO_AS = {("worker-gateway", "socket_"): (bus.WORKER,)}


def identities_of(service_dir: str, path: Path) -> tuple[str, ...]:
    extra = tuple(
        ident
        for (directory, prefix), idents in ALSO_AS.items()
        if directory == service_dir and path.name.startswith(prefix)
        for ident in idents
    )
    return SERVICES[service_dir] + extra


def referenced_endpoints(service_dir: str) -> set[str]:
    """`endpoints.<Service>.<NAME>` anywhere in the service's source, as endpoint subjects."""
    return {subject for path in sources(service_dir) for subject in referenced_in(path)}


def sources(service_dir: str) -> list[Path]:
    return sorted((ROOT / "services" / service_dir / "src").rglob("*.py"))


def referenced_in(path: Path) -> set[str]:
    found: set[str] = set()
    classes = {cls.__name__: cls for cls in endpoints.SERVICES}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
            owner = node.value
            if isinstance(owner.value, ast.Name) and owner.value.id == "endpoints" and owner.attr in classes:
                value = getattr(classes[owner.attr], node.attr, None)
                if isinstance(value, endpoints.Endpoint):
                    found.add(value.subject)
        # `from browserfleet_contracts.endpoints import Auth` then `Auth.LOGIN`
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in classes:
            value = getattr(classes[node.value.id], node.attr, None)
            if isinstance(value, endpoints.Endpoint):
                found.add(value.subject)
    return found


def test_every_endpoint_a_service_calls_names_it_among_its_callers() -> None:
    missing = []
    for directory in SERVICES:
        for path in sources(directory):
            identities = identities_of(directory, path)
            for subject in sorted(referenced_in(path)):
                ep = endpoints.by_subject(subject)
                if ep.queue not in identities and not set(identities) & set(ep.callers):
                    missing.append(f"{directory} ({path.name}) calls {subject} (callers: {ep.callers})")
    assert not missing, "\n".join(missing)


def test_the_scan_sees_calls() -> None:
    """The scan itself: the worker claims, the vault asks for claim info, the gateway creates tasks."""
    assert endpoints.Scheduler.CLAIM.subject in referenced_endpoints("worker")
    assert endpoints.Scheduler.CLAIM_INFO.subject in referenced_endpoints("vault")
    assert endpoints.Scheduler.CREATE_TASK.subject in referenced_endpoints("gateway")


def test_every_event_type_has_its_publisher() -> None:
    entities = {event.value.split(".", 1)[0] for event in EventType}
    assert entities <= set(bus.EVENT_EMITTERS), entities - set(bus.EVENT_EMITTERS)
    assert set(bus.EVENT_EMITTERS.values()) <= set(bus.SERVICES)
