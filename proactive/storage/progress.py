"""Sends to many recipients under one key: progress and cancellation.

Table `sends`, partition = the key. Row `summary` holds the state
(running / cancelled) and when; the counters (queued, sent, failed, skipped
and one count per reason), each recipient and each person counted once, are
in shard rows beside it (storage/shards.py). Progress is the summary with the
sum of the shards, readable at any time.

A paged audience (a team's roster, a group) is split a page at a time: a page
with a next page counts `pages` +1 in the same transaction as its users, and
the next page's split counts it -1, so `pages` is 0 only once every page is
split. An audience that can't be read at all ends the send `failed` with its
reason (`refuse`). A listed audience (a list, a tenant's users) is split in
one run; each count of its queued people writes a `resume-*` row in the same
transaction saying how far the split got, so a split run again after a
failure goes on from there instead of queuing its first users again.

A send reaches a final state by itself: once its audience is split (a
`split-*` row, no page pending) and every queued recipient is counted (sent +
failed + skipped == queued), the summary turns `done` (`failed` when an
audience was refused; a cancelled send stays `cancelled`) with `finishedAt`,
`durationSeconds` and the totals. `settle` checks that after
each part is counted, and every progress read does it too, so a worker dying
between its count and its check leaves the flip to the next reader. The flip
is an ETag-conditional replace of the summary: exactly one writer makes it.

The summary leaves as a `CampaignRow` (storage/campaign_rows.py); `cancel` and
`refuse` stay merges of a few properties, shards and markers stay entities.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from proactive.storage import tables
from proactive.storage.campaign_rows import SUMMARY, CampaignProgress, CampaignRow
from proactive.storage.counting import (  # noqa: F401 - part of this module's API
    AMBIGUOUS,
    SKIP_REASONS,
    reason_count,
    result_counts,
)
from proactive.storage.send_index import SendIndexRow, SendState
from proactive.storage.shards import MARKER, Shards

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient

# A campaign's `state` is a SendState (storage/send_index.py); FAILED: an
# audience could not be read (`refuse`), its reason in `reason`.
# Counters of recipients with a result (an `install` op counts its own two).
FINISHED = ("sent", "failed", "skipped", "installed", "already_installed", "unknown")


class Campaigns:
    def __init__(self, table: TableClient) -> None:
        self.table = table
        self.shards = Shards(table)

    async def start(self, key: str, *, expected: bool = False,
                    listed: SendIndexRow | None = None) -> tuple[CampaignRow, bool]:
        """The summary row, created if this is the key's first broadcast, and
        whether this call created it. `expected`: it almost surely exists (a
        part of a split send), so it is read first: one request instead of a
        refused insert and a read. `listed`: what the send index shows of it,
        written once, by the call that created the summary."""
        pk = tables.safe_key(key)
        if expected:
            found = await tables.read(self.table, pk, SUMMARY)
            if found:
                return CampaignRow.from_entity(found[0]), False
        created = tables.iso()
        index = replace(listed or SendIndexRow(key=key, created_at=created), key=key,
                        created_at=created)
        summary = CampaignRow(key=key, state=SendState.RUNNING, created_at=created,
                              index_row=index.row_key)
        try:
            await tables.create(self.table, summary.to_entity())
        except tables.Conflict:
            # A redelivered split, or more recipients under the same key.
            found = await tables.read(self.table, pk, SUMMARY)
            return (CampaignRow.from_entity(found[0]) if found else summary), False
        # After the summary: a crash between the two leaves a send unlisted
        # (still readable by key), never a listed key without a send.
        await tables.merge(self.table, index.to_entity())
        return summary, True

    async def _list_state(self, summary: CampaignRow, state: SendState) -> None:
        """Copy a final state to the send's index row (if it has one)."""
        if summary.index_row:
            await tables.merge(self.table, {"PartitionKey": SendIndexRow.partition(),
                                            "RowKey": summary.index_row,
                                            "state": str(state)})

    async def was_split(self, key: str, audience: str) -> bool:
        found = await tables.read(self.table, tables.safe_key(key), f"split-{audience}")
        return found is not None

    async def resumes_after(self, key: str, audience: str) -> str:
        """Where a split of `audience` that stopped part-way goes on: after
        the position its last count recorded ("" : from the start)."""
        found = await tables.read(self.table, tables.safe_key(key), f"resume-{audience}")
        return str(found[0].get("after") or "") if found else ""

    async def mark_split(self, key: str, audience: str) -> None:
        """After every part is queued: a crash before this re-splits (each user
        is still delivered once), one after it does not."""
        await tables.merge(self.table, {"PartitionKey": tables.safe_key(key),
                                        "RowKey": f"split-{audience}", "at": tables.iso()})

    async def refuse(self, key: str, reason: str, detail: str) -> None:
        """An audience of the send could not be read: it ends `failed` with why
        (once every other part has finished)."""
        await tables.merge(self.table, {"PartitionKey": tables.safe_key(key),
                                        "RowKey": SUMMARY, "reason": reason,
                                        "detail": detail[:1000]})

    async def reopen(self, key: str, *, again: str = "") -> None:
        """A new audience under a key that had finished (another message of
        the same send, arriving after the first was done): running again.
        `again`: a failure reason (storage/shards.py RECOUNTED) whose recipients are tried again:
        until they have a new result (or the reason is met again, `refuse`)
        they don't count as finished."""
        pk = tables.safe_key(key)
        found = await tables.read(self.table, pk, SUMMARY)
        if found is None:
            return
        summary = CampaignRow.from_entity(found[0])
        if summary.state == SendState.CANCELLED:
            return
        # Finished, or refused by Graph (sent again once it is granted).
        reopened = replace(summary, state=SendState.RUNNING, finished_at=None,
                           duration_seconds=None, reason=None, detail=None, totals={},
                           again=again or summary.again)
        # Changed meanwhile (cancelled, or reopened by another copy): left as it is.
        with contextlib.suppress(tables.Conflict):
            await tables.replace_if(self.table, reopened.to_entity(), found[1])

    async def cancel(self, key: str) -> bool:
        """Mark the send cancelled; False if there is no such send."""
        pk = tables.safe_key(key)
        found = await tables.read(self.table, pk, SUMMARY)
        if found is None:
            return False
        await tables.merge(self.table, {"PartitionKey": pk, "RowKey": SUMMARY,
                                        "state": SendState.CANCELLED,
                                        "cancelledAt": tables.iso()})
        await self._list_state(CampaignRow.from_entity(found[0]), SendState.CANCELLED)
        return True

    async def cancelled(self, key: str) -> bool:
        found = await tables.read(self.table, tables.safe_key(key), SUMMARY)
        return found is not None and \
            CampaignRow.from_entity(found[0]).state == SendState.CANCELLED

    async def count(self, key: str, results: Mapping[str, Counter[str]],
                    people: Mapping[str, str] | None = None, *,
                    resume: tuple[str, str] | None = None) -> None:
        """Add to the key's counters, each entry once (storage/shards.py).
        `resume`: (audience, position): in the same transaction, a split of
        that audience run again goes on after `position` (`resumes_after`)."""
        also = [] if resume is None else [{"PartitionKey": tables.safe_key(key),
                                           "RowKey": f"resume-{resume[0]}",
                                           "after": resume[1]}]
        await self.shards.count(key, results, people, also)

    async def progress(self, key: str) -> CampaignProgress | None:
        """The summary with the summed counters; settled first if it can be."""
        read = await self._read(key)
        if read is None:
            return None
        summary, etag, totals, split = read
        if split and not summary.finished_at and _settled(totals, summary):
            summary = await self._finish(summary, etag, totals) or summary
        totals.pop("pages", None)
        return CampaignProgress(summary, dict(totals))

    async def settle(self, key: str) -> bool:
        """Turn the send final if every recipient is counted; True if this
        call did it."""
        read = await self._read(key)
        if read is None:
            return False
        summary, etag, totals, split = read
        if not split or summary.finished_at or not _settled(totals, summary):
            return False
        return await self._finish(summary, etag, totals) is not None

    async def _read(self, key: str) -> tuple[CampaignRow, str, Counter[str], bool] | None:
        summary: tuple[CampaignRow, str] | None = None
        totals: Counter[str] = Counter()
        split = False
        async for entity in self.table.query_entities(
                "PartitionKey eq @pk and RowKey lt @marker",
                parameters={"pk": tables.safe_key(key), "marker": MARKER}):
            row = dict(entity)
            if row["RowKey"] == SUMMARY:
                summary = CampaignRow.from_entity(row), str(entity.metadata["etag"])
            elif row["RowKey"].startswith("shard-"):
                totals.update({k: int(v) for k, v in row.items()
                               if k not in ("PartitionKey", "RowKey")})
            elif row["RowKey"].startswith("split-"):
                split = True
        if summary is None:
            return None
        return summary[0], summary[1], totals, split

    async def finish_empty(self, key: str, reason: str, detail: str) -> bool:
        """A send whose audience held nobody: `done` at once, with why (the
        counters never reach a queued count, so it would stay running)."""
        read = await self._read(key)
        if read is None:
            return False
        summary, etag, totals, _ = read
        if summary.finished_at or totals.get("queued", 0):
            return False
        # `done`, not `failed`: nothing went wrong, there was nobody to send to.
        return await self._finish(replace(summary, state=SendState.DONE, reason=reason,
                                          detail=detail), etag, totals) is not None

    async def _finish(self, summary: CampaignRow, etag: str,
                      totals: Counter[str]) -> CampaignRow | None:
        from datetime import datetime

        now = tables.now_utc()
        try:
            started = datetime.fromisoformat(str(summary.created_at or ""))
            duration = round((now - started).total_seconds(), 3)
        except ValueError:
            duration = 0.0
        state = summary.state
        if state == SendState.RUNNING:
            state = SendState.FAILED if summary.reason else SendState.DONE
        final = replace(summary, state=state, finished_at=tables.iso(now),
                        duration_seconds=duration, totals={
                            **summary.totals,
                            **{name: totals.get(name, 0)
                               for name in ("queued", "sent", "failed", "skipped")},
                            **{name: totals[name] for name in (*FINISHED, AMBIGUOUS)
                               if totals.get(name)}})
        try:
            await tables.replace_if(self.table, final.to_entity(), etag)
        except tables.Conflict:
            return None  # another writer changed it first (finished it, or cancelled)
        if final.state is not None:
            await self._list_state(final, final.state)
        return final


def _settled(totals: Counter[str], summary: CampaignRow) -> bool:
    """Every page split and every queued person counted (none: an empty
    audience is done too). Recipients being tried again (`again`) are not
    finished until they have a new result or the send is refused again."""
    if totals.get("pages", 0) > 0:
        return False
    finished = sum(totals.get(name, 0) for name in FINISHED)
    again = summary.again or ""
    if again and not summary.reason:
        finished -= totals.get(f"failed_{again.replace('-', '_')}", 0)
    return finished >= totals.get("queued", 0)
