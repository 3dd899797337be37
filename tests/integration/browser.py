"""Debian's Chromium, headless, driven by Playwright (never ``playwright install``), with
every request recorded and anything not aimed at loopback aborted."""

from __future__ import annotations

import ipaddress
from typing import Iterator
from urllib.parse import urlsplit

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def is_loopback(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in ("data", "blob", "about"):
        return True
    try:
        return ipaddress.ip_address(parts.hostname or "").is_loopback
    except ValueError:
        return parts.hostname == "localhost"


class Browser:
    """One Chromium; ``page()`` gives a fresh context (its own cookies) that records URLs."""

    def __init__(self) -> None:
        from playwright.sync_api import sync_playwright

        self._pw = sync_playwright().start()
        self.browser = self._pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        self.urls: list[str] = []
        self.outside: list[str] = []

    def page(self):  # type: ignore[no-untyped-def]
        context = self.browser.new_context(viewport={"width": 1280, "height": 860}, accept_downloads=True)
        context.route("**/*", self._gate)
        context.on("websocket", lambda ws: self.urls.append(ws.url))
        return context.new_page()

    def _gate(self, route, request) -> None:  # type: ignore[no-untyped-def]
        self.urls.append(request.url)
        if is_loopback(request.url):
            route.continue_()
        else:
            self.outside.append(request.url)
            route.abort()

    def close(self) -> None:
        self.browser.close()
        self._pw.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    b = Browser()
    try:
        yield b
    finally:
        b.close()
    assert b.urls, "the browser made no request at all"
    assert not b.outside, f"pages asked for something outside loopback: {b.outside}"
    assert all(is_loopback(u) for u in b.urls)
