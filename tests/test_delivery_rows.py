"""Delivery rows as typed values (storage.delivery_rows.DeliveryRow, issue
20 §2): a row the store wrote reads back into the model and is written back
with the same properties and values, including one the model does not know
(a row of a later version, or an older one): nothing stored is lost or
renamed. On Azurite, through the DeliveryStore the worker uses."""

from __future__ import annotations

from typing import Any

import pytest
from azure.data.tables.aio import TableClient

from proactive.storage.deliveries import SENT, Claim, DeliveryStore
from proactive.storage.delivery_rows import DeliveryRow


@pytest.fixture
def table(fresh_table: TableClient) -> TableClient:
    return fresh_table


async def stored(table: TableClient) -> dict[str, Any]:
    [entity] = [dict(e) async for e in table.list_entities()]
    return entity


async def test_a_stored_row_reads_and_writes_back_unchanged(table: TableClient) -> None:
    store = DeliveryStore(table)
    claim = await store.claim("k/1", "user:a")
    assert isinstance(claim, Claim)
    await store.finish(claim, SENT, activityId="1:a", conversationId="a:1",
                       serviceUrl="https://smba.example/", tenantId="t", ackLabel="Got it",
                       lastStatus=201)
    # A property this version does not name (written by another one).
    await table.upsert_entity({**await stored(table), "futureField": "kept"}, mode="replace")
    before = await stored(table)

    [(row, etag)] = await store.by_key("k/1")
    assert (row.key, row.recipient, row.state, row.attempts) == ("k/1", "user:a", "sent", 1)
    assert (row.activity_id, row.ack_label, row.reason) == ("1:a", "Got it", None)
    assert row.extra["futureField"] == "kept" and row.extra["lastStatus"] == 201
    assert row.to_entity() == before  # same names, same values, nothing added

    row.edited("update", "done", "")  # EditState.DONE
    await store.save(row, etag)
    after = await stored(table)
    assert after.pop("updatedAt") >= before.pop("updatedAt")
    assert after == {**before, "updateState": "done", "updateReason": ""}


def test_an_absent_property_stays_absent() -> None:
    entity = {"PartitionKey": "k", "RowKey": "r", "key": "k", "recipient": "r",
              "state": "failed", "reason": "blocked", "attempts": 2}
    row = DeliveryRow.from_entity(entity)
    assert row.sent_at is None and row.activity_id is None
    assert row.to_entity() == entity
