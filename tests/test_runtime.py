"""The Runtime builds, it doesn't decide: no storage call at start, tables and
queues created only when found missing, and settings that can't be used stop
every trigger with the reason in the log (in Azure the worker can't stop the host).

The trigger tests set app settings in the process environment (monkeypatch,
restored after each test), because that is where the triggers read them.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator

import azure.functions as func
import pytest
from azure.data.tables.aio import TableServiceClient
from azure.storage.queue.aio import QueueServiceClient

from proactive import runtime as runtime_module
from proactive import triggers
from proactive.config import Settings
from proactive.errors import ConfigError
from proactive.hosting import AZURE_VARIABLES
from proactive.runtime import Runtime, storage_names
from proactive_devtools.processes import Azurite
from proactive_devtools.provision import provision
from tests.activities_data import USER_AAD, install

SECRET = "sEcReT-vAlUe-never-shown"
LOOPBACK = "http://127.0.0.1:9/"


async def existing(settings: Settings) -> tuple[set[str], set[str]]:
    """The tables and queues of this test's names that exist in Azurite."""
    names = storage_names(settings)
    async with TableServiceClient.from_connection_string(settings.storage_connection) as svc:
        tables = {t.name async for t in svc.list_tables()} & set(names.tables)
    async with QueueServiceClient.from_connection_string(settings.storage_connection) as svc:
        queues = {q.name async for q in svc.list_queues()} & set(names.queues)
    return tables, queues


# -- the app's process: settings from the environment, one Runtime ------------------


@pytest.fixture
def app_env(monkeypatch: pytest.MonkeyPatch, azurite: Azurite) -> Iterator[dict[str, str]]:
    """A fresh process state for the triggers: no Runtime yet, and app settings
    for this test's own tables and queue."""
    for name in (*AZURE_VARIABLES, "PROACTIVE_LOCAL_DEV", "PROACTIVE_CLOUD_OVERRIDE",
                 "MicrosoftAppId", "MicrosoftAppPassword"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(runtime_module, "_runtime", None)
    monkeypatch.setattr(runtime_module, "_api_runtime", None)
    monkeypatch.setattr(runtime_module, "_config_error", None, raising=False)
    monkeypatch.setattr(runtime_module, "_lock", None)
    tag = uuid.uuid4().hex[:10]
    env = {"AzureWebJobsStorage": azurite.connection_string, "OUTBOX_QUEUE": f"outbox{tag}",
           "PROACTIVE_TABLE_PREFIX": f"t{tag}"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    yield env


@pytest.fixture
async def close_app_runtime() -> AsyncIterator[None]:
    yield
    await runtime_module.close_runtime()


def request(body: dict[str, object], headers: dict[str, str] | None = None) -> func.HttpRequest:
    return func.HttpRequest("POST", "http://localhost/api/messages", headers=headers or {},
                            body=json.dumps(body).encode())


def queue_message(text: str) -> func.QueueMessage:
    return func.QueueMessage(id="m-1", body=text.encode())


def timer() -> func.TimerRequest:
    from azure.functions.timer import TimerRequest  # the concrete one the worker passes

    return TimerRequest(past_due=False)


async def reference_rows(env: dict[str, str]) -> list[dict[str, object]]:
    name = f"{env['PROACTIVE_TABLE_PREFIX']}references"
    async with TableServiceClient.from_connection_string(env["AzureWebJobsStorage"]) as svc:
        if name not in {t.name async for t in svc.list_tables()}:
            return []
        return [dict(e) async for e in svc.get_table_client(name).list_entities()]


@pytest.mark.parametrize("variable", AZURE_VARIABLES)
async def test_in_azure_local_development_mode_does_not_open_the_endpoint(
    app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, close_app_runtime: None,
    variable: str,
) -> None:
    monkeypatch.setenv("PROACTIVE_LOCAL_DEV", "true")
    monkeypatch.setenv(variable, "x")
    # Tokenless, from a loopback serviceUrl: what local development mode lets in.
    reply = await triggers.messages(request(install(service_url=LOOPBACK)))
    assert reply.status_code == 503
    assert await reference_rows(app_env) == []  # nothing stored, nothing to send to loopback


async def test_in_azure_the_test_only_cloud_override_is_refused(
    app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, close_app_runtime: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("MicrosoftAppId", "0f3c9a5e-1111-4222-8333-444455556666")
    monkeypatch.setenv("WEBSITE_SITE_NAME", "proactive-prod")  # without WEBSITE_INSTANCE_ID
    monkeypatch.setenv("PROACTIVE_CLOUD_OVERRIDE",
                       '{"openid_metadata_url": "http://127.0.0.1:9/meta"}')
    with caplog.at_level(logging.ERROR, logger="proactive.triggers"):
        reply = await triggers.messages(request(install()))
    assert reply.status_code == 503
    assert "PROACTIVE_CLOUD_OVERRIDE is for tests only" in caplog.text


async def test_an_id_setting_that_is_no_guid_answers_503_naming_it(
    app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, close_app_runtime: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 16 §4: `MicrosoftAppId=my-bot` used to start and get 401 for every
    token; a malformed allow-list refused every activity without a word."""
    monkeypatch.setenv("MicrosoftAppId", "my-bot")
    monkeypatch.setenv("MicrosoftAppPassword", SECRET)
    monkeypatch.setenv("MicrosoftAppTenantId", "72f988bf-86f1-41af-91ab-2d7cd011db47")
    monkeypatch.setenv("PROACTIVE_ALLOWED_TENANTS", "72f988bf-86f1-41af-91ab-2d7cd011db47;x")
    with caplog.at_level(logging.ERROR, logger="proactive.triggers"):
        reply = await triggers.messages(request(install()))
    assert reply.status_code == 503
    assert "MicrosoftAppId must be the bot's app (client) id" in caplog.text
    assert "PROACTIVE_ALLOWED_TENANTS entry '72f988bf-86f1-41af-91ab-2d7cd011db47;x'" \
        in caplog.text
    assert SECRET not in caplog.text
    assert await reference_rows(app_env) == []


async def test_a_configuration_error_stops_every_trigger_and_says_why(
    app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, close_app_runtime: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("MicrosoftAppId", "0f3c9a5e-1111-4222-8333-444455556666")
    monkeypatch.setenv("MicrosoftAppPassword", SECRET)
    monkeypatch.setenv("PROACTIVE_MAX_ATTEMPTS", "eight")
    reason = "PROACTIVE_MAX_ATTEMPTS must be a whole number, got 'eight'"
    with caplog.at_level(logging.DEBUG):
        for _ in range(2):  # every invocation, not only the first
            reply = await triggers.messages(request(install()))
            assert reply.status_code == 503
            assert reply.get_body() == triggers.CONFIG_ERROR_BODY.encode()
        # The queue trigger fails the invocation: the host keeps the message.
        with pytest.raises(ConfigError, match=reason):
            await triggers.outbox(queue_message('{"version": 1}'))
        assert await triggers.schedules(timer()) is None  # logged, nothing done
    errors = [r.getMessage() for r in caplog.records if r.name == "proactive.triggers"]
    assert len(errors) == 4 and all(reason in e for e in errors), errors
    assert SECRET not in caplog.text
    # Nothing was built: no storage touched.
    settings = Settings(storage_connection=app_env["AzureWebJobsStorage"],
                        outbox_queue=app_env["OUTBOX_QUEUE"],
                        table_prefix=app_env["PROACTIVE_TABLE_PREFIX"])
    assert await existing(settings) == (set(), set())


async def test_valid_settings_in_azure_serve_the_endpoint(
    app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, close_app_runtime: None,
) -> None:
    monkeypatch.setenv("MicrosoftAppId", "0f3c9a5e-1111-4222-8333-444455556666")
    monkeypatch.setenv("MicrosoftAppType", "UserAssignedMSI")
    monkeypatch.setenv("WEBSITE_INSTANCE_ID", "abc")
    # Storage as in Azure: by identity (the emulator's well-known key is refused
    # there); the unauthenticated activity is turned away before any storage call.
    monkeypatch.delenv("AzureWebJobsStorage")
    monkeypatch.setenv("AzureWebJobsStorage__accountName", "proactivetest")
    monkeypatch.setenv("AzureWebJobsStorage__credential", "managedidentity")
    reply = await triggers.messages(request(install(service_url=LOOPBACK)))
    assert (reply.status_code, reply.get_body()) == (401, b"unauthorized")  # no token


# -- storage: created by the tools, or on first use; never at start -----------------


async def test_creating_the_runtime_makes_no_storage_call(settings: Settings) -> None:
    rt = await Runtime.create(settings)
    try:
        assert await existing(settings) == (set(), set())
    finally:
        await rt.close()


async def test_a_missing_table_or_queue_is_created_by_the_operation_that_needs_it(
    settings: Settings,
) -> None:
    from proactive.receiving.endpoint import handle_activity

    rt = await Runtime.create(settings)
    try:
        # Reads of missing tables find nothing (and create them).
        assert [row async for row in rt.schedules_table.list_entities()] == []
        assert await rt.references.user(USER_AAD) is None
        # An install writes the activity, the reference and queues a welcome:
        # each table and the queue come into being on the way.
        reply = await handle_activity(rt, {}, json.dumps(install(service_url=LOOPBACK)).encode())
        assert reply.status == 200
        ref = await rt.references.user(USER_AAD)
        assert ref is not None and ref.service_url == LOOPBACK
        messages = await rt.outbox.queue.peek_messages(max_messages=5)
        assert len(messages) == 1  # the welcome
        await rt.outbox.poison("{}", reason="test", detail="-")
        tables, queues = await existing(settings)
        assert queues == set(storage_names(settings).queues)
        assert {settings.table_name(t) for t in ("activities", "references", "schedules")} <= tables
    finally:
        await rt.close()


async def test_the_tools_create_exactly_what_the_runtime_uses(settings: Settings) -> None:
    from proactive.storage.autocreate import unwrap

    await provision(settings)
    names = storage_names(settings)
    assert await existing(settings) == (set(names.tables), set(names.queues))
    rt = await Runtime.create(settings)
    try:
        used = {unwrap(t).table_name for t in (
            rt.references.table, rt.deliveries.table, rt.tenant_pacer.table,
            rt.campaigns.table, rt.activities_table, rt.schedules_table,
            rt.preferences.table)}
        assert used == set(names.tables)
        assert {unwrap(q).queue_name for q in (rt.outbox.queue, rt.outbox.poison_queue)} == \
            set(names.queues)
    finally:
        await rt.close()
