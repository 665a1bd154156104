"""Sends to many recipients under one key: progress and cancellation.

Table `sends`, partition = the key. Row `summary` holds the state
(running / cancelled) and when; rows `shard-0` .. `shard-7` hold counters
(queued, sent, failed, skipped and one count per reason). A result adds to a
random shard with an ETag-conditional write, O(1) whatever the audience size,
and spreading writers over eight rows keeps them from queueing on one; a
process's next count goes to the shard it wrote last, with that write's ETag
and no read (only a conflict makes it read one). Progress is the sum of the
shards, readable at any time.

Each recipient's result is counted once: with the shard write goes, in the
same entity-group transaction, a marker row `~<recipient>` that must not exist
yet. So a part redelivered after its worker died (whose recipients now find
their delivery rows final) can count what the dead worker never did, and
nothing is counted twice. Markers sort after the counter rows, so reading
progress never scans them.

People are counted once, queued and finished alike: `queued` adds one per
person named (an entry `queued:<name>`, its marker refusing a second listing
by another message or in another case), and a result names who it is for.
A user listed by principal name and by object id is one person under two
names: the result counted first claims the person (`people`: a marker for the
person as well as the name), and the other name's result takes its `queued`
back instead of counting a second result.

A paged audience (a team's roster, a group) is split a page at a time: a page
with a next page counts `pages` +1 in the same transaction as its users, and
the next page's split counts it -1, so `pages` is 0 only once every page is
split. An audience that can't be read at all ends the send `failed` with its
reason (`refuse`).

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
import json
import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from proactive.storage import tables
from proactive.storage.campaign_rows import SUMMARY, CampaignProgress, CampaignRow
from proactive.storage.counting import (  # noqa: F401 - part of this module's API
    AMBIGUOUS,
    SKIP_REASONS,
    reason_count,
    result_counts,
)
from proactive.storage.send_index import SendIndexRow, SendState

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient

SHARDS = 8
# Entries counted in one entity-group transaction: at most 100 operations, a
# marker per entry and the shard.
PER_TRANSACTION = 99
# Keys whose last-written shard a process remembers (then it forgets them all).
REMEMBERED_KEYS = 1024
# A campaign's `state` is a SendState (storage/send_index.py); FAILED: an
# audience could not be read (`refuse`), its reason in `reason`.
# Row keys of the per-recipient markers start with this; it sorts after
# "shard-*", "split-*" and "summary", so `RowKey lt MARKER` skips the markers.
MARKER = "~"
# Failures a re-send of the key tries again (their recipient is counted again,
# the difference): Graph refused the app itself, until an admin grants it.
RECOUNTED = ("graph_permission",)
# Counters of recipients with a result (an `install` op counts its own two).
FINISHED = ("sent", "failed", "skipped", "installed", "already_installed", "unknown")


class Campaigns:
    def __init__(self, table: TableClient) -> None:
        self.table = table
        # Per key, the shard this process last wrote and its ETag: the next
        # count writes it back optimistically, without reading it first (as
        # the tenant pacer does its budget row); a conflict means another
        # process wrote that shard meanwhile, and only then is one read.
        self._shard_written: dict[str, tuple[dict[str, Any], str]] = {}

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
        `again`: a failure reason (RECOUNTED) whose recipients are tried again:
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
                    people: Mapping[str, str] | None = None) -> None:
        """Add to the counters, each entry (a recipient's result, a queued
        person) once however often it is reported: one transaction writes a
        shard and a marker per entry, in transactions of at most
        PER_TRANSACTION markers, in order. `people`: the person an entry's
        result is for when it differs from the entry's name (a principal name
        resolved to its object id): counted once per person."""
        people = dict(people or {})
        batch: dict[str, Counter[str]] = {}
        size = 0
        claimed: set[str] = set()  # people this call counts (a marker appears once per batch)
        for who, counts in results.items():
            person = people.get(who, who)
            if person in claimed:  # one person under two names in this call
                people.pop(who, None)
                who, counts = (who if person != who else f"dup:{who}"), Counter(queued=-1)
            claimed.add(person)
            width = 2 if people.get(who, who) != who else 1
            if size + width > PER_TRANSACTION:
                await self._count(key, batch, people)
                batch, size = {}, 0
            batch[who] = counts
            size += width
        if batch:
            await self._count(key, batch, people)

    async def _count(self, key: str, results: Mapping[str, Counter[str]],
                     people: Mapping[str, str]) -> None:
        pk, pending, recheck = tables.safe_key(key), dict(results), False
        aliases = {who: person for who, person in people.items()
                   if who in pending and person != who}
        replacing: dict[str, str] = {}  # entry -> its marker's ETag (counted again)
        async for attempt in tables.attempts(20):
            if recheck:  # a marker existed (or the answer did not say which row failed)
                pending, aliases, replacing = await self._uncounted(pk, pending, aliases,
                                                                    results)
            if not pending:
                return
            written = self._shard_written.pop(pk, None) if attempt == 0 else None
            row, etag = written or await self._any_shard(pk)
            row = dict(row)
            for counts in pending.values():
                for name, n in counts.items():
                    row[name] = int(row.get(name, 0)) + n
            ops: list[Any] = []
            for who, counts in pending.items():
                for marked in (who, aliases.get(who)):
                    if not marked:
                        continue
                    marker = {"PartitionKey": pk, "RowKey": _marker(marked),
                              "counts": json.dumps(results.get(who, counts)), "by": who,
                              "countedAt": tables.iso()}
                    ops.append(("update", marker, tables.if_match(replacing[who]))
                               if who in replacing else ("create", marker))
            ops.append(("update", row, tables.if_match(etag)) if etag else ("create", row))
            try:
                answers = await tables.submit(self.table, ops)
            except tables.Conflict as exc:
                # The shard is the last operation: only it failing means the
                # markers are still free.
                recheck = exc.index != len(ops) - 1
                continue
            if len(self._shard_written) >= REMEMBERED_KEYS:
                self._shard_written.clear()
            self._shard_written[pk] = row, str(answers[-1].get("etag") or "")
            return
        raise tables.Conflict(detail=f"counters of {key} kept changing")

    async def _uncounted(self, pk: str, pending: dict[str, Counter[str]],
                         aliases: dict[str, str], results: Mapping[str, Counter[str]]
                         ) -> tuple[dict[str, Counter[str]], dict[str, str], dict[str, str]]:
        """What is still to count once a marker was found taken: an entry
        counted already is dropped; one whose person another name counted
        first gives its `queued` back instead (once, under a marker of its own);
        one counted as failed for a reason a re-send retries (RECOUNTED) and now
        with another result is counted again: the difference, its marker
        replaced (the third map: entry -> the marker's ETag)."""
        left: dict[str, Counter[str]] = {}
        kept: dict[str, str] = {}
        replacing: dict[str, str] = {}
        for who, counts in pending.items():
            found = await tables.read(self.table, pk, _marker(who))
            person = aliases.get(who)
            if found is not None and who in results:
                before = Counter(json.loads(str(found[0].get("counts") or "{}")))
                after = results[who]
                if any(before.get(f"failed_{r}") for r in RECOUNTED) and before != after:
                    delta = Counter({k: after.get(k, 0) - before.get(k, 0)
                                     for k in set(before) | set(after)})
                    left[who] = Counter({k: n for k, n in delta.items() if n})
                    replacing[who] = found[1]
                    continue
            if found is not None:
                by = found[0].get("by")
                if by and by != who and not who.startswith("dup:") and person is None:
                    # This name's person was counted under another name (a
                    # principal name of the same user): one person, queued once.
                    left[f"dup:{who}"] = Counter(queued=-1)
                continue
            if person and await tables.read(self.table, pk, _marker(person)) is not None:
                left[who] = Counter(queued=-1)
                continue
            left[who] = counts
            if person:
                kept[who] = person
        return left, kept, replacing

    async def _any_shard(self, pk: str) -> tuple[dict[str, Any], str]:
        rk = f"shard-{random.randrange(SHARDS)}"
        found = await tables.read(self.table, pk, rk)
        return found if found else ({"PartitionKey": pk, "RowKey": rk}, "")

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


def _marker(recipient: str) -> str:
    return MARKER + tables.safe_key(recipient)
