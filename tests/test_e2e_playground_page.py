"""End to end through the Agents Playground's own web page: the acknowledgement
button pressed in the page, as a developer does under `./scripts/dev` (README
"Read, acknowledged, reminded"). The app and Playground run as in
test_e2e_playground.py; the page in Debian's chromium driven by Playwright, as
in test_ui_browser.py. The acknowledged card's screenshot goes to
.dev/ui-screenshots/ack-card.png (docs/ui/ack-card.png is a copy, made by
`python -m proactive_devtools shots ack-card`; its ✅ needs an emoji font,
Debian's fonts-noto-color-emoji, else Chromium draws a box).

Why the page needs help (@microsoft/m365agentsplayground 0.2.28, its client
bundle dist/client/static/js/main.*.js): pressing an `Action.Execute` makes the
page's Adaptive Cards renderer run `prepareForExecution`, which copies the
action's `data` with `JSON.stringify`. The renderer parses `data` into a
`SubmitActionData` object that keeps the card's own object as its raw
properties (`preserveSourcePropertiesOnParse`) and whose schema inherits the
renderer's `key` property (`keyProperty = new StringProperty(v1_0, "key")`,
its React key); serialising writes `key` back into that object, which is part
of the page's frozen Redux state. With `data` holding a `key` field (ours:
`{"key": <send key>}`) that write throws "Cannot assign to read only property
'key'", the click handler ends there and no `/_conversation/v1/invoke` request
leaves the page; a `data` without `key` (the opt-out button's `{"topic": …}`)
goes through. Teams is not concerned (it does not run this renderer); the
page is made to work by leaving its state unfrozen (`Object.freeze` a no-op
before its script runs), and the first test below proves the bug is still
there, so the day the Playground fixes it, it fails and the help can go.
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

UNFROZEN = "Object.freeze = (o) => o;"  # see the module's docstring
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


async def open_page(browser: Any, stack: Stack, *,  # noqa: F811
                    unfrozen: bool) -> tuple[Any, Page]:
    context = await browser.new_context(viewport={"width": 1000, "height": 480})
    page = await context.new_page()
    if unfrozen:
        await page.add_init_script(UNFROZEN)
    watched = Page(page)
    await page.goto(f"http://localhost:{stack.apps.playground_port}/")
    await eventually(lambda: stack.references.user(stack.user, stack.config["tenantId"]),
                     what="the page installed the app (the user's reference stored)")
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
    """The newest card of `send_policy` in the page (a page shows what arrives
    after it opened, so it is the one this test sent)."""
    return page.locator(".ac-adaptiveCard", has_text="New travel policy").last


async def test_the_playground_page_still_throws_on_a_button_whose_data_has_key(
        stack: Stack, browser: Any) -> None:  # noqa: F811
    context, watched = await open_page(browser, stack, unfrozen=False)
    try:
        key = await send_policy(stack)
        card = card_of(watched.page)
        await card.get_by_role("button", name="Got it").click(timeout=30_000)
        await eventually(lambda: watched.errors, what="the page's error")
        assert "Cannot assign to read only property 'key'" in watched.errors[0]
        assert watched.invokes() == []
        assert not (await stack.delivery(key)).get("ackedAt")
    finally:
        await context.close()


async def test_got_it_pressed_in_the_page_is_recorded_and_shows_the_acknowledged_card(
        stack: Stack, browser: Any) -> None:  # noqa: F811
    context, watched = await open_page(browser, stack, unfrozen=True)
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
