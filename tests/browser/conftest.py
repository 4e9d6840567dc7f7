"""Headless Chromium (Debian's package) driven by Playwright's async API.

Playwright cannot download browsers here, so it launches ``/usr/bin/chromium`` directly. The async
API is used because the gateway under test runs in the same event loop. Screenshots of every page
a test visits are saved under ``artifacts/screenshots/`` for humans to look at.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import AsyncIterator

import pytest

from tests.conftest import missing_service

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"


def chromium_path() -> str:
    """Where Debian's Chromium is, or skip/fail naming how to install it."""
    path = os.environ.get("GATEHOUSE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(path):
        missing_service("Chromium", "run `make system-deps` (installs Debian's chromium)")
    return path


@pytest.fixture
async def browser_page() -> AsyncIterator[object]:
    """A fresh page in a fresh headless Chromium context."""
    from playwright.async_api import async_playwright

    executable = chromium_path()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            context = await browser.new_context(viewport={"width": 1200, "height": 900})
            page = await context.new_page()
            yield page
            await context.close()
        finally:
            await browser.close()


async def screenshot(page: object, name: str) -> Path:
    """Save a full-page screenshot as an artifact and return its path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
    return path
