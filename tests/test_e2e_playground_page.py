"""End to end through the Agents Playground's own web page: the acknowledgement
button pressed in the page, as a developer does under `./scripts/dev` (README
"Read, acknowledged, reminded"). The app and Playground run as in
test_e2e_playground.py; the page in Debian's chromium driven by Playwright, as
in test_ui_browser.py. The acknowledged card's screenshot goes to
.dev/ui-screenshots/ack-card.png (docs/ui/ack-card.png is a copy, made by
`python -m proactive_devtools shots ack-card`; its ✅ needs an emoji font,
Debian's fonts-noto-color-emoji, else Chromium draws a box).

Why the button's data is `{"sendKey": …}` and not `{"key": …}`
(@microsoft/m365agentsplayground 0.2.28, its client bundle
dist/client/static/js/main.*.js): pressing an `Action.Execute` makes the page's
Adaptive Cards renderer run `prepareForExecution`, which copies the action's
`data` with `JSON.stringify`. The renderer parses `data` into a
`SubmitActionData` object that keeps the card's own object as its raw
properties (`preserveSourcePropertiesOnParse`) and whose schema inherits the
renderer's `key` property (`keyProperty = new StringProperty(v1_0, "key")`,
its React key); serialising writes `key` back into that object, which is part
of the page's frozen Redux state. With a `key` field in `data` that write
throws "Cannot assign to read only property 'key'", the click handler ends
there and no `/_conversation/v1/invoke` request leaves the page. This test
presses the button as a developer does, with nothing patched, so it fails if
the button's data takes such a field again.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from proactive.storage.queues import dumps, encode
from tests.polling import eventually
from tests.test_e2e_playground import Stack, apps, stack  # noqa: F401  (module fixtures)
from tests.test_ui_browser import CHROMIUM, SHOTS

playwright_async = pytest.importorskip("playwright.async_api")
pytestmark = [pytest.mark.asyncio(loop_scope="module"),
              pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium "
                                 "(scripts/setup installs it as root with apt-get)")]

INVOKE = "/_conversation/v1/invoke"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Any]:
    async with playwright_async.async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        await b.close()


class Page:
    """The Playground's page, opened like a developer opens it (which installs
    the app in the personal chat), with what it asked and what it threw."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.requests: list[str] = []
        self.errors: list[str] = []
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    def invokes(self) -> list[str]:
        return [u for u in self.requests if u.endswith(INVOKE)]


async def open_page(browser: Any, stack: Stack) -> tuple[Any, Page]:  # noqa: F811
    """The page opened on a fresh Playground: it installs the app in the personal
    chat, and the app's welcome card (sent once, on the first install) shows."""
    context = await browser.new_context(viewport={"width": 1000, "height": 780})
    page = await context.new_page()
    watched = Page(page)
    await page.goto(f"http://localhost:{stack.apps.playground_port}/")
    await page.locator(".ac-adaptiveCard", has_text="Welcome to").wait_for(timeout=30_000)
    return context, watched


async def send_policy(stack: Stack) -> str:  # noqa: F811
    """A notification asking for an acknowledgement, to the Playground's user."""
    key = f"e2e-page-{uuid.uuid4().hex[:8]}"
    await stack.outbox.send_message(encode(dumps({
        "version": 1, "op": "send", "key": key, "to": {"user": stack.user},
        "topic": "hr-policy", "ack": True,
        "notification": {"title": "New travel policy",
                         "what": "Please read it before your next trip.",
                         "item": {"name": "Travel policy 2027",
                                  "url": "https://intranet.example.com/travel"},
                         "by": "HR"}})))
    return key


def card_of(page: Any) -> Any:
    """The newest card of `send_policy` in the page."""
    return page.locator(".ac-adaptiveCard", has_text="New travel policy").last


async def test_got_it_pressed_in_the_page_is_recorded_and_shows_the_acknowledged_card(
        stack: Stack, browser: Any) -> None:  # noqa: F811
    context, watched = await open_page(browser, stack)
    try:
        key = await send_policy(stack)
        card = card_of(watched.page)
        await card.get_by_role("button", name="Got it").click(timeout=30_000)
        # The page puts the card of the bot's answer in place of the message's.
        acknowledged = card.get_by_text("Acknowledged at ")
        await acknowledged.wait_for(timeout=15_000)
        assert watched.errors == [] and len(watched.invokes()) == 1
        assert await card.get_by_role("button", name="Got it").count() == 0
        row = await eventually(lambda: _acked(stack, key), what="ackedAt recorded")
        assert row["state"] == "sent"
        SHOTS.mkdir(parents=True, exist_ok=True)
        await watched.page.screenshot(path=str(SHOTS / "ack-card.png"))
    finally:
        await context.close()


async def _acked(stack: Stack, key: str) -> dict[str, Any] | None:  # noqa: F811
    row = await stack.delivery(key)
    return row if row.get("ackedAt") else None
