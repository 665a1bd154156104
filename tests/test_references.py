"""Conversation references in real Table Storage (Azurite)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from proactive.config import Settings
from proactive.receiving.activities import parse_activity
from proactive.storage.reference_keys import InstallState
from proactive.storage.references import ReferenceStore
from tests.activities_data import (
    SERVICE_URL,
    TENANT,
    USER_AAD,
    USER_ID,
    activity,
    install,
    team_install,
    uninstall,
)


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[ReferenceStore]:
    from azure.data.tables.aio import TableServiceClient

    async with TableServiceClient.from_connection_string(settings.storage_connection) as svc:
        table = await svc.create_table(settings.table_name("references"))
        yield ReferenceStore(table)


async def test_personal_install_stores_everything_a_send_needs(store: ReferenceStore) -> None:
    first = await store.record(parse_activity(install(localTimezone="Europe/Berlin")))
    assert first is True
    ref = await store.user(USER_AAD)
    assert ref is not None
    assert ref.conversation_id == "a:1personal-conversation"
    assert ref.service_url == SERVICE_URL  # verbatim, trailing slash and region kept
    assert ref.tenant_id == TENANT
    assert ref.state == InstallState.INSTALLED
    assert ref.timezone == "Europe/Berlin"
    assert ref.user_id == USER_ID
    assert ref.locale == "en-GB"
    # Looked up by tenant too, and by conversation id.
    assert await store.user(USER_AAD.upper(), TENANT) == ref
    conv = await store.conversation("a:1personal-conversation")
    assert conv is not None and conv.state == InstallState.INSTALLED
    assert await store.tenant_service_url(TENANT) == (SERVICE_URL, ref.bot_id)


async def test_the_two_install_events_of_one_install_welcome_once(store: ReferenceStore) -> None:
    events = [install(), activity("conversationUpdate", membersAdded=[{"id": "28:bot"}],
                                  recipient={"id": "28:bot"})]
    results = await asyncio.gather(*(store.record(parse_activity(e)) for e in events * 3))
    assert results.count(True) == 1


async def test_uninstall_keeps_the_row_and_reinstall_welcomes_again(
        store: ReferenceStore) -> None:
    assert await store.record(parse_activity(install()))
    assert not await store.record(parse_activity(uninstall()))
    ref = await store.user(USER_AAD)
    assert ref is not None and ref.state == InstallState.UNINSTALLED
    found = await store._find("user:" + USER_AAD, TENANT)
    assert found is not None and found["uninstalledAt"] and found["firstSeen"]
    assert await store.record(parse_activity(install()))


async def test_every_activity_refreshes_service_url_and_time_zone(store: ReferenceStore) -> None:
    await store.record(parse_activity(install()))
    moved = "https://smba.trafficmanager.net/amer/tenant-xyz/"
    await store.record(parse_activity(activity(
        service_url=moved, entities=[{"type": "clientInfo", "timezone": "America/Chicago"}])))
    ref = await store.user(USER_AAD)
    assert ref is not None
    assert ref.service_url == moved
    assert ref.timezone == "America/Chicago"
    # A later activity without a time zone keeps the known one.
    await store.record(parse_activity(activity()))
    ref = await store.user(USER_AAD)
    assert ref is not None and ref.timezone == "America/Chicago"
    assert await store.tenant_service_url(TENANT) == (SERVICE_URL, ref.bot_id)


async def test_a_message_from_a_blocked_user_clears_the_mark(store: ReferenceStore) -> None:
    await store.record(parse_activity(install()))
    ref = await store.user(USER_AAD)
    assert ref is not None
    await store.mark(ref, InstallState.BLOCKED, aad_id=USER_AAD)
    blocked = await store.user(USER_AAD)
    assert blocked is not None and blocked.state == InstallState.BLOCKED
    await store.record(parse_activity(activity()))
    again = await store.user(USER_AAD)
    assert again is not None and again.state == InstallState.INSTALLED


async def test_group_chat_and_team_scopes(store: ReferenceStore) -> None:
    chat = "19:groupchat@thread.v2"
    welcome = await store.record(parse_activity(activity(
        "conversationUpdate", scope="groupChat", conversation=chat,
        membersAdded=[{"id": "28:11111111-2222-3333-4444-555555555555"}])))
    assert welcome is False  # welcomes are for personal installs
    ref = await store.conversation(chat)
    assert ref is not None and ref.conversation_type == "groupChat"
    assert ref.state == InstallState.INSTALLED

    team = "19:team-general@thread.tacv2"
    await store.record(parse_activity(team_install(team)))
    other = "19:other-channel@thread.tacv2"
    body = activity("message", scope="channel", conversation=f"{other};messageid=17")
    body["channelData"] = {"tenant": {"id": TENANT}, "team": {"id": team},
                           "channel": {"id": other}}
    await store.record(parse_activity(body))
    row = await store.team(team)
    assert row is not None
    assert row.install_state == InstallState.INSTALLED
    assert json.loads(str(row.channel_ids)) == sorted([team, other])
    assert row.team_name == "Ops"
