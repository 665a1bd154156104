"""The one read-modify-write helper (storage.tables.update, issue 20 §1): a
write another writer slips in between our read and our write is never lost,
the loop gives up with Conflict after its rounds, and deciding to write
nothing costs no write. On Azurite, through both table clients the stores
use (our REST client and the SDK's)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient, TableServiceClient

from proactive.errors import Conflict
from proactive.storage import tables
from proactive.storage.table_rest import RestTableClient


class Racing:
    """A table client on which another writer adds 1 to `n` just before each
    of our first `races` writes (after our read: our write is then stale)."""

    def __init__(self, table: Any, other: TableClient, races: int) -> None:
        self.table, self.other, self.races = table, other, races
        self.reads = self.writes = 0

    async def get_entity(self, pk: str, rk: str) -> Any:
        self.reads += 1
        return await self.table.get_entity(pk, rk)

    async def _race(self, entity: dict[str, Any]) -> None:
        self.writes += 1
        if self.races:
            self.races -= 1
            found = await tables.read(self.other, entity["PartitionKey"], entity["RowKey"])
            n = int(found[0]["n"]) + 1 if found else 1
            await self.other.upsert_entity({"PartitionKey": entity["PartitionKey"],
                                            "RowKey": entity["RowKey"], "n": n},
                                           mode=UpdateMode.REPLACE)

    async def create_entity(self, entity: dict[str, Any]) -> Any:
        await self._race(entity)
        return await self.table.create_entity(entity)

    async def update_entity(self, entity: dict[str, Any], **kwargs: Any) -> Any:
        await self._race(entity)
        return await self.table.update_entity(entity, **kwargs)


@pytest.fixture(params=["rest", "sdk"])
async def clients(request: pytest.FixtureRequest, azurite: Any
                  ) -> AsyncIterator[tuple[Any, TableClient]]:
    name = f"rmw{uuid.uuid4().hex[:10]}"
    conn = azurite.connection_string
    async with TableServiceClient.from_connection_string(conn) as service:
        sdk = await service.create_table(name)
        rest = RestTableClient.from_connection_string(conn, name)
        try:
            yield (rest if request.param == "rest" else sdk), sdk
        finally:
            await rest.close()
            await sdk.close()


def add_one(entity: dict[str, Any] | None) -> tuple[dict[str, Any], int]:
    n = int(entity["n"]) + 1 if entity else 1
    return {"PartitionKey": "p", "RowKey": "r", "n": n}, n


async def test_a_write_slipped_in_between_is_kept(clients: tuple[Any, TableClient]) -> None:
    table, other = clients
    racing: Any = Racing(table, other, races=2)
    # Absent when read: the other writer creates it first (our create conflicts),
    # then changes it once more before our replace.
    assert await tables.update(racing, "p", "r", add_one) == 3
    found = await tables.read(other, "p", "r")
    assert found is not None and found[0]["n"] == 3  # theirs (1, 2) and ours
    assert (racing.reads, racing.writes) == (3, 3)  # one read, one write per round


async def test_it_gives_up_after_its_rounds(clients: tuple[Any, TableClient]) -> None:
    table, other = clients
    racing: Any = Racing(table, other, races=10)
    with pytest.raises(Conflict, match="the row kept changing"):
        await tables.update(racing, "p", "r", add_one, rounds=4, what="the row")
    assert (racing.reads, racing.writes) == (4, 4)


async def test_nothing_to_write_is_no_write(clients: tuple[Any, TableClient]) -> None:
    table, other = clients
    racing: Any = Racing(table, other, races=0)
    assert await tables.update(racing, "p", "r", lambda entity: (None, "as it is")) \
        == "as it is"
    assert (racing.reads, racing.writes) == (1, 0)
    assert await tables.read(other, "p", "r") is None
