"""`make chaos` / `python -m tests.chaos [--quick] [--out DIR]`: the chaos run (run.py), its table, and
`DIR/chaos.json` (figures, settings, machine). Exits non-zero when a task was lost, completed twice, or an
event never reached the receiver."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tests.bench.common import ROOT, Result, fmt, machine

from .run import ChaosRun, Sizes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small: a few hundred tasks, seconds-long outages")
    ap.add_argument("--out", type=Path, default=ROOT / "bench-results")
    args = ap.parse_args(argv)
    sizes = Sizes.quick() if args.quick else Sizes.full()
    mode = "quick" if args.quick else "full"
    host = machine()
    print(f"browserfleet chaos ({mode}) on {host['cpu']}, {host['cores']} cores", flush=True)
    # the run's own bus client reconnects across the NATS restart; its library logs every refused attempt
    logging.getLogger("nats.aio.client").setLevel(logging.CRITICAL)
    figures = asyncio.run(ChaosRun(sizes, args.out).run())
    res = Result("chaos", figures=figures, settings=asdict(sizes))
    res.notes.append(
        "workers: two lean protocol workers (tests/chaos/protocol_worker.py, the real task protocol without a "
        "browser)"
        + (" and the dev stack's Playwright worker with real Chromium" if sizes.chromium_worker else "")
    )
    path = res.write(args.out, mode, host)
    print()
    print(table(figures))
    t = figures["totals"]
    print(
        f"\n{t['tasks']} tasks, {t['kills']} kills: lost {t['lost']}, completed twice "
        f"{t['completed_twice_on_events']} (events) / {t['completed_twice_in_scheduler']} (scheduler), webhook "
        f"events missing {t['webhooks']['events_missing']}, duplicates suppressed by the receiver "
        f"{t['webhooks']['duplicates_suppressed']}; {figures['wall_seconds']} s in all. Report: {path}",
        flush=True,
    )
    return 0 if t["ok"] else 1


def table(figures: dict[str, Any]) -> str:
    header = (
        "fault",
        "in flight",
        "back (s)",
        "recovered (s)",
        "settled (s)",
        "pending",
        "twice",
        "dup. hooks",
        "load",
    )
    rows = [header]
    for ph in figures["faults"]:
        back = ph.get("restarted_after_s", ph.get("answering_after_s", ph.get("backlog_delivered_after_s")))
        rows.append(
            (
                ph["fault"],
                str(ph["tasks_in_flight"]),
                fmt(back),
                fmt(ph.get("recovered_after_s")),
                fmt(ph.get("settled_after_s")),
                str(ph["not_ended_yet"] + ph["events_not_yet_received"]),
                str(ph["completed_twice"]),
                str(ph["webhook_duplicates_suppressed"]),
                fmt(ph.get("load_average")),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]

    def line(r: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(rows[0]), sep, *(line(r) for r in rows[1:])])


if __name__ == "__main__":
    sys.exit(main())
