"""Control flow: `if` (a selector present or not picks a branch), `repeat` (run steps, click `next`, again,
with extracts accumulating over the pages) and `handoff` (wait for a person watching live to continue)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from browserfleet_contracts.steps import HANDOFF_TIMEOUT_MS, HandoffStep, IfStep, RepeatStep
from playwright.async_api import Page
from playwright.async_api import TimeoutError as PlaywrightTimeout

from .outcome import StepError

if TYPE_CHECKING:
    from .runner import Action, StepsRunner


async def if_(rn: StepsRunner, page: Page, step: IfStep, label: str, timeout: float) -> None:
    present = await _present(rn, page, step, timeout if step.timeout_ms else 0)
    branch, name = (step.then, "then") if present else (step.otherwise, "otherwise")
    await rn.run_steps(page, branch, f"{label}.{name}")


async def _present(rn: StepsRunner, page: Page, step: IfStep, timeout: float) -> bool:
    loc = rn.locate(page, step, step.selector)
    if timeout:
        try:
            await loc.first.wait_for(state="attached", timeout=timeout)
        except PlaywrightTimeout:
            return False
        return True
    return await loc.count() > 0


async def repeat(rn: StepsRunner, page: Page, step: RepeatStep, label: str, timeout: float) -> None:
    rn.accumulate += 1
    try:
        for i in range(step.max_iterations):
            await rn.run_steps(page, step.steps, f"{label}.{i}")
            nxt = rn.locate(page, step, step.next).first
            if await nxt.count() == 0 or not await nxt.is_visible() or not await nxt.is_enabled():
                return
            if i == step.max_iterations - 1:
                rn.log_line("warning", f"repeat stopped at max_iterations={step.max_iterations}")
                return
            await nxt.click(timeout=timeout)
            await page.wait_for_load_state("load", timeout=timeout)
    finally:
        rn.accumulate -= 1


async def handoff(rn: StepsRunner, _page: Page, step: HandoffStep, _label: str, _timeout: float) -> None:
    if rn.handoff is None:
        raise StepError("nobody can continue this task: this worker's live view or its input is turned off")
    seconds = (step.timeout_ms or HANDOFF_TIMEOUT_MS) / 1000
    rn.log_line(
        "info", f"waiting up to {seconds:g} s for a person to continue: {step.message or 'no message'}"
    )
    if not await rn.handoff(step.message, seconds):
        raise StepError(f"nobody pressed continue within {seconds:g} s")
    rn.log_line("info", "a person pressed continue")


ACTIONS: dict[type[Any], Action] = {
    IfStep: if_,
    RepeatStep: repeat,
    HandoffStep: handoff,
}
