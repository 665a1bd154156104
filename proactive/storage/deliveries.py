"""Delivery records: one row per (key, recipient) in Table Storage.

They are both the status producers read and the guard that makes a send
happen once: a worker must *claim* the row (an insert, or an ETag-conditional
replace) before it calls Teams, and only the claim's holder may complete it.
A redelivered queue message finds the row `sent` and stops; a second worker
holding a copy finds a fresh claim and backs off.

States: sending (claimed, lease running) -> sent | failed | retrying |
cancelled; sent -> deleted. `reason` says why for failed and retrying rows;
`attempts` counts the claims that went on to call Teams.

Storage can be down at any of these steps; none of them may send twice:

- Once Teams has answered, the worker keeps trying to write the outcome
  (backing off, for RECORD_FOR leases: 270 s) and keeps it in this process
  meanwhile: a copy of the message that comes back here writes it instead.
- The claim's lease is short (45 s): its holder starts no Connector call
  after CALL_SHARE of it, so a live holder has Teams' answer before the lease
  ends. The next worker to look at a lapsed claim marks the row (`takeoverAt`)
  and takes it over only once `grace` (20 s) has passed with the mark still
  standing: a live holder held up by a storage outage (shorter than 270 s)
  writes its answer over the mark as soon as storage answers (its retries are
  at most 8 s apart), and only a holder cut off from storage for longer than
  `grace` while others reach it could still cause a second copy.
- Every claim carries a `claimId`. A claim whose write failed (it may or may
  not have landed) or that could not be given back is remembered here as
  unused: this process takes it over without counting an attempt, instead of
  waiting out its lease.

What is left is an attempt whose outcome is unknown: a process that dies
between its claim and the outcome write (the row stays `sending` until the
lease runs out), or a call whose answer was lost (a timeout). The Connector
has no idempotency key, so such a delivery is marked `ambiguous`, the first
unknown attempt kept (`unknownAttempt`, `unknownAttemptAt`, `unknownCause`),
and the send's `onUnknown` decides: `resend` claims it again (at least once),
`skip` records it `unknown` (at most once). An answer that comes after another
worker took the claim over is never dropped: its copy is added to the row's
`otherCopies`, where update and delete by key reach it too (README.md,
"Exactly once, as far as Teams allows").
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from proactive.contract import OnUnknown
from proactive.errors import Busy, Reason, StorageUnavailable
from proactive.storage import tables
from proactive.storage.copies import (  # noqa: F401 - part of this module's API
    UNKNOWN_FIELDS,
    copies,
    late_copy,
    unknown_attempt,
)
from proactive.storage.delivery_rows import DeliveryRow
from proactive.storage.states import DeliveryState

if TYPE_CHECKING:
    from proactive.storage.tables import Table

log = logging.getLogger(__name__)


def _logged(where: tuple[str, str]) -> tuple[str, str]:
    """(key, recipient) as log lines show them: the recipient hashed."""
    from proactive.telemetry import log_id

    return where[0], log_id(where[1])

# The states are defined once, with what becomes of a message.
SENDING, SENT, FAILED, RETRYING, DELETED, CANCELLED, SKIPPED = (
    DeliveryState.SENDING, DeliveryState.SENT, DeliveryState.FAILED, DeliveryState.RETRYING,
    DeliveryState.DELETED, DeliveryState.CANCELLED, DeliveryState.SKIPPED)
UNKNOWN = DeliveryState.UNKNOWN
FINAL = frozenset({SENT, FAILED, DELETED, CANCELLED, SKIPPED, UNKNOWN, DeliveryState.INSTALLED})
# The answers after which Teams may or may not have delivered: the request went
# out and its answer was lost on the way (or the gateway gave up waiting).
UNKNOWN_OUTCOMES = frozenset({Reason.TIMEOUT, Reason.GATEWAY_TIMEOUT})
# Failures a later message of the key tries again: Graph refused the app
# itself (a permission not granted yet), not anything about the recipient.
AGAIN = frozenset({"graph-permission"})

# A claim's holder starts no Connector call after this share of its lease
# (then it gives the claim back): the call (15 s timeout, twice with the
# cloud's fallback host) still ends inside the lease.
CALL_SHARE = 0.25
# How long a holder keeps writing Teams' answer (x the lease); a takeover mark stands.
RECORD_FOR, GRACE = 6, timedelta(seconds=20)
# Seconds between tries of the outcome write: doubling from the first to the last.
PAUSES = (0.25, 8.0)
# A claim held this long (seconds) is waited out, not looked at every second or two.
BUSY_WAIT = 10.0
# Unused claims remembered per process, at most (the oldest are forgotten:
# their rows then wait out their lease, as after a crash).
MAX_UNUSED = 10_000


class Unrecorded(StorageUnavailable):
    """Teams answered, but the outcome could not be written before the claim's
    recording deadline. This process keeps it and writes it when the message
    comes back; the message must therefore come back (a retry, never a
    failure: don't swallow this)."""


@dataclass
class Claim:
    entity: dict[str, Any]
    etag: str
    record_by: datetime  # how long the outcome write may be retried
    call_by: datetime | None = None  # no Connector call may start after this

    @property
    def attempts(self) -> int:
        return int(self.entity.get("attempts", 1))

    @property
    def id(self) -> str:
        return str(self.entity.get("claimId", ""))

    @property
    def where(self) -> tuple[str, str]:
        return str(self.entity["key"]), str(self.entity["recipient"])


class DeliveryStore:
    def __init__(self, table: Table, *, lease: timedelta = timedelta(seconds=45),
                 clock: Callable[[], datetime] = tables.now_utc,
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> None:
        self.table = table
        self.lease = lease
        # The holder's outcome write is retried this long after the claim (270 s).
        self.record_for = lease * RECORD_FOR
        # A takeover mark stands this long first (never longer than the lease,
        # so the short leases of tests and benchmarks stay short).
        self.grace = min(GRACE, lease)
        self.clock = clock
        self.sleep = sleep
        # This process's memory, by (key, recipient): outcomes Teams gave that
        # are not written yet, and ids of claims that never reached Teams but
        # may stand in the row.
        self._unrecorded: dict[tuple[str, str], Claim] = {}
        self._unused: dict[tuple[str, str], set[str]] = {}

    async def claim(self, key: str, recipient: str, *,
                    on_unknown: str = "resend") -> Claim | DeliveryRow:
        """A Claim to go ahead, or the finished row (sent/failed/deleted) to
        report instead. Raises Busy while another worker's claim is live, and
        StorageUnavailable if the claim can't be written (nothing may be sent).
        A claim taken over from a holder that died (its lease ran out) marks
        the row ambiguous; with `on_unknown` "skip" an ambiguous row is
        recorded `unknown` instead of claimed (returned, final)."""
        where = (key, recipient)
        pending = self._unrecorded.get(where)
        if pending is not None:
            # Teams answered an earlier copy in this process: write that answer
            # rather than ask again.
            await self._record(pending)
            if pending.entity["state"] in FINAL:
                return DeliveryRow.from_entity(dict(pending.entity))
        claim_id = uuid.uuid4().hex
        try:
            claim = await self._take(key, recipient, claim_id, on_unknown)
        except StorageUnavailable as exc:
            # It may have landed: ours to take back, uncounted.
            self._remember_unused(where, claim_id)
            raise StorageUnavailable(detail=f"the claim could not be written: "
                                            f"{type(exc).__name__}") from exc
        if isinstance(claim, Claim):
            self._unused.pop(where, None)
            return claim
        return DeliveryRow.from_entity(claim)

    async def _take(self, key: str, recipient: str, claim_id: str,
                    on_unknown: str) -> Claim | dict[str, Any]:
        now = self.clock()
        pk, rk = tables.safe_key(key), tables.safe_key(recipient)
        fresh = {
            "PartitionKey": pk, "RowKey": rk, "key": key, "recipient": recipient,
            "state": SENDING, "attempts": 1, "claimId": claim_id,
            "createdAt": tables.iso(now), "updatedAt": tables.iso(now),
            "leaseUntil": tables.iso(now + self.lease),
        }
        try:
            return self._claimed(fresh, await tables.create(self.table, fresh), now)
        except tables.Conflict:
            pass
        found = await tables.read(self.table, pk, rk)
        if found is None:
            raise Busy  # deleted under us: let the queue bring the message back
        entity, etag = found
        state = entity.get("state")
        if state == SENDING and entity.get("claimId") == claim_id:
            return self._claimed(entity, etag, now)  # our insert landed; its answer was lost
        if state in FINAL and not (state == FAILED and entity.get("reason") in AGAIN):
            return entity
        unused = state == SENDING and entity.get("claimId") in self._unused.get((key, recipient),
                                                                               ())
        if state == SENDING and not unused and entity.get("leaseUntil", "") > tables.iso(now):
            raise Busy(_busy_for(str(entity["leaseUntil"]), now, self.lease))
        if state == SENDING and not unused:
            await self._mark_or_wait(entity, etag, now)
            # Its holder died between claim and record: its call may have gone through.
            entity.update(unknown_attempt(entity, "lease-expired"))
        entity.pop("takeoverAt", None)
        if on_unknown == OnUnknown.SKIP and entity.get("ambiguous"):  # at most once
            entity.update(state=UNKNOWN, reason=Reason.OUTCOME_UNKNOWN, claimId=claim_id,
                          updatedAt=tables.iso(now), leaseUntil="")
            try:
                await tables.replace_if(self.table, entity, etag)
            except tables.Conflict as exc:
                raise Busy from exc  # another worker moved first: the message comes back
            return entity
        entity.update(state=SENDING, claimId=claim_id, updatedAt=tables.iso(now),
                      leaseUntil=tables.iso(now + self.lease),
                      attempts=int(entity.get("attempts", 0)) + (0 if unused else 1))
        try:
            return self._claimed(entity, await tables.replace_if(self.table, entity, etag), now)
        except tables.Conflict as exc:
            again = await tables.read(self.table, pk, rk)  # the client may have retried ours
            if again is not None and again[0].get("claimId") == claim_id \
                    and again[0].get("state") == SENDING:
                return self._claimed(*again, now)
            raise Busy from exc

    async def _mark_or_wait(self, entity: dict[str, Any], etag: str, now: datetime) -> None:
        """A claim whose lease ran out: returns when it may be taken over, or
        raises Busy with how long to wait. It may be once `grace` has passed
        since this or another worker marked it (`takeoverAt`) and the mark
        still stands (a live holder's outcome write replaces the row, mark and
        all), or once the holder's recording window is over too."""
        lapsed = tables.parse_iso(str(entity.get("leaseUntil", "")))
        if lapsed is not None and now >= lapsed + self.record_for:
            return  # its holder has stopped trying to write
        marked = tables.parse_iso(str(entity.get("takeoverAt", "")))
        if marked is not None and now >= marked + self.grace:
            return
        if marked is None:
            try:
                await tables.replace_if(self.table, {**entity, "takeoverAt": tables.iso(now)},
                                        etag)
            except tables.Conflict as exc:
                raise Busy from exc  # the row moved: its holder (or another) wrote
            marked = now
        raise Busy((marked + self.grace - now).total_seconds() + 1)

    def _claimed(self, entity: dict[str, Any], etag: str, now: datetime) -> Claim:
        return Claim(entity, etag, record_by=now + self.record_for,
                     call_by=now + self.lease * CALL_SHARE)

    def too_late_to_call(self, claim: Claim) -> bool:
        """Whether the claim is too old for a Connector call to start on it
        (see CALL_SHARE): give it back instead."""
        return claim.call_by is not None and self.clock() > claim.call_by

    def _remember_unused(self, where: tuple[str, str], claim_id: str) -> None:
        self._unused.setdefault(where, set()).add(claim_id)
        while len(self._unused) > MAX_UNUSED:
            del self._unused[next(iter(self._unused))]

    async def release(self, claim: Claim, **fields: Any) -> None:
        """Give back a claim that never reached Teams (the tenant's budget is
        spent, or storage failed before the call): `retrying`, the attempt
        uncounted. If that can't be written, this process remembers the claim
        as unused and takes it back when the message returns."""
        entity = {**claim.entity, **fields, "state": RETRYING,
                  "attempts": claim.attempts - 1, "updatedAt": tables.iso(self.clock()),
                  "leaseUntil": ""}
        try:
            try:
                claim.etag = await tables.replace_if(self.table, entity, claim.etag)
            except tables.Conflict:
                # Still ours if only a takeover mark moved it: give it back over the mark.
                found = await tables.read(self.table, tables.safe_key(claim.where[0]),
                                          tables.safe_key(claim.where[1]))
                if found is None or found[0].get("claimId") != claim.id \
                        or found[0].get("state") != SENDING:
                    raise
                claim.etag = await tables.replace_if(self.table, entity, found[1])
        except (StorageUnavailable, tables.Conflict) as exc:
            self._remember_unused(claim.where, claim.id)
            log.warning("delivery %s -> %s: claim not given back (%s); this process "
                        "takes it back when the message returns", *_logged(claim.where),
                        type(exc).__name__)
            return
        claim.entity = entity

    async def finish(self, claim: Claim, state: str, **fields: Any) -> None:
        """Record the outcome of a claimed attempt (only the holder may).

        Through a storage outage it keeps trying, backing off, until the
        claim's recording deadline, the outcome kept in this process meanwhile;
        then raises Unrecorded. Raises tables.Conflict if the claim was lost
        (its lease ran out and another worker took it)."""
        now = tables.iso(self.clock())
        claim.entity.update(fields, state=state, updatedAt=now, leaseUntil="")
        if state == SENT:
            claim.entity["sentAt"] = now
            if "reason" not in fields:  # a sent row says why only when asked (`guest`)
                claim.entity.pop("reason", None)
        self._unrecorded[claim.where] = claim
        await self._record(claim)

    async def _record(self, claim: Claim) -> None:
        pause = PAUSES[0]
        while True:
            try:
                claim.etag = await self._write_outcome(claim)
            except StorageUnavailable as exc:
                left = (claim.record_by - self.clock()).total_seconds()
                if left <= 0:
                    log.error("delivery %s -> %s: outcome %s not written (%s); kept in this "
                              "process until the message comes back", *_logged(claim.where),
                              claim.entity["state"], type(exc).__name__)
                    raise Unrecorded(detail=f"Teams' answer ({claim.entity['state']}) is "
                                            f"not written yet") from exc
                log.warning("delivery %s -> %s: outcome %s not written yet (%s); trying "
                            "again for up to %.0f s", *_logged(claim.where), claim.entity["state"],
                            type(exc).__name__, left)
                await self.sleep(min(pause, left))
                pause = min(pause * 2, PAUSES[1])
                continue
            except Exception:
                self._unrecorded.pop(claim.where, None)
                raise
            self._unrecorded.pop(claim.where, None)
            return

    async def _write_outcome(self, claim: Claim) -> str:
        async for _ in tables.attempts(8):
            try:
                return await tables.replace_if(self.table, claim.entity, claim.etag)
            except tables.Conflict:
                found = await tables.read(self.table, tables.safe_key(claim.where[0]),
                                          tables.safe_key(claim.where[1]))
            if found is None:
                break
            row, etag = found
            # An earlier try may have landed with its answer lost (the storage
            # client retries on a dropped connection): then the row is ours.
            if all(row.get(k) == claim.entity.get(k) for k in ("claimId", "state", "updatedAt")):
                return etag
            if row.get("claimId") == claim.id and row.get("state") == SENDING:
                # Still ours: a late answer of an earlier holder added its copy.
                claim.entity["otherCopies"] = row.get("otherCopies", "")
                claim.entity.update({k: row[k] for k in UNKNOWN_FIELDS
                                     if k in row and k not in claim.entity})
                claim.etag = etag
                continue
            if claim.entity["state"] == SENT and claim.entity.get("activityId"):
                # Teams answered us after our claim was taken over (we could
                # not write in time): the user has this copy. Keep it on the row.
                try:
                    claim.etag = await tables.replace_if(self.table,
                                                         late_copy(row, claim.entity), etag)
                except tables.Conflict:
                    continue  # the row moved meanwhile: read it again
                log.warning("delivery %s -> %s: a late answer (activity %s) kept on the row "
                            "as another copy", *_logged(claim.where), claim.entity["activityId"])
                return claim.etag
            break
        log.error("delivery %s -> %s: claim lost before its outcome %s was written",
                  *_logged(claim.where), claim.entity["state"])
        self._unrecorded.pop(claim.where, None)
        raise tables.Conflict(detail=f"the claim on {claim.where} was lost")

    async def by_key(self, key: str) -> list[tuple[DeliveryRow, str]]:
        rows = []
        async for entity in self.table.query_entities(
            "PartitionKey eq @pk", parameters={"pk": tables.safe_key(key)}
        ):
            rows.append((DeliveryRow.from_entity(dict(entity)), str(entity.metadata["etag"])))
        return rows

    async def save(self, row: DeliveryRow, etag: str) -> str:
        """Write `row` back if unchanged since `etag` (Conflict otherwise)."""
        row.updated_at = tables.iso()
        return await tables.replace_if(self.table, row.to_entity(), etag)


def _busy_for(lease_until: str, now: datetime, lease: timedelta) -> float:
    """How long a copy that found a live claim waits before it looks again: a
    short while (0: the default jittered wait) while the claim is young (its
    holder answers in seconds), the rest of the lease once it has been held
    for BUSY_WAIT (its holder is likely dead, or waiting out a storage outage)."""
    until = tables.parse_iso(lease_until)
    if until is None:
        return 0.0
    left = until - now
    if lease - left < timedelta(seconds=BUSY_WAIT):
        return 0.0
    return max(1.0, left.total_seconds() + 1)
