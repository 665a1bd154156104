"""Failures that used to escape the worker or be misclassified, end to end:
real Azurite, the fake Azure AD's token endpoint through MSAL, the Connector
emulator over loopback HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from proactive.cli import main as cli
from proactive.config import Settings
from proactive.receiving.activities import parse_activity
from proactive.runtime import Runtime
from proactive.storage import deliveries as d
from proactive.storage.reference_keys import tenant_pk, user_pk
from proactive.storage.tables import safe_key
from proactive.teams.credentials import build_token_provider
from proactive.worker import process
from proactive_devtools.emulator import ConnectorEmulator
from proactive_devtools.fake_aad import FakeAAD
from tests.activities_data import TENANT, USER_AAD, install
from tests.sealed import app_made

APP_ID = "0f3c9a5e-1111-4222-8333-444455556666"
SECRET = "the-right-secret-0123456789"
RECIPIENT = f"user:{USER_AAD}"
# An allow-listed Connector host. The bot must get its token before calling it,
# and these tests fail at that step: nothing ever listens here.
ALLOWED = "127.0.0.1:9"
SERVICE_URL = f"https://{ALLOWED}/teams/"


def send(key: str, **extra: Any) -> str:
    return json.dumps({"version": 1, "op": "send", "key": key, "to": {"user": USER_AAD},
                       "text": "Build **42** is green", **extra})


def update(key: str, **extra: Any) -> str:
    return json.dumps({"version": 1, "op": "update", "key": key, "text": "resolved", **extra})


async def row(rt: Runtime, key: str) -> dict[str, Any]:
    return dict(await rt.deliveries.table.get_entity(safe_key(key), safe_key(RECIPIENT)))


async def waiting(queue: Any) -> int:
    """Messages in a queue, the invisible (delayed) ones too."""
    return int((await queue.get_queue_properties()).approximate_message_count)


async def parked(rt: Runtime) -> list[dict[str, Any]]:
    return [json.loads(m.content) for m in await rt.outbox.poison_queue.peek_messages(32)]


def seconds_until(text: str) -> float:
    return (datetime.fromisoformat(text.replace("Z", "+00:00")) - datetime.now(UTC)) \
        .total_seconds()


@contextlib.asynccontextmanager
async def bot_runtime(base: Settings, aad: FakeAAD, *, token_deadline: float = 10.0,
                      **changes: Any) -> AsyncIterator[Runtime]:
    """Local development off, the bot's credentials from `changes`, the cloud's
    token authority pointed at the fake Azure AD (through the real MSAL client),
    and USER_AAD installed with an allow-listed serviceUrl."""
    settings = dataclasses.replace(
        base, local_dev=False, app_id=APP_ID, app_tenant_id=TENANT,
        cloud_override=aad.cloud_override(add_connector_hosts=[ALLOWED]), **changes)
    rt = await Runtime.create(settings)
    msal_http = aad.msal_http_client()
    try:
        aad.register_client(APP_ID, scope=rt.cloud.token_scope, secret=SECRET)
        if settings.has_credentials:
            rt.connector.tokens = build_token_provider(settings, rt.cloud,
                                                       http_client=msal_http,
                                                       deadline=token_deadline)
        await rt.references.record(parse_activity(install(service_url=SERVICE_URL)))
        yield rt
    finally:
        msal_http.close()
        await rt.close()


# ---- the bot's token can't be obtained ---------------------------------------------------

async def test_a_refused_token_is_recorded_counted_retried_and_shown_in_status(
        settings: Settings, aad: FakeAAD, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    async with bot_runtime(settings, aad, app_password="a-wrong-secret-000") as rt:
        outcome = await process(rt, send("k"), message_id="m1")
        # A transient failure of this recipient, not an exception out of the worker.
        assert (outcome.state, outcome.reason, outcome.counts) == \
            ("retry", "token-unavailable", True)
        assert 1 <= outcome.delay <= 4  # backoff after the first attempt
        record = await row(rt, "k")
        assert (record["state"], record["reason"], record["attempts"]) == \
            (d.RETRYING, "token-unavailable", 1)
        assert record["lastCode"] == "invalid_client AADSTS7000215"
        assert "a-wrong-secret-000" not in json.dumps(record)
        assert 0 < seconds_until(record["retryAt"]) <= 4
        assert await waiting(rt.outbox.queue) == 1  # the retry, invisible for its delay

        # The last attempt gives up with the reason, like any transient failure.
        last = await app_made(rt, send("k", attempt=rt.settings.max_attempts))
        outcome = await process(rt, last, message_id="m8")
        assert (outcome.state, outcome.reason) == ("poisoned", "retries-exhausted")
        record = await row(rt, "k")
        assert (record["state"], record["reason"]) == (d.FAILED, "retries-exhausted")
        assert "token-unavailable" in record["detail"]
        assert record["attempts"] == 2

        # `python -m proactive status --key k` shows it.
        monkeypatch.setenv("AzureWebJobsStorage", rt.settings.storage_connection)
        monkeypatch.setenv("PROACTIVE_TABLE_PREFIX", rt.settings.table_prefix)
        monkeypatch.chdir(tmp_path)  # no local.settings.json: the environment only
        capsys.readouterr()
        assert await asyncio.to_thread(cli, ["status", "--key", "k"]) == 0
        [shown] = json.loads(capsys.readouterr().out)
        assert (shown["state"], shown["reason"]) == ("failed", "retries-exhausted")
        assert "token-unavailable" in shown["detail"]


async def test_an_unreachable_identity_endpoint_is_a_transient_failure(
        settings: Settings, aad: FakeAAD) -> None:
    async with bot_runtime(settings, aad, app_password=SECRET) as rt:
        await aad.stop()  # Azure AD is down
        outcome = await process(rt, send("k"), message_id="m1")
        assert (outcome.state, outcome.reason) == ("retry", "token-unavailable")
        record = await row(rt, "k")
        assert (record["state"], record["reason"]) == (d.RETRYING, "token-unavailable")
        assert record["lastCode"].startswith("Connect")  # the client's connection error
        assert await waiting(rt.outbox.queue) == 1


async def test_a_hung_token_endpoint_retries_the_message_as_token_unavailable(
        settings: Settings, aad: FakeAAD, caplog: pytest.LogCaptureFixture) -> None:
    async with bot_runtime(settings, aad, app_password=SECRET, token_deadline=0.5) as rt:
        aad.hang = True  # Entra ID takes the request and never answers
        outcome = await process(rt, send("k"), message_id="m1")
        assert (outcome.state, outcome.reason) == ("retry", "token-unavailable")
        record = await row(rt, "k")
        assert (record["state"], record["reason"], record["lastCode"]) == \
            (d.RETRYING, "token-unavailable", "Timeout")
        assert await waiting(rt.outbox.queue) == 1
        assert any(r.levelname == "WARNING" and aad.authority_host in r.getMessage()
                   for r in caplog.records)


# ---- no credentials at all ---------------------------------------------------------------

async def test_missing_credentials_fail_fast_without_retries(
        settings: Settings, aad: FakeAAD) -> None:
    async with bot_runtime(settings, aad) as rt:  # an app id, but no secret, cert or MSI
        assert rt.connector.tokens is None
        outcome = await process(rt, send("k"), message_id="m1")
        assert (outcome.state, outcome.reason) == ("failed", "no-credentials")
        record = await row(rt, "k")
        assert (record["state"], record["reason"], record["attempts"]) == \
            (d.FAILED, "no-credentials", 1)
        assert "MicrosoftAppPassword" in record["detail"]
        assert await waiting(rt.outbox.queue) == 0  # no retry
        assert await parked(rt) == []


# ---- an update or delete while its send waits for a 429's Retry-After ---------------------

async def throttled_send(rt: Runtime, emulator: ConnectorEmulator, key: str) -> None:
    """Send under `key` while Teams answers 429 Retry-After 30."""
    emulator.inject(429, retry_after=30, operation="send")
    outcome = await process(rt, send(key), message_id="s1")
    assert (outcome.state, outcome.reason, outcome.delay) == ("retry", "throttled", 30.0)


@pytest.mark.parametrize("op", ["update", "delete"])
async def test_an_edit_waits_as_long_as_its_throttled_send_then_applies(
        installed: Runtime, emulator: ConnectorEmulator, op: str) -> None:
    await throttled_send(installed, emulator, "k")
    edit = update("k") if op == "update" else json.dumps(
        {"version": 1, "op": "delete", "key": "k"})
    # Even on its last attempt: waiting for the send uses up none of the edit's.
    last = await app_made(installed, {**json.loads(edit),
                                      "attempt": installed.settings.max_attempts})
    outcome = await process(installed, last, message_id="e1")
    assert (outcome.state, outcome.reason, outcome.counts) == ("retry", "send-pending", False)
    # Just after the send's retry, which its delivery row records.
    retry_in = seconds_until((await row(installed, "k"))["retryAt"])
    assert 28 <= retry_in <= 30
    assert retry_in <= outcome.delay <= retry_in + 2
    assert await parked(installed) == []
    assert await waiting(installed.outbox.queue) == 2  # the send's retry and the edit's
    assert emulator.counters["requests"] == 1  # only the throttled send

    # The send's retry goes out (Retry-After later: the conversation was held
    # for it in this process); then the edit's copy applies.
    later = installed.conversation_pacer.clock() + 31
    installed.conversation_pacer.clock = lambda: later
    copy = await app_made(installed, {**json.loads(send("k")), "attempt": 2})
    assert (await process(installed, copy, message_id="s2")).state == "done"
    assert (await process(installed, last, message_id="e2")).state == "done"
    [delivery] = emulator.deliveries
    record = await row(installed, "k")
    if op == "update":
        assert (delivery.text, record[f"{op}State"]) == ("resolved", "done")
    else:
        assert delivery.deleted and record["state"] == d.DELETED


async def test_an_edit_of_a_send_that_failed_is_recorded_failed_with_its_reason(
        installed: Runtime, emulator: ConnectorEmulator) -> None:
    await throttled_send(installed, emulator, "k")
    emulator.inject(503, operation="send")
    later = installed.conversation_pacer.clock() + 31  # Retry-After has passed
    installed.conversation_pacer.clock = lambda: later
    last = await app_made(installed, send("k", attempt=installed.settings.max_attempts))
    assert (await process(installed, last, message_id="s8")).reason == "retries-exhausted"
    outcome = await process(installed, update("k"), message_id="e1")
    assert (outcome.state, outcome.reason) == ("failed", "retries-exhausted")
    record = await row(installed, "k")
    assert (record["updateState"], record["updateReason"]) == ("failed", "retries-exhausted")
    # Only the send is parked; the update is not poisoned.
    assert [p["reason"] for p in await parked(installed)] == ["retries-exhausted"]
    assert json.loads((await parked(installed))[0]["message"])["op"] == "send"


# ---- 403 InvalidBotApiHost: the cloud's fallback host --------------------------------------

@pytest.fixture
async def gcc() -> AsyncIterator[ConnectorEmulator]:
    """A second Connector standing in for the cloud's fallback host."""
    async with ConnectorEmulator() as emu:
        yield emu


async def test_the_fallback_host_that_answered_is_used_from_then_on(
        settings: Settings, emulator: ConnectorEmulator, gcc: ConnectorEmulator) -> None:
    public = emulator
    public.inject(403, code="InvalidBotApiHost", count=100)  # every call on this host
    override = json.dumps({"fallback_service_url": gcc.url})
    rt = await Runtime.create(dataclasses.replace(
        settings, cloud_override=override,
        local_connectors=(*settings.local_connectors, gcc.url)))
    try:
        await rt.references.record(parse_activity(install(service_url=public.url)))
        assert (await process(rt, send("k"), message_id="m1")).state == "done"
        assert public.counters["requests"] == 1 and gcc.counters["delivered"] == 1
        record = await row(rt, "k")
        assert (record["state"], record["serviceUrl"]) == (d.SENT, gcc.url)
        # The reference rows point at the host that worked ...
        for pk in (user_pk(USER_AAD), tenant_pk(TENANT)):
            entity = await rt.references.table.get_entity(pk, safe_key(TENANT))
            assert entity["serviceUrl"] == gcc.url, pk
        # ... so an edit and a later send go there directly.
        assert (await process(rt, update("k"), message_id="m2")).state == "done"
        assert (await process(rt, send("k2"), message_id="m3")).state == "done"
        assert public.counters["requests"] == 1
        assert gcc.counters["delivered"] == 2 and gcc.deliveries[0].text == "resolved"
    finally:
        await rt.close()


async def test_invalid_bot_api_host_fails_where_the_cloud_has_no_fallback(
        settings: Settings, emulator: ConnectorEmulator) -> None:
    emulator.inject(403, code="InvalidBotApiHost", count=100)
    rt = await Runtime.create(dataclasses.replace(settings, cloud="GCCHigh"))
    try:
        await rt.references.record(parse_activity(install(service_url=emulator.url)))
        outcome = await process(rt, send("k"), message_id="m1")
        assert (outcome.state, outcome.reason) == ("failed", "invalid-bot-api-host")
        record = await row(rt, "k")
        assert (record["state"], record["reason"]) == (d.FAILED, "invalid-bot-api-host")
        assert emulator.counters["requests"] == 1
        assert await waiting(rt.outbox.queue) == 0
    finally:
        await rt.close()
