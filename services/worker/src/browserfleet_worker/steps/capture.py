"""Files a task keeps as artifacts: `screenshot`, `pdf`, and `download` (bounded in size and time)."""

from __future__ import annotations

import asyncio
import mimetypes
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from browserfleet_contracts.steps import DownloadStep, PdfStep, ScreenshotStep
from playwright.async_api import Page

from .outcome import StepError

if TYPE_CHECKING:
    from .runner import Action, StepsRunner

MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


async def screenshot(rn: StepsRunner, page: Page, step: ScreenshotStep, _label: str, timeout: float) -> None:
    mask = rn.secret_masks()  # the inputs a secret was typed into
    if step.selector:
        target = rn.locate(page, step, step.selector).first
        data = await target.screenshot(timeout=timeout, type="png", mask=mask)
    else:
        data = await page.screenshot(full_page=step.full_page, timeout=timeout, type="png", mask=mask)
    rn.add_artifact(f"{step.name}.png", "image/png", data)


async def pdf(rn: StepsRunner, page: Page, step: PdfStep, _label: str, timeout: float) -> None:
    async with rn.secrets_hidden(timeout):
        data = await asyncio.wait_for(page.pdf(), timeout / 1000)
    rn.add_artifact(f"{step.name}.pdf", "application/pdf", data)


async def download(rn: StepsRunner, page: Page, step: DownloadStep, _label: str, timeout: float) -> None:
    async with page.expect_download(timeout=timeout) as info:
        await rn.locate(page, step, step.selector).first.click(timeout=timeout)
    file = await info.value
    try:
        path = await asyncio.wait_for(file.path(), timeout / 1000)
    except TimeoutError:
        await file.cancel()
        raise StepError(f"the download did not finish within {timeout:g} ms") from None
    failure = await file.failure()
    if failure:
        raise StepError(f"the download failed: {failure}")
    size = await asyncio.to_thread(os.path.getsize, path)
    if size > rn.max_download_bytes:
        await file.delete()
        raise StepError(f"the download is {size} bytes, over the limit of {rn.max_download_bytes}")
    name = step.name or _SAFE_NAME.sub("_", file.suggested_filename).strip("._") or "download"
    data = await asyncio.to_thread(Path(path).read_bytes)
    await file.delete()
    rn.add_artifact(name, mimetypes.guess_type(name)[0] or "application/octet-stream", data)


ACTIONS: dict[type[Any], Action] = {
    ScreenshotStep: screenshot,
    PdfStep: pdf,
    DownloadStep: download,
}
