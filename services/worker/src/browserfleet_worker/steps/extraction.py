"""Reading the page into the result: `extract` (text, attributes, inner HTML, every match, tables, records of
fields per row) and `evaluate` (a script's value, when the organization allows scripts)."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from browserfleet_contracts.steps import EvaluateStep, ExtractStep
from playwright.async_api import Page

from .outcome import StepError

if TYPE_CHECKING:
    from .runner import Action, StepsRunner

MAX_RECORDS = 1_000  # rows an `extract` returns; a runaway selector must not build a huge result
MAX_TEXT = 1_000_000  # characters of one extracted text / inner HTML
# Records from rows whose fields are all native CSS; null when a selector is not (the caller falls back).
_RECORDS_JS = """(rows, [fields, attr, max]) => {
  try {
    return rows.slice(0, max).map(row => {
      const record = {};
      for (const [name, sel] of fields) {
        const el = row.querySelector(sel);
        record[name] = el === null ? null
          : (attr ? el.getAttribute(attr) : (el.innerText ?? el.textContent).trim());
      }
      return record;
    });
  } catch (e) {
    if (e instanceof DOMException && e.name === "SyntaxError") return null;
    throw e;
  }
}"""

_TABLE_JS = """(t) => {
  const rows = Array.from(t.querySelectorAll(':scope > thead > tr, :scope > tbody > tr, :scope > tr'));
  if (!rows.length) return [];
  const cells = (r) => Array.from(r.children).map(c => (c.innerText ?? c.textContent ?? '').trim());
  let head = t.querySelector(':scope > thead > tr');
  let body = rows;
  if (head) { body = rows.filter(r => r.parentElement.tagName !== 'THEAD'); }
  else if (rows[0].querySelector('th')) { head = rows[0]; body = rows.slice(1); }
  const names = head ? cells(head).map((n, i) => n || `column_${i + 1}`)
                     : cells(rows[0]).map((_, i) => `column_${i + 1}`);
  return body.slice(0, MAX_RECORDS).map(r => {
    const v = cells(r); const o = {};
    names.forEach((n, i) => { o[n] = i < v.length ? v[i] : null; });
    return o;
  });
}""".replace("MAX_RECORDS", str(MAX_RECORDS))


async def extract(rn: StepsRunner, page: Page, step: ExtractStep, _label: str, timeout: float) -> None:
    rn.store(step.name, await _extract(rn, page, step, timeout))


async def _extract(rn: StepsRunner, page: Page, step: ExtractStep, timeout: float) -> Any:
    selector = step.selector
    attribute = rn.render(step.attribute) if step.attribute else None
    if step.fields is not None:
        return await _records(rn, page, step, attribute)
    if step.mode == "all":
        values = await rn.locate(page, step, selector).evaluate_all(
            "(els, attr) => els.map(e => attr ? e.getAttribute(attr)"
            " : (e.innerText ?? e.textContent ?? '').trim())",
            attribute,
        )
        return list(values)[:MAX_RECORDS]
    first = rn.locate(page, step, selector).first
    if step.mode == "table":
        return await first.evaluate(_TABLE_JS, timeout=timeout)
    if step.mode == "inner_html":
        return str(await first.inner_html(timeout=timeout))[:MAX_TEXT]
    if attribute:
        return await first.get_attribute(attribute, timeout=timeout)
    return (await first.inner_text(timeout=timeout)).strip()[:MAX_TEXT]


async def _records(
    rn: StepsRunner, page: Page, step: ExtractStep, attribute: str | None
) -> list[dict[str, Any]]:
    # Records do not wait: zero rows is a valid answer (an empty table), so wait_for first if needed.
    assert step.fields is not None
    rows = rn.locate(page, step, step.selector)
    fields = [(name, rn.render(sub)) for name, sub in step.fields.items()]
    # One round trip for the whole table when every field is plain CSS and matches (the usual case);
    # a Playwright-only selector (text=, role=, xpath, :has-text, >>) or a miss, possibly in a shadow
    # root that only Playwright's engine pierces, takes the per-row path with its exact semantics.
    fast = await rows.evaluate_all(_RECORDS_JS, [fields, attribute, MAX_RECORDS])
    if fast is not None and all(v is not None for record in fast for v in record.values()):
        return list(fast)
    count = min(await rows.count(), MAX_RECORDS)
    script = (
        "(els, attr) => els.length === 0 ? null"
        " : (attr ? els[0].getAttribute(attr) : (els[0].innerText ?? els[0].textContent).trim())"
    )
    records: list[dict[str, Any]] = []
    for i in range(count):
        row = rows.nth(i)
        record: dict[str, Any] = {}
        for name, sub in fields:
            record[name] = await row.locator(sub).evaluate_all(script, attribute)
        records.append(record)
    return records


async def evaluate(rn: StepsRunner, page: Page, step: EvaluateStep, _label: str, timeout: float) -> None:
    if not rn.allow_evaluate:
        raise StepError("evaluate is not allowed for this organization")
    value = await asyncio.wait_for(page.evaluate(rn.render(step.expression)), timeout / 1000)
    if step.name:
        rn.store(step.name, json.loads(json.dumps(value, default=str)))


ACTIONS: dict[type[Any], Action] = {
    ExtractStep: extract,
    EvaluateStep: evaluate,
}
