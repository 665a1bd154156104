"""Reference rows as typed values (storage.reference_rows.ReferenceRow, issue
20 §2): a row the store wrote reads back into the model with the same
properties and values, including one the model does not know (a row of a
later version, or an older one): nothing stored is lost or renamed, and the
store's merges keep it. On Azurite, through the ReferenceStore the worker uses."""

from __future__ import annotations

import json
from typing import Any

import pytest
from azure.data.tables.aio import TableClient

from proactive.receiving.activities import parse_activity
from proactive.storage.reference_keys import InstallState, team_pk, user_pk
from proactive.storage.reference_rows import ReferenceRow
from proactive.storage.references import ReferenceStore
from proactive.storage.tables import safe_key
from tests.activities_data import SERVICE_URL, TENANT, USER_AAD, install, team_install

TEAM = "19:team-general@thread.tacv2"


@pytest.fixture
def table(fresh_table: TableClient) -> TableClient:
    return fresh_table


async def stored(table: TableClient, pk: str) -> dict[str, Any]:
    return dict(await table.get_entity(pk, safe_key(TENANT)))


async def test_a_stored_team_row_reads_back_unchanged_and_its_merges_keep_it(
        table: TableClient) -> None:
    store = ReferenceStore(table, cache_seconds=0)
    await store.record(parse_activity(team_install(TEAM)))
    # A property this version does not name (written by another one).
    await table.upsert_entity({**await stored(table, team_pk(TEAM)), "futureField": "kept"},
                              mode="replace")
    before = await stored(table, team_pk(TEAM))

    row = await store.team(TEAM)
    assert row is not None
    assert (row.kind, row.team_id, row.team_name, row.aad_group_id) == (
        "team", TEAM, "Ops", "g-1")
    assert (row.install_state, row.tenant_id, row.service_url) == (
        InstallState.INSTALLED, TENANT, SERVICE_URL)
    assert json.loads(str(row.channel_ids)) == [TEAM]
    assert row.state_at == row.installed_at is not None
    assert row.extra["futureField"] == "kept"
    assert row.to_entity() == before  # same names, same values, nothing added
    assert row.reference(conversation_id=f"{TEAM};messageid=1").conversation_id == \
        f"{TEAM};messageid=1"

    # The next activity merges what it taught; the unknown property stays.
    await store.record(parse_activity(team_install(TEAM)))
    again = await store.team(TEAM)
    assert again is not None and again.extra["futureField"] == "kept"


async def test_a_user_row_marked_unreachable_reads_with_when(table: TableClient) -> None:
    store = ReferenceStore(table, cache_seconds=0)
    await store.record(parse_activity(install()))
    ref = await store.user(USER_AAD)
    assert ref is not None
    await store.mark(ref, InstallState.BLOCKED, aad_id=USER_AAD)
    entity = await stored(table, user_pk(USER_AAD))
    row = ReferenceRow.from_entity(entity)
    assert (row.kind, row.aad_id, row.install_state) == ("user", USER_AAD, "blocked")
    assert row.state_at == row.blocked_at == entity["blockedAt"]
    assert row.reference() == ref.__class__.from_entity(entity)
    assert row.to_entity() == entity


def test_an_absent_property_stays_absent() -> None:
    entity = {"PartitionKey": "tenant:t", "RowKey": "t", "tenantId": "t",
              "serviceUrl": "https://smba.example/", "botId": "28:b", "lastSeen": "now"}
    row = ReferenceRow.from_entity(entity)
    assert row.kind is None and row.install_state is None and row.extra == {}
    assert row.to_entity() == entity
