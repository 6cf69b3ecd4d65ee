"""No secret value in what a task stores (README "Secrets and artifacts"): the forms a value takes are found and
overwritten, a trace is scrubbed entry by entry, an artifact holding a secret is withheld; with real Chromium,
screenshots mask what received a secret, a PDF draws it as discs, the trace keeps none of it.

Every search here (devkit's secret_forms_in) is written independently of the worker's own list of forms
(secret_forms.py)."""

from __future__ import annotations

import base64
import gzip
import html
import io
import json
import re
import zipfile
import zlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from browserfleet_contracts.tasks import TaskSpec
from browserfleet_devkit.sites import QuietHandler, SecretFormSite, careless_form_walk, secret_forms_in
from browserfleet_devkit.testing import LoopbackHTTPServer
from browserfleet_worker import secret_forms
from browserfleet_worker.agent import AgentRunner
from browserfleet_worker.artifact_guard import scrub_trace, withhold
from browserfleet_worker.browser import BrowserHost
from browserfleet_worker.llm import LLMClient
from browserfleet_worker.netguard import Policy, parse_networks
from browserfleet_worker.secret_forms import SecretScanner
from browserfleet_worker.steps import Artifact, StepsOutcome, StepsRunner

# every character changes under URL-encoding, JSON, HTML or Latin-1; B has A's length, so a masked
# screenshot of either is the same picture
SECRET = 'p@ss w/rd+"é'
OTHER = "q#tt v.xy-!ü"
LOCAL = parse_networks(["127.0.0.1/32"])


def entries(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


# -- the forms, found and overwritten -----------------------------------------------------------------


@pytest.mark.parametrize(
    "form",
    [
        SECRET.encode(),
        SECRET.encode("latin-1"),
        quote(SECRET, safe="").encode(),
        quote_plus(SECRET, safe="").encode(),
        quote(SECRET, safe="").lower().encode(),
        quote_plus(SECRET.encode("latin-1"), safe="").encode(),
        json.dumps(SECRET)[1:-1].encode(),
        json.dumps(SECRET, ensure_ascii=False)[1:-1].encode(),
        html.escape(SECRET).encode(),
        base64.b64encode(b"user:" + SECRET.encode()),  # Basic auth: the value at an offset
        base64.b64encode(b"u:" + SECRET.encode() + b"!"),
        base64.b64encode(SECRET.encode() + b"tail"),
        base64.urlsafe_b64encode(b"x" + SECRET.encode()),
    ],
)
def test_every_form_of_a_value_is_found_and_overwritten_in_place(form: bytes) -> None:
    scanner = SecretScanner({"PW": SECRET})
    data = b'{"before":"' + form + b'","after":1}'
    assert scanner.first(data) == "PW"
    scrubbed, count = scanner.scrub(data)
    assert count >= 1
    assert len(scrubbed) == len(data)  # offsets keep: a PDF's xref or a zip entry stays readable
    assert secret_forms_in(SECRET, scrubbed) == []
    assert scanner.first(scrubbed) is None
    assert scrubbed.startswith(b'{"before":"') and scrubbed.endswith(b'","after":1}')


def test_long_values_and_forms_sharing_their_first_bytes() -> None:
    # a PEM-sized value; its UTF-8 and Latin-1 forms differ only past the first 64 bytes the regex anchors on
    value = "k" * 3000 + "é/"
    scanner = SecretScanner({"KEY": value})
    for form in (value.encode(), value.encode("latin-1"), quote(value, safe="").encode()):
        data = b"<<" + form + b">>"
        assert scanner.first(data) == "KEY"
        scrubbed, count = scanner.scrub(data)
        assert count == 1 and scrubbed == b"<<" + b"*" * len(form) + b">>"
    assert scanner.first(b"<<" + value.encode()[:-1] + b">>") is None  # the anchor alone is no match
    assert scanner.first(base64.b64encode(b"pem:" + value.encode())) == "KEY"


def test_clean_bytes_and_short_values() -> None:
    scanner = SecretScanner({"PW": SECRET, "PIN": "123"})
    assert scanner.short == ["PIN"]
    assert scanner.first(b"p@ss w/rd nothing here 123") is None
    assert not SecretScanner({"PIN": "123"})  # nothing to search for: the trace is not kept at all


def _zip(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return out.getvalue()


def test_a_trace_is_scrubbed_entry_by_entry_and_what_cannot_be_is_left_out() -> None:
    fill = {"type": "before", "method": "fill", "params": {"selector": "#password", "value": SECRET}}
    snapshot = {"type": "frame-snapshot", "html": ["INPUT", {"__playwright_value_": SECRET}]}
    trace = _zip(
        {
            "trace.trace": (json.dumps(fill) + "\n" + json.dumps(snapshot) + "\n").encode(),
            "trace.network": json.dumps({"url": f"/q?pw={quote(SECRET, safe='')}"}).encode(),
            "resources/form.dat": b"user=ada&password=" + quote_plus(SECRET.encode("latin-1")).encode(),
            "resources/auth.txt": base64.b64encode(b"ada:" + SECRET.encode()),
            "resources/page.html": b"<input value='" + html.escape(SECRET).encode() + b"'>",
            "resources/leaky.gz": gzip.compress(b"secret=" + SECRET.encode()),
            "resources/clean.gz": gzip.compress(b"nothing to see"),
            "resources/broken.gz": b"\x1f\x8b\x08\x00garbage",
        }
    )
    scrubbed, report = scrub_trace(trace, SecretScanner({"PW": SECRET}))
    assert scrubbed is not None
    files = entries(scrubbed)
    assert sorted(report.dropped) == ["resources/broken.gz", "resources/leaky.gz"]
    assert set(files) == {
        "trace.trace",
        "trace.network",
        "resources/form.dat",
        "resources/auth.txt",
        "resources/page.html",
        "resources/clean.gz",
    }
    assert report.replaced == 6
    for name, content in files.items():
        assert secret_forms_in(SECRET, content) == [], name
    events = [json.loads(line) for line in files["trace.trace"].decode().splitlines()]
    assert events[0]["params"] == {"selector": "#password", "value": "*" * len(json.dumps(SECRET)[1:-1])}
    assert gzip.decompress(files["resources/clean.gz"]) == b"nothing to see"
    assert scrub_trace(b"not a zip", SecretScanner({"PW": SECRET}))[0] is None


def _pdf(stream: bytes) -> bytes:
    body = zlib.compress(stream)
    head = f"%PDF-1.4\n1 0 obj\n<< /Length {len(body)} /Filter /FlateDecode >>\nstream\n".encode()
    return head + body + b"\nendstream\nendobj\n"


def test_an_artifact_holding_a_secret_anywhere_inside_is_withheld(monkeypatch: pytest.MonkeyPatch) -> None:
    scanner = SecretScanner({"PW": SECRET})
    xlsx = _zip({"xl/sharedStrings.xml": b"<t>" + html.escape(SECRET).encode() + b"</t>"})
    nested = _zip({"inner.zip": _zip({"deep.txt": SECRET.encode()})})
    encrypted = bytearray(_zip({"a.txt": b"anything"}))
    encrypted[6] |= 0x1  # the local header's "encrypted" flag
    encrypted[encrypted.index(b"PK\x01\x02") + 8] |= 0x1  # and the central directory's
    artifacts = [
        Artifact("shot.png", "image/png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4),
        Artifact("report.xlsx", "application/vnd.ms-excel", xlsx),
        Artifact("nested.zip", "application/zip", nested),
        Artifact("invoice.pdf", "application/pdf", _pdf(b"BT (" + SECRET.encode("latin-1") + b") Tj ET")),
        Artifact("plain.pdf", "application/pdf", _pdf(b"BT (hello) Tj ET")),
        Artifact("sealed.zip", "application/zip", bytes(encrypted)),
        Artifact("export.csv.gz", "application/gzip", gzip.compress(b"pw," + SECRET.encode() + b"\n")),
    ]
    kept, notes = withhold(artifacts, scanner)
    assert [a.name for a in kept] == ["shot.png", "plain.pdf"]
    assert notes == [
        "artifact report.xlsx not stored: it contains the value of secret PW (zip entry xl/sharedStrings.xml)",
        "artifact nested.zip not stored: it contains the value of secret PW "
        "(zip entry inner.zip > zip entry deep.txt)",
        "artifact invoice.pdf not stored: it contains the value of secret PW (PDF stream 0)",
        "artifact sealed.zip not stored: it could not be checked for secret values (zip entry a.txt is encrypted)",
        "artifact export.csv.gz not stored: it contains the value of secret PW (gzip member 1)",
    ]
    # what cannot be decompressed within the budget is not called clean
    monkeypatch.setattr(secret_forms, "DEEP_SCAN_BUDGET", 1000)
    kept, notes = withhold([Artifact("big.gz", "application/gzip", gzip.compress(b"0" * 5000))], scanner)
    assert kept == [] and "could not be checked" in notes[0]
    assert withhold(artifacts, SecretScanner({})) == (artifacts, [])


# -- with real Chromium --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def secret_site() -> Iterator[str]:
    with SecretFormSite() as site:
        yield site.url


def pdf_characters(pdf: bytes) -> set[str]:
    """Every character a PDF can show: the Unicode values of its fonts' ToUnicode maps (Chromium's text is
    glyph ids, so the value itself is never in the bytes: only these maps tell which characters are drawn)."""
    chars: set[str] = set()
    for match in re.finditer(rb"(?<!end)stream\r?\n", pdf):
        try:
            content = zlib.decompressobj().decompress(pdf[match.end() :])
        except zlib.error:
            continue
        for block in re.findall(rb"beginbfchar(.*?)endbfchar", content, re.S):
            for _src, dst in re.findall(rb"<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>", block):
                chars |= set(bytes.fromhex(dst.decode()).decode("utf-16-be"))
        for block in re.findall(rb"beginbfrange(.*?)endbfrange", content, re.S):
            for lo, hi, dst in re.findall(rb"<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>", block):
                first = int.from_bytes(bytes.fromhex(dst.decode()), "big")
                chars |= {chr(first + i) for i in range(int(hi, 16) - int(lo, 16) + 1)}
    return chars


def secret_steps(site: str) -> list[dict[str, Any]]:
    captures: list[dict[str, Any]] = [
        {"action": "screenshot", "name": "page", "full_page": True},
        {"action": "screenshot", "name": "form", "selector": "#f"},
        {"action": "pdf", "name": "page"},
    ]
    return careless_form_walk(site, "PW", captures)


async def run_steps(
    browser: BrowserHost, steps: list[dict[str, Any]], secret: str, **options: Any
) -> StepsOutcome:
    spec = TaskSpec.model_validate({"kind": "steps", "steps": steps})
    policy = Policy(allowed_networks=LOCAL)
    async with browser.context(policy, accept_downloads=True) as ctx:
        return await StepsRunner(spec, {"PW": secret}, timeout_seconds=60, policy=policy, **options).run(ctx)


# true: the network log with bodies, and DOM snapshots, in the trace; failure (the default): the network log
# recorded beside the trace (netlog.py) and the failed page's DOM
@pytest.mark.parametrize("snapshots", [True, "failure"])
async def test_a_failed_secret_task_stores_nothing_that_holds_the_secret(
    browser: BrowserHost, secret_site: str, snapshots: bool | str
) -> None:
    one = await run_steps(browser, secret_steps(secret_site), SECRET, trace_snapshots=snapshots)
    other = await run_steps(browser, secret_steps(secret_site), OTHER, trace_snapshots=snapshots)

    assert one.status == "failed" and one.error_step == 12, one.error_message
    stored = {a.name: a.data for a in one.artifacts}
    assert sorted(stored) == ["failure.png", "form.png", "page.pdf", "page.png", "trace.zip"]
    # the site put the typed value into its export: the worker does not store it, and says so
    assert one.result["withheld_artifacts"] == ["export.csv"]
    assert "artifact export.csv not stored: it contains the value of secret PW" in [
        line.message for line in one.logs
    ]

    # screenshots mask every element a secret went into (main page and iframe): the same picture whatever
    # the value
    stored_other = {a.name: a.data for a in other.artifacts}
    for name in ("page.png", "form.png", "failure.png"):
        assert stored[name] == stored_other[name], f"{name} shows what was typed"

    # the PDF draws the inputs' text as discs: none of the value's characters is in any of its fonts
    drawn = pdf_characters(stored["page.pdf"])
    assert {"G", "o", "•"} <= drawn  # the button's label and the discs: the fonts were read
    assert drawn & set(SECRET.replace(" ", "")) == set()

    # the trace is still a trace (every event parses, the fill is there), without the value in any entry
    files = entries(stored["trace.zip"])
    assert {"trace.trace", "trace.network"} <= set(files)
    if snapshots is True:
        assert any(name.startswith("resources/") for name in files)
    else:  # the requests that carried the value (a query string, the form's Latin-1 post) are in the log
        urls = [
            json.loads(line)["snapshot"]["request"]["url"] for line in files["trace.network"].splitlines()
        ]
        assert [u for u in urls if "/api?pw=" in u] and [u for u in urls if u.endswith("/signin")], urls
    for name, content in files.items():
        assert secret_forms_in(SECRET, content) == [], name
    events = [json.loads(line) for line in files["trace.trace"].decode().splitlines()]
    fills = [
        e["params"] for e in events if e.get("method") == "fill" and "#password" in e["params"]["selector"]
    ]
    assert fills and fills[0]["value"].strip("*") == ""
    for name, content in stored.items():
        assert secret_forms_in(SECRET, content) == [], name


async def test_a_secret_too_short_to_scrub_keeps_no_trace(browser: BrowserHost, secret_site: str) -> None:
    steps: list[dict[str, Any]] = [
        {"action": "navigate", "url": f"{secret_site}/form"},
        {"action": "fill", "selector": "#note", "value": "{{ secrets.PW }}"},
        {"action": "wait_for", "selector": "#never", "timeout_ms": 200},
    ]
    out = await run_steps(browser, steps, "123")
    assert [a.name for a in out.artifacts] == ["failure.png"]
    assert "no trace.zip kept: secret PW is under 4 characters" in [line.message for line in out.logs]


class _TypingModel(QuietHandler):
    """Stands in for an LLM provider (a third party): types the secret's placeholder into the text input,
    then gives up, so the agent stores its failure screenshot."""

    def do_POST(self) -> None:
        body = json.loads(self.read_body())
        observation = body["messages"][-1]["content"]
        note = re.search(r"\[(\d+)\] input name=note id=note(.*)", observation)
        if note is not None and "value=" not in note.group(2):
            call = {
                "name": "type",
                "arguments": json.dumps({"index": int(note.group(1)), "text": "{{ secrets.PW }}"}),
            }
        else:
            call = {"name": "fail", "arguments": json.dumps({"reason": "cannot go on"})}
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c", "type": "function", "function": call}],
        }
        reply = json.dumps(
            {
                "choices": [{"index": 0, "message": message}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1},
            }
        ).encode()
        self.answer(200, reply, "application/json")


async def test_the_agent_failure_screenshot_masks_what_it_typed_a_secret_into(
    browser: BrowserHost, secret_site: str
) -> None:
    spec = TaskSpec.model_validate(
        {"kind": "agent", "goal": "type {{ secrets.PW }}", "agent": {"start_url": f"{secret_site}/form"}}
    )
    shots: list[bytes] = []
    with LoopbackHTTPServer(_TypingModel) as server:
        for secret in (SECRET, OTHER):
            llm = LLMClient(f"{server.url}/v1", "m", "sk-test")
            policy = Policy(allowed_networks=LOCAL)
            async with browser.context(policy) as ctx:
                out = await AgentRunner(spec, {"PW": secret}, llm=llm, timeout_seconds=30, policy=policy).run(
                    ctx
                )
            assert out.error_message == "the agent gave up: cannot go on", out.error_message
            assert any(
                line.message.startswith("type ") and line.message.endswith("-> ok") for line in out.logs
            )
            shots.append({a.name: a.data for a in out.artifacts}["failure.png"])
    assert shots[0] == shots[1]
