"""The per-tenant index of users (storage/user_index.py): `allUsers` reads one
partition instead of scanning the table, the index says what the user rows
say through install, uninstall, block and a moved serviceUrl, rows from
before the index are copied in once, and a part reads its users' references
in one query. Real Table Storage (Azurite)."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from azure.data.tables.aio import TableClient

from proactive.config import Settings
from proactive.receiving.activities import parse_activity
from proactive.storage import tables, user_index
from proactive.storage.reference_keys import InstallState
from proactive.storage.references import ReferenceStore
from tests.activities_data import TENANT, install, uninstall


def aad(i: int) -> str:
    return f"00000000-0000-4000-8000-{i:012d}"


class Counting:
    """The table client, keeping the reads a store makes through it."""

    def __init__(self, table: Any) -> None:
        self.table, self.calls, self.filters = table, Counter[str](), list[str]()

    def get_entity(self, *args: Any, **kw: Any) -> Any:
        self.calls["get_entity"] += 1
        return self.table.get_entity(*args, **kw)

    def query_entities(self, query_filter: str, **kw: Any) -> Any:
        self.calls["query_entities"] += 1
        self.filters.append(query_filter)
        return self.table.query_entities(query_filter, **kw)

    def __getattr__(self, name: str) -> Any:
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


async def install_users(store: ReferenceStore, count: int) -> list[str]:
    users = [aad(i) for i in range(count)]
    for i, user in enumerate(users):
        await store.record(parse_activity(install(aad=user, conversation=f"a:conv-{i}")))
    return users


async def index_row(table: Counting, user: str) -> dict[str, Any] | None:
    found = await tables.read(table.client, user_index.index_pk(TENANT), user_index.index_rk(user))
    return found[0] if found else None


async def test_the_index_follows_install_uninstall_block_and_a_moved_host(
        table: Counting) -> None:
    store = ReferenceStore(table.client)
    [user] = await install_users(store, 1)
    row = await index_row(table, user)
    assert row is not None and row["installState"] == InstallState.INSTALLED
    assert row["conversationId"] == "a:conv-0"
    await store.record(parse_activity(uninstall(aad=user, conversation="a:conv-0")))
    assert (await index_row(table, user) or {})["installState"] == InstallState.UNINSTALLED
    await store.record(parse_activity(install(aad=user, conversation="a:conv-0")))
    ref = await store.user(user, TENANT)
    assert ref is not None
    await store.mark(ref, InstallState.BLOCKED, aad_id=user)
    assert (await index_row(table, user) or {})["installState"] == InstallState.BLOCKED
    await store.move_service_url(ref, "https://smba.example/moved/", aad_id=user)
    assert (await index_row(table, user) or {})["serviceUrl"] == "https://smba.example/moved/"


async def test_all_users_reads_the_tenant_index_not_the_whole_table(table: Counting) -> None:
    store = ReferenceStore(table.client)
    users = await install_users(store, 5)
    await store.record(parse_activity(uninstall(aad=users[2], conversation="a:conv-2")))
    # Rows from before the index: the first listing copies them over (as the
    # rows of a deployment that predates it), later ones read the index alone.
    # A tenant first seen now is indexed from its first user: one query.
    table.filters.clear()
    assert [u async for u in store.users_of_tenant(TENANT)] == users
    assert table.filters == ["PartitionKey eq @pk"]
    for user in users[:3]:
        await table.delete_entity(user_index.index_pk(TENANT), user_index.index_rk(user))
    await table.delete_entity(user_index.index_pk(TENANT), user_index.MARKER)
    assert sorted([u async for u in store.users_of_tenant(TENANT)]) == users
    assert await index_row(table, users[0]) is not None
    table.filters.clear()
    assert [u async for u in store.users_of_tenant(TENANT)] == users  # in index order
    assert table.filters == ["PartitionKey eq @pk"]  # one partition: no scan
    # A user who uninstalled is listed (their delivery is recorded skipped).
    assert (await index_row(table, users[2]) or {})["installState"] == InstallState.UNINSTALLED


async def test_a_part_reads_its_references_in_one_query(table: Counting) -> None:
    users = await install_users(ReferenceStore(table.client), 10)
    await ReferenceStore(table.client).record(parse_activity(
        uninstall(aad=users[4], conversation="a:conv-4")))
    fresh = ReferenceStore(table.client)  # another instance: nothing kept from the split
    table.calls.clear()
    async with fresh.part(TENANT, users):
        refs = [await fresh.user(user, TENANT) for user in users]
    assert table.calls == {"query_entities": 1, "get_entity": 1}  # the uninstalled one
    assert [r.conversation_id for r in refs if r] == [f"a:conv-{i}" for i in range(10)]
    assert refs[4] is not None and refs[4].state == InstallState.UNINSTALLED
    # Held for the part only.
    table.calls.clear()
    await fresh.user(users[0], TENANT)
    assert table.calls == {"get_entity": 1}
    # A hand-made list, not in index order: no range query, each read as before.
    table.calls.clear()
    async with fresh.part(TENANT, users[::-1][:3]):
        pass
    assert table.calls == {}
