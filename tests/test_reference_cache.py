"""The reference lookups of the hot path (issue 12): a send without a tenant
reads by key once the tenant is known, and reachable references are reused
for a while, never in a way that hides a reinstall or a local change.
Real Table Storage (Azurite)."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from azure.data.tables.aio import TableClient

from proactive.config import Settings
from proactive.receiving.activities import parse_activity
from proactive.storage.reference_keys import InstallState
from proactive.storage.references import ReferenceStore
from tests.activities_data import TENANT, USER_AAD, activity, install, uninstall
from tests.clock import Clock

OTHER_TENANT = "00000000-0000-4000-8000-00000000beef"  # sorts before TENANT
MOVED = "https://smba.trafficmanager.net/amer/"


class Counting:
    """The table client, counting the reads a store makes through it."""

    def __init__(self, table: Any) -> None:
        self.table, self.calls = table, Counter[str]()

    def __getattr__(self, name: str) -> Any:
        if name in ("get_entity", "query_entities"):
            self.calls[name] += 1
        return getattr(self.table, name)

    @property
    def client(self) -> TableClient:
        """This proxy where a store takes its table client (it forwards every call)."""
        return cast("TableClient", self)


@pytest.fixture
async def table(settings: Settings) -> AsyncIterator[Counting]:
    from azure.data.tables.aio import TableServiceClient

    async with TableServiceClient.from_connection_string(settings.storage_connection) as svc:
        yield Counting(await svc.create_table(settings.table_name("references")))


def in_tenant(body: dict[str, Any], tenant: str) -> dict[str, Any]:
    body["conversation"]["tenantId"] = tenant
    body["channelData"] = {"tenant": {"id": tenant}}
    return body


async def test_a_send_without_tenant_reads_by_key_once_the_tenant_is_known(
        table: Counting) -> None:
    store = ReferenceStore(table.client, cache_seconds=0)  # no reuse: every lookup reads
    await store.record(parse_activity(install()))
    table.calls.clear()
    for _ in range(3):
        ref = await store.user(USER_AAD)
        assert ref is not None and ref.tenant_id == TENANT
    assert table.calls == Counter(query_entities=1, get_entity=2)


async def test_a_user_in_two_tenants_is_looked_up_as_before(table: Counting) -> None:
    store = ReferenceStore(table.client, cache_seconds=0)
    await store.record(parse_activity(install()))
    await store.record(parse_activity(in_tenant(install(), OTHER_TENANT)))
    table.calls.clear()
    for _ in range(2):
        ref = await store.user(USER_AAD)
        assert ref is not None and ref.tenant_id == OTHER_TENANT  # the first row, as always
    assert table.calls == Counter(query_entities=2)  # never pinned to one tenant


async def test_a_reachable_reference_is_reused_until_it_expires(table: Counting) -> None:
    clock = Clock()
    here = ReferenceStore(table.client, cache_seconds=60, clock=clock)
    elsewhere = ReferenceStore(table.table)  # another instance
    await elsewhere.record(parse_activity(install()))
    assert (await here.user(USER_AAD, TENANT)).service_url != MOVED  # type: ignore[union-attr]
    await elsewhere.record(parse_activity(activity(service_url=MOVED)))
    table.calls.clear()
    ref = await here.user(USER_AAD, TENANT)
    assert ref is not None and ref.service_url != MOVED and not table.calls
    clock.now += 61
    ref = await here.user(USER_AAD, TENANT)
    assert ref is not None and ref.service_url == MOVED


async def test_a_reinstall_elsewhere_counts_at_once(table: Counting) -> None:
    here = ReferenceStore(table.client, clock=Clock())
    elsewhere = ReferenceStore(table.table)
    await elsewhere.record(parse_activity(install()))
    await elsewhere.record(parse_activity(uninstall()))
    assert (await here.user(USER_AAD)).state != InstallState.INSTALLED  # type: ignore[union-attr]
    await elsewhere.record(parse_activity(install()))
    ref = await here.user(USER_AAD)
    assert ref is not None and ref.state == InstallState.INSTALLED


async def test_what_this_store_writes_is_read_again(table: Counting) -> None:
    store = ReferenceStore(table.client, clock=Clock())
    await store.record(parse_activity(install()))
    ref = await store.user(USER_AAD)
    assert ref is not None and ref.state == InstallState.INSTALLED
    await store.mark(ref, InstallState.BLOCKED, aad_id=USER_AAD)
    again = await store.user(USER_AAD)
    assert again is not None and again.state == InstallState.BLOCKED
    await store.move_service_url(again, MOVED, aad_id=USER_AAD)
    await store.record(parse_activity(activity()))  # unblocks
    moved = await store.user(USER_AAD)
    assert moved is not None and moved.state == InstallState.INSTALLED


async def test_listing_a_tenants_users_spares_reading_each_again(table: Counting) -> None:
    store = ReferenceStore(table.client, clock=Clock())
    users = [f"6f3a8c1e-0000-4000-8000-0000000000{i:02d}" for i in range(5)]
    for aad in users:
        await ReferenceStore(table.table).record(parse_activity(install(aad=aad)))
    assert sorted([u async for u in store.users_of_tenant(TENANT)]) == users
    table.calls.clear()
    for aad in users:
        ref = await store.user(aad, TENANT)
        assert ref is not None and ref.state == InstallState.INSTALLED
    assert not table.calls
