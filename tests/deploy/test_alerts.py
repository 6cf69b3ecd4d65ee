"""The health alerts in deploy/prometheus/rules.yml fire when a service stays degraded or unhealthy for minutes,
and not for a blip, proven on the series and expectations of deploy/prometheus/rules.test.yml (promtool's
unit-test format) two ways:

* with `promtool` when it is on PATH (no wheel ships it; Debian's `prometheus` package does): `promtool check
  rules` and `promtool test rules`, Prometheus's own evaluator, annotations and all;
* always, by `evaluate` below: the rules' expressions are single comparisons of one metric with a number (the
  test fails on any other shape rather than guess), evaluated at every `evaluation_interval` over the expanded
  input series with Prometheus's `for` semantics (pending from the first true evaluation, firing once it has
  held for `for`; a false evaluation resets it), and the firing alerts' labels compared with `exp_labels`.
  Annotation templates are promtool's part only.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

PROMETHEUS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULES = PROMETHEUS / "rules.yml"
UNIT_TESTS = PROMETHEUS / "rules.test.yml"
HEALTH_ALERTS = {"ServiceDegraded", "ServiceUnhealthy"}
COMPARISON = re.compile(r"^\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(==|!=|>=|<=|>|<)\s*(-?[0-9.]+)\s*$")
OPS = {
    "==": float.__eq__,
    "!=": float.__ne__,
    ">=": float.__ge__,
    "<=": float.__le__,
    ">": float.__gt__,
    "<": float.__lt__,
}
LOOKBACK = 300  # seconds: Prometheus's default staleness window


def seconds(duration: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600}
    match = re.fullmatch(r"(\d+)([smh])", duration)
    assert match, f"unsupported duration {duration!r}"
    return int(match.group(1)) * units[match.group(2)]


def expand(values: str) -> list[float | None]:
    """promtool's series notation, the part these tests use: `v`, `vxN` (v repeated N+1 times), `_` (none)."""
    out: list[float | None] = []
    for token in values.split():
        if token == "_":
            out.append(None)
            continue
        match = re.fullmatch(r"(-?[0-9.]+)(?:x(\d+))?", token)
        assert match, f"unsupported series notation {token!r}"
        out += [float(match.group(1))] * (int(match.group(2) or 0) + 1)
    return out


def parse_series(series: str) -> tuple[str, dict[str, str]]:
    match = re.fullmatch(r"(\w+)\{(.*)\}", series.strip())
    assert match, series
    labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
    return match.group(1), labels


def health_rules() -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {r["alert"]: r for g in groups for r in g["rules"] if r.get("alert") in HEALTH_ALERTS}


def evaluate(rule: dict[str, Any], test: dict[str, Any], eval_time: int, step: int) -> list[dict[str, str]]:
    """The labels of `rule`'s alerts firing at `eval_time` over the test's input series."""
    match = COMPARISON.match(rule["expr"])
    assert match, f"{rule['alert']}: not a single comparison, which this evaluator refuses to guess at"
    metric, op, threshold = match.group(1), OPS[match.group(2)], float(match.group(3))
    hold = seconds(rule.get("for", "0s"))
    interval = seconds(test.get("interval", "1m"))
    firing = []
    for entry in test["input_series"]:
        name, labels = parse_series(entry["series"])
        if name != metric:
            continue
        samples = expand(entry["values"])
        active_since: int | None = None
        for t in range(0, eval_time + 1, step):
            # the latest sample at or before t, within the lookback
            value = None
            for i in range(min(t // interval, len(samples) - 1), -1, -1):
                if samples[i] is not None and t - i * interval <= LOOKBACK:
                    value = samples[i]
                    break
            if value is not None and op(value, threshold):
                active_since = t if active_since is None else active_since
            else:
                active_since = None
        if active_since is not None and eval_time - active_since >= hold:
            firing.append({**labels, **rule.get("labels", {})})
    return firing


def key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, str(v)) for k, v in labels.items()))


def test_the_health_alerts_exist_and_read_the_health_gauge() -> None:
    rules = health_rules()
    assert set(rules) == HEALTH_ALERTS
    assert rules["ServiceDegraded"]["labels"]["severity"] == "warning"
    assert rules["ServiceUnhealthy"]["labels"]["severity"] == "critical"
    for rule in rules.values():
        assert "browserfleet_health_status" in rule["expr"]
        assert seconds(rule["for"]) >= 120, "minutes, not one scrape"


def test_the_unit_tests_cover_both_alerts_firing_and_not() -> None:
    unit = yaml.safe_load(UNIT_TESTS.read_text())
    assert unit["rule_files"] == ["rules.yml"]
    cases = [c for t in unit["tests"] for c in t["alert_rule_test"]]
    for alert in HEALTH_ALERTS:
        mine = [c for c in cases if c["alertname"] == alert]
        assert any(c["exp_alerts"] for c in mine) and any(not c["exp_alerts"] for c in mine), alert


def test_the_health_alerts_fire_as_the_unit_tests_expect() -> None:
    """The evaluation above, on the unit-test file's series: what fires, and when, matches every expectation."""
    unit = yaml.safe_load(UNIT_TESTS.read_text())
    step = seconds(unit.get("evaluation_interval", "1m"))
    rules = health_rules()
    checked = 0
    for test in unit["tests"]:
        for case in test["alert_rule_test"]:
            rule = rules[case["alertname"]]
            got = {key(labels) for labels in evaluate(rule, test, seconds(case["eval_time"]), step)}
            want = {key(a["exp_labels"]) for a in case["exp_alerts"]}
            assert got == want, f"{case['alertname']} at {case['eval_time']}: fired {got}, expected {want}"
            checked += 1
    assert checked >= 5


def test_a_shorter_window_would_fire_on_a_blip() -> None:
    """The evaluation can fail: ServiceDegraded with `for: 1m` fires for the flapping vault series."""
    unit = yaml.safe_load(UNIT_TESTS.read_text())
    (test,) = unit["tests"]
    rule = {**health_rules()["ServiceDegraded"], "for": "1m"}
    fired = {labels["service"] for labels in evaluate(rule, test, seconds("8m"), 60)}
    assert "vault" in fired


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (no wheel ships it): evaluated above instead"
)
def test_promtool_checks_and_unit_tests_the_rules() -> None:
    assert PROMTOOL is not None
    for args in (["check", "rules", RULES.name], ["test", "rules", UNIT_TESTS.name]):
        out = subprocess.run(
            [PROMTOOL, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60, check=False
        )
        assert out.returncode == 0, out.stdout + out.stderr
