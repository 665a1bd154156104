"""The operations page (/api/ui/) in a real browser: Debian's chromium driven by
Playwright, against the built-in host with Functions keys, Azurite and sends
delivered through the Connector emulator. One browser for the module; each
test a fresh page. Screenshots go to .dev/ui-screenshots/."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest

from proactive.receiving.activities import parse_activity
from proactive.receiving.endpoint import handle_activity
from proactive.runtime import Runtime
from proactive.worker import process
from proactive_devtools.emulator import ConnectorEmulator
from proactive_devtools.processes import Azurite
from tests.activities_data import TENANT, install
from tests.api_support import REPO_ROOT, ApiApp, api_app
from tests.test_acks import click
from tests.test_broadcast import drain
from tests.test_read_receipts import receipt

CHROMIUM = Path("/usr/bin/chromium")
playwright_sync = pytest.importorskip("playwright.sync_api")
expect = playwright_sync.expect
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium "
                                "(scripts/setup installs it as root with apt-get)")
SHOTS = REPO_ROOT / ".dev" / "ui-screenshots"
USERS = 200
BLOCKED = range(0, 12)  # the emulator answers 403 ConversationBlockedByUser
BROKEN = range(12, 15)  # the emulator answers 400 BadArgument: failed
OPTED_OUT = range(15, 22)  # opted out of the topic
MAIN_KEY = "all-hands <script>alert(1)</script>"
MAIN_TEXT = "<img src=x onerror=alert(1)> All-hands at 15:00"
SMALL_SENDS = 26  # more than a page of the list (25)
READ, ACKED = 120, 70  # of the main send's sent: read receipts, then "Got it" presses


def aad(i: int) -> str:
    return f"00000000-0000-4000-8000-{i:012d}"


@dataclass
class Stack:
    app: ApiApp
    counts: dict[str, int]  # the API's counts of the main send


def run(coro: Any) -> Any:
    """Run a coroutine to its end in a thread of its own (the test's thread
    may have an event loop running; Playwright's sync API must not)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _seed(app: ApiApp) -> None:
    async with ConnectorEmulator() as emu:
        # The worker sends only to the configured local Connector: this emulator.
        rt = await Runtime.create(replace(app.settings, local_connectors=(emu.url,)))
        try:
            for i in range(USERS):
                await rt.references.record(parse_activity(install(
                    service_url=emu.url, aad=aad(i), conversation=f"a:conv-{i}")))
            for i in BLOCKED:
                emu.set_status(f"a:conv-{i}", "blocked")
            for i in BROKEN:
                emu.inject(400, count=1000, conversation_id=f"a:conv-{i}", code="BadArgument")
            for i in OPTED_OUT:
                await rt.opt_outs.stop(aad(i), "news", via="test", tenant_id=TENANT)
            message = {"version": 1, "op": "send", "key": MAIN_KEY, "topic": "news",
                       "to": {"allUsers": True, "tenant": TENANT}, "text": MAIN_TEXT,
                       "ack": True}
            await process(rt, json.dumps(message), message_id="main")
            while await drain(rt):
                pass
            await _read_and_ack(rt, emu.url)
            for n in range(SMALL_SENDS):
                await process(rt, json.dumps({
                    "version": 1, "op": "send", "key": f"small-{n:02d}",
                    "to": {"users": [aad(199)]}, "text": f"reminder {n}"}),
                    message_id=f"s{n}")
            # Stuck: two parked messages (one fine as it came) and a schedule.
            await process(rt, '{"version": 1, "op": "send", "key": "bad", "to": {}}',
                          message_id="p1")
            await rt.outbox.poison(json.dumps({
                "version": 1, "op": "send", "key": "parked-fine", "text": "hi",
                "to": {"user": "00000000-0000-0000-0000-0000000000a1"}}),
                reason="gone-wrong", detail="<b>parked</b> by a test", message_id="p2")
            await process(rt, json.dumps({"version": 1, "op": "send", "key": "later",
                                          "to": {"user": aad(1)}, "text": "later",
                                          "schedule": {"at": "2099-01-01T09:00:00Z"}}),
                          message_id="later")
            # Left running: its parts are not delivered (the app's worker is off).
            await process(rt, json.dumps({"version": 1, "op": "send", "key": "to-cancel",
                                          "to": {"users": [aad(198), aad(197)]},
                                          "text": "cancel me"}), message_id="c")
        finally:
            await rt.close()


async def _read_and_ack(rt: Runtime, service_url: str) -> None:
    """READ of the main send's recipients read it and ACKED of those press its
    button, posted as Teams posts them (tests/test_read_receipts.py, test_acks.py)."""
    sent = sorted((row for row, _ in await rt.deliveries.by_key(MAIN_KEY)
                   if row.state == "sent"), key=lambda row: row.recipient)
    for n, row in enumerate(sent[:READ]):
        user, chat = row.recipient.removeprefix("user:"), str(row.conversation_id)
        activities = [receipt(user, chat, str(row.activity_id), service_url=service_url)]
        if n < ACKED:
            activities.append(click(user, chat, MAIN_KEY, service_url=service_url))
        for body in activities:
            assert (await handle_activity(rt, {}, body)).status == 200


async def _drain_app(app: ApiApp) -> None:
    rt = await Runtime.create(app.settings)
    try:
        await drain(rt)
    finally:
        await rt.close()


@pytest.fixture(scope="module")
def stack(azurite: Azurite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with api_app(azurite, tmp_path_factory.mktemp("ui")) as app:
        run(_seed(app))
        r = httpx.get(f"{app.base}sends/{quote(MAIN_KEY, safe='')}",
                      headers={"x-functions-key": app.key})
        assert r.status_code == 200, r.text
        counts = r.json()["counts"]
        assert (counts["read"], counts["acked"]) == (READ, ACKED), counts
        yield Stack(app, counts)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_sync.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, stack: Stack) -> Iterator[Any]:
    """A signed-in page (the key typed into the page's form) that records
    every host it asks anything of."""
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.hosts = set()
    pg.on("request", lambda req: pg.hosts.add(urlsplit(req.url).netloc)
          if urlsplit(req.url).scheme in ("http", "https") else None)
    pg.goto(f"{stack.app.base}ui/")
    pg.wait_for_selector("#signin:not([hidden])")
    pg.fill("#key-input", stack.app.key)
    pg.press("#key-input", "Enter")
    pg.wait_for_selector("#sends-table tbody tr")
    yield pg
    assert pg.hosts <= {urlsplit(stack.app.base).netloc}, pg.hosts
    context.close()


def shot(pg: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def api(stack: Stack, path: str, **params: str) -> Any:
    r = httpx.get(stack.app.base + path, params=params,
                  headers={"x-functions-key": stack.app.key})
    assert r.status_code == 200, r.text
    return r


def open_send(pg: Any, key: str) -> None:
    pg.fill("#open-key-input", key)
    pg.press("#open-key-input", "Enter")
    expect(pg.locator("#send-key")).to_have_text(key)
    expect(pg.locator("#rcpt-page")).not_to_be_empty()


def test_without_a_key_the_page_shows_no_data_and_says_how(browser: Any, stack: Stack) -> None:
    context = browser.new_context()
    pg = context.new_page()
    response = pg.goto(f"{stack.app.base}ui/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    pg.wait_for_selector("#signin:not([hidden])")
    assert pg.locator("#sends-table tbody tr").count() == 0
    assert "README" in pg.inner_text("#signin")
    shot(pg, "signin")
    context.close()


def test_sends_list_newest_first_with_counts_paged_and_filtered(page: Any, stack: Stack) -> None:
    listed = api(stack, "sends", limit="25").json()["items"]
    keys = page.locator("#sends-table tbody tr td.key a").all_inner_texts()
    assert keys == [item["key"] for item in listed]
    assert keys[0] == "to-cancel"
    assert "later" not in keys  # a scheduled one-recipient message has no index row
    shot(page, "sends")
    page.click("#sends-next")
    expect(page.locator("#sends-prev")).to_be_enabled()
    older = page.locator("#sends-table tbody tr td.key a").all_inner_texts()
    assert MAIN_KEY in older and not set(older) & set(keys)
    page.fill("#f-text", "REMINDER 7")
    page.press("#f-text", "Enter")
    expect(page.locator("#sends-table tbody tr td.key a")).to_have_text(["small-07"])
    page.fill("#f-text", "")
    page.select_option("#f-state", "done")  # the small sends' parts are never delivered
    page.press("#f-text", "Enter")
    expect(page.locator("#sends-table tbody tr td.key a")).to_have_text([MAIN_KEY])


def test_a_key_and_text_holding_markup_render_as_text(page: Any, stack: Stack) -> None:
    page.click("#sends-next")
    link = page.get_by_role("link", name=MAIN_KEY)
    link.wait_for()
    assert link.inner_text() == MAIN_KEY
    assert page.get_by_text(MAIN_TEXT).count() == 1
    assert page.locator("script").count() == 2  # charts.js and app.js only
    assert page.locator("main img").count() == 0


def test_one_send_counts_equal_the_apis_and_its_recipients_filter_search_page(
        page: Any, stack: Stack) -> None:
    counts = stack.counts
    assert counts["skipped_opted_out"] == len(OPTED_OUT) and counts["failed"] >= len(BROKEN)
    open_send(page, MAIN_KEY)
    funnel = page.get_attribute("#funnel svg", "aria-label")
    # Read and acknowledged stand in the funnel once the API counts them.
    assert funnel == (f"Queued {counts['queued']}, Sent {counts['sent']}, "
                      f"Read {counts['read']}, Acknowledged {counts['acked']}")
    reasons = dict(zip(page.locator("#reasons li span").all_inner_texts(),
                       map(int, page.locator("#reasons li strong").all_inner_texts()),
                       strict=True))
    assert reasons == {k.replace("_", ": ", 1).replace("_", "-"): v for k, v in counts.items()
                       if k.startswith(("skipped_", "failed_"))}
    assert page.inner_text("#send-state") == "done"
    assert page.inner_text("#rcpt-page") == f"page 1 of 8 ({USERS})"
    # Each recipient's result time (the API's lastAttemptAt) in its row and the timeline.
    first = api(stack, f"sends/{quote(MAIN_KEY, safe='')}/recipients", limit="1").json()
    updated = page.locator("#rcpt-table tbody tr").first.locator("td time")
    assert (updated.get_attribute("datetime") or "")[:16] == first["items"][0]["lastAttemptAt"][:16]
    assert page.get_attribute("#timeline svg", "aria-label").startswith(
        "Deliveries per minute over ")
    shot(page, "send")
    page.click("#rcpt-next")
    assert page.inner_text("#rcpt-page").startswith("page 2 of 8")
    page.select_option("#r-state", "blocked")
    assert page.locator("#rcpt-table tbody tr").count() == len(BLOCKED)
    page.select_option("#r-state", "")
    page.fill("#r-search", aad(13))
    rows = page.locator("#rcpt-table tbody tr")
    assert rows.count() == 1 and "failed" in rows.inner_text()


def test_csv_download_is_the_whole_report(page: Any, stack: Stack) -> None:
    open_send(page, MAIN_KEY)
    with page.expect_download() as info:
        page.click("#csv")
    text = Path(info.value.path()).read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    first = api(stack, f"sends/{quote(MAIN_KEY, safe='')}/report", format="csv", limit="1000").text
    assert rows[0] == next(csv.reader(io.StringIO(first)))
    assert len(rows) == 1 + USERS


def test_cancel_asks_first_then_posts_and_the_view_follows(page: Any, stack: Stack) -> None:
    open_send(page, "to-cancel")
    assert page.inner_text("#send-live").startswith("(refreshing every 5 s")
    page.click("#cancel")
    page.click("#confirm button[value=no]")
    page.click("#cancel")
    shot(page, "cancel")
    with page.expect_request(lambda r: r.method == "POST"
                             and r.url.endswith("/sends/to-cancel/cancel")):
        page.click("#confirm-yes")
    page.wait_for_selector("#status:has-text('Cancel queued')")
    run(_drain_app(stack.app))  # the worker carries the cancel out
    assert api(stack, "sends/to-cancel").json()["state"] == "cancelled"
    page.wait_for_selector("#send-state:has-text('cancelled')", timeout=20_000)
    assert page.inner_text("#send-live") == ""


def test_reach_lists_who_cannot_be_reached(page: Any, stack: Stack) -> None:
    page.click("#nav-reach")
    page.wait_for_selector("#view-reach:not([hidden])")
    reach = api(stack, "reach").json()
    expect(page.locator("#unreachable-table tbody tr")).to_have_count(len(reach["unreachable"]))
    assert len(reach["unreachable"]) >= len(BLOCKED) + len(OPTED_OUT)
    by_status: dict[str, int] = {}
    for row in reach["unreachable"]:
        by_status[row["status"]] = by_status.get(row["status"], 0) + 1
    shown = dict(zip(page.locator("#reach-counts li span").all_inner_texts(),
                     map(int, page.locator("#reach-counts li strong").all_inner_texts()),
                     strict=True))
    assert shown == by_status
    shot(page, "reach")
    # A group needs Graph install, which this app hasn't: the API's refusal, shown.
    page.fill("#reach-group", "5b2f0c1e-0000-4000-8000-000000000000")
    page.press("#reach-group", "Enter")
    page.wait_for_selector("#status.error")
    assert "400" in page.inner_text("#status")


def test_phone_width_has_no_horizontal_page_scroll(page: Any, stack: Stack) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    open_send(page, MAIN_KEY)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    shot(page, "send-phone")


def test_stuck_requeues_purges_and_cancels_a_schedule_after_asking(
        page: Any, stack: Stack) -> None:
    page.click("#nav-stuck")
    expect(page.locator("#poison-table tbody tr")).to_have_count(2)
    assert page.inner_text("#poison-count") == str(api(stack, "poison").json()["count"]) == "2"
    assert page.get_by_text("<b>parked</b> by a test").count() == 1
    expect(page.locator("#schedules-table tbody tr")).to_have_count(1)
    shot(page, "stuck")
    fine = page.locator("#poison-table tbody tr", has_text="gone-wrong")
    fine.get_by_role("button", name="Requeue…").click()
    assert '"parked-fine"' in page.input_value("#requeue-text")
    page.click("#requeue-yes")
    expect(page.locator("#poison-table tbody tr")).to_have_count(1)
    assert api(stack, "poison").json()["count"] == 1
    page.get_by_role("button", name="Purge…").click()
    page.click("#confirm-no")  # asked, and kept
    assert api(stack, "poison").json()["count"] == 1
    page.get_by_role("button", name="Purge…").click()
    page.click("#confirm-yes")
    expect(page.locator("#poison-table tbody tr")).to_have_count(0)
    assert api(stack, "poison").json()["count"] == 0
    page.locator("#schedules-table").get_by_role("button", name="Cancel…").click()
    with page.expect_request(lambda r: r.method == "POST"
                             and r.url.endswith("/sends/later/cancel")):
        page.click("#confirm-yes")
