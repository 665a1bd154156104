"""A many-user send's counters: each entry counted once, without a hot row.

Table `sends`, partition = the key (beside the summary, storage/progress.py):
rows `shard-0` .. `shard-7` hold counters (queued, sent, failed, skipped and
one count per reason). A count adds to one shard with an ETag-conditional
write, O(1) whatever the audience size, and spreading writers over eight rows
keeps them from queueing on one. A process writes a shard it wrote before
back with that write's ETag and no read (only a conflict makes it read one);
counts running at once in one process (the parts of a send) each take a
different shard, so they never conflict with each other. Progress is the sum
of the shards, readable at any time.

Each entry is counted once: with the shard write goes, in the same
entity-group transaction, a marker row `~<entry>` that must not exist yet. So
a part redelivered after its worker died (whose recipients now find their
delivery rows final) can count what the dead worker never did, and nothing is
counted twice. Markers sort after the counter rows, so reading progress never
scans them.

People are counted once, queued and finished alike: `queued` adds one per
person named (an entry `queued:<name>`, its marker refusing a second listing
by another message or in another case), and a result names who it is for.
A user listed by principal name and by object id is one person under two
names: the result counted first claims the person (`people`: a marker for the
person as well as the name), and the other name's result takes its `queued`
back instead of counting a second result.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from proactive.errors import StorageUnavailable
from proactive.storage import tables

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient

SHARDS = 8
# Entries counted in one entity-group transaction: at most 100 operations, a
# marker per entry and the shard.
PER_TRANSACTION = 99
# Transactions of one count whose answer may be lost (then it fails).
LOST_ANSWERS = 3
# Keys whose written shards a process remembers (then it forgets them all).
REMEMBERED_KEYS = 1024
# Row keys of the per-entry markers start with this; it sorts after
# "shard-*", "split-*" and "summary", so `RowKey lt MARKER` skips the markers.
MARKER = "~"
# Failures a re-send of the key tries again (their recipient is counted again,
# the difference): Graph refused the app itself, until an admin grants it.
RECOUNTED = ("graph_permission",)


class Shards:
    def __init__(self, table: TableClient) -> None:
        self.table = table
        # Per key, the shards this process wrote, with their ETags, free to take.
        self._written: dict[str, dict[str, tuple[dict[str, Any], str]]] = {}
        # Per key, the shards a count of this process is writing now.
        self._writing: dict[str, set[str]] = {}

    async def count(self, key: str, results: Mapping[str, Counter[str]],
                    people: Mapping[str, str] | None = None,
                    also: Sequence[dict[str, Any]] = ()) -> None:
        """Add to the counters, each entry (a recipient's result, a queued
        person) once however often it is reported: one transaction writes a
        shard and a marker per entry, in transactions of at most
        PER_TRANSACTION operations, in order. `people`: the person an entry's
        result is for when it differs from the entry's name (a principal name
        resolved to its object id): counted once per person. `also`: rows of
        the key's partition written (replaced) with the last of them, so they
        say what the count says (a split's checkpoint)."""
        people = dict(people or {})
        room = PER_TRANSACTION - len(also)
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
            if size + width > room:
                await self._count(key, batch, people)
                batch, size = {}, 0
            batch[who] = counts
            size += width
        if batch or also:
            await self._count(key, batch, people, also)

    async def _count(self, key: str, results: Mapping[str, Counter[str]],
                     people: Mapping[str, str], also: Sequence[dict[str, Any]] = ()) -> None:
        pk, pending, recheck, lost = tables.safe_key(key), dict(results), False, 0
        aliases = {who: person for who, person in people.items()
                   if who in pending and person != who}
        replacing: dict[str, str] = {}  # entry -> its marker's ETag (counted again)
        shard: tuple[dict[str, Any], str] | None = None  # the shard in hand, as read
        try:
            async for _ in tables.attempts(20):
                if recheck:  # a marker existed (or the answer did not say which row failed)
                    pending, aliases, replacing = await self._uncounted(pk, pending, aliases,
                                                                        results)
                if not pending:  # all counted before: the rows alone
                    if also:
                        await tables.submit(self.table, _upserts(also))
                    return
                shard = shard or await self._take_shard(pk)
                row, etag = dict(shard[0]), shard[1]
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
                ops.extend(_upserts(also))
                ops.append(("update", row, tables.if_match(etag)) if etag else ("create", row))
                try:
                    answers = await tables.submit(self.table, ops)
                except tables.Conflict as exc:
                    # The shard is the last operation: only it failing means the
                    # markers are still free, and the shard must be read again.
                    recheck = exc.index != len(ops) - 1
                    if not recheck:
                        self._release(pk, str(row["RowKey"]))
                        shard = None
                    continue
                except StorageUnavailable:
                    # No answer (a connection reset under a busy storage: the
                    # SDK retries no POST): the transaction landed whole or
                    # not at all, and its first marker says which.
                    lost += 1
                    if lost > LOST_ANSWERS:
                        raise
                    if await tables.read(self.table, pk, _marker(next(iter(pending)))) is None:
                        continue  # it did not land: the same transaction again
                    self._release(pk, str(row["RowKey"]))  # it may have: as after a conflict
                    shard, recheck = None, True
                    continue
                if len(self._written) >= REMEMBERED_KEYS:
                    self._written.clear()
                self._written.setdefault(pk, {})[str(row["RowKey"])] = (
                    row, str(answers[-1].get("etag") or ""))
                return
            raise tables.Conflict(detail=f"counters of {key} kept changing")
        finally:
            if shard is not None:
                self._release(pk, str(shard[0]["RowKey"]))

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

    async def _take_shard(self, pk: str) -> tuple[dict[str, Any], str]:
        """A shard of the key no count of this process is writing (until
        `_release`): one this process wrote (no read), else one read at random."""
        writing = self._writing.setdefault(pk, set())
        free = self._written.get(pk, {})
        for rk in list(free):
            if rk not in writing:
                writing.add(rk)
                return free.pop(rk)
        names = [f"shard-{i}" for i in range(SHARDS)]
        rk = random.choice([n for n in names if n not in writing] or names)
        writing.add(rk)
        try:
            found = await tables.read(self.table, pk, rk)
        except BaseException:
            self._release(pk, rk)
            raise
        return found if found else ({"PartitionKey": pk, "RowKey": rk}, "")

    def _release(self, pk: str, rk: str) -> None:
        writing = self._writing.get(pk)
        if writing is not None:
            writing.discard(rk)
            if not writing:
                del self._writing[pk]


def _upserts(rows: Sequence[dict[str, Any]]) -> list[Any]:
    return [("upsert", row, {"mode": "replace"}) for row in rows]


def _marker(entry: str) -> str:
    return MARKER + tables.safe_key(entry)
