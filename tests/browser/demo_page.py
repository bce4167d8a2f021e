"""Drive the demo page in Chromium: open it, read what it shows, wait for page conditions."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from playwright.sync_api import Page

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 20_000


def chromium_path() -> str:
    """Debian's Chromium; CI installs it. Missing means failing, never skipping."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "chromium is not installed (apt-get install chromium); .ci/run installs it"
    return path


@dataclass(frozen=True)
class Shown:
    """One notification as the page lists it."""

    id: str
    type: str
    content: dict[str, Any]


class DemoPage:
    def __init__(self, page: Page, base: str) -> None:
        self.page = page
        self.base = base

    def open(self, user: str, token: str, **extra: str) -> DemoPage:
        query = urlencode({"user": user, "token": token, **extra})
        self.page.goto(f"{self.base}/demo?{query}")
        return self

    def shown(self) -> list[Shown]:
        """The listed notifications, oldest first (the page lists newest first)."""
        rows: list[dict[str, str]] = self.page.eval_on_selector_all(
            "#events li", "items => items.map(li => ({...li.dataset}))"
        )
        return [Shown(r["id"], r["type"], json.loads(r["content"])) for r in reversed(rows)]

    def numbers(self) -> list[int]:
        return [int(item.content["n"]) for item in self.shown()]

    def wait_count(self, count: int, timeout_ms: int = WAIT_MS) -> None:
        self.page.wait_for_function(
            "n => document.querySelectorAll('#events li').length >= n",
            arg=count,
            timeout=timeout_ms,
        )

    def wait_state(self, state: str, timeout_ms: int = WAIT_MS) -> None:
        self.page.wait_for_function(
            "s => document.getElementById('state').dataset.state === s",
            arg=state,
            timeout=timeout_ms,
        )

    def reconnects(self) -> int:
        return int(self.page.text_content("#reconnects") or "0")

    def recovery(self) -> dict[str, str]:
        data: dict[str, str] = self.page.eval_on_selector("#recovery", "el => ({...el.dataset})")
        return data
