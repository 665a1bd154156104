"""A send's summary row as a typed value (storage.campaign_rows.CampaignRow,
issue 20 §2): a summary the store wrote reads back into the model and is
written back with the same properties and values, including one the model
does not know (a row of a later version, or an older one): nothing stored is
lost or renamed. On Azurite, through the Campaigns store the worker uses."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from azure.data.tables.aio import TableClient

from proactive.storage.campaign_rows import CampaignRow
from proactive.storage.progress import Campaigns
from proactive.storage.send_index import SendIndexRow, SendState


@pytest.fixture
def table(fresh_table: TableClient) -> TableClient:
    return fresh_table


async def summary_of(table: TableClient, key: str) -> dict[str, Any]:
    return dict(await table.get_entity(key, "summary"))


async def test_a_stored_summary_reads_and_writes_back_unchanged(table: TableClient) -> None:
    store = Campaigns(table)
    started, new = await store.start("k1", listed=SendIndexRow(key="k1", created_at="",
                                                               topic="news"))
    assert new and started.state == SendState.RUNNING and started.index_row
    assert started.to_entity() == await summary_of(table, "k1")
    # A property this version does not name (written by another one).
    await table.upsert_entity({**await summary_of(table, "k1"), "futureField": "kept"},
                              mode="replace")
    await store.count("k1", {"queued:a": Counter(queued=1), "queued:b": Counter(queued=1)})
    await store.count("k1", {"a": Counter(sent=1), "b": Counter(skipped=1,
                                                                skipped_opted_out=1)})
    await store.mark_split("k1", "all")
    assert await store.settle("k1")  # the final summary: a whole-row write of the model
    before = await summary_of(table, "k1")
    assert before["futureField"] == "kept"

    progress = await store.progress("k1")
    assert progress is not None
    row = progress.summary
    assert (row.key, row.state, row.reason, row.cancelled_at) == ("k1", "done", None, None)
    assert row.totals == {"queued": 2, "sent": 1, "failed": 0, "skipped": 1}
    assert progress.counts == {"queued": 2, "sent": 1, "skipped": 1, "skipped_opted_out": 1}
    assert row.extra["futureField"] == "kept"
    assert row.to_entity() == before  # same names, same values, nothing added
    assert progress.view() == {k: v for k, v in before.items()
                               if k not in ("PartitionKey", "RowKey")} | {
        "counts": progress.counts}

    # Another audience under the key: running again, its final figures gone,
    # the unknown property still there.
    await store.reopen("k1")
    reopened = await summary_of(table, "k1")
    assert reopened == {k: v for k, v in before.items()
                        if k not in ("finishedAt", "durationSeconds")
                        and not k.startswith("total_")} | {"state": "running"}


def test_a_state_this_version_does_not_know_is_kept_as_it_was() -> None:
    entity = {"PartitionKey": "k", "RowKey": "summary", "key": "k", "state": "paused",
              "createdAt": "2026-01-01T00:00:00+00:00"}
    row = CampaignRow.from_entity(entity)
    assert row.state is None and row.extra["state"] == "paused"
    assert row.finished_at is None and row.totals == {}
    assert row.to_entity() == entity
