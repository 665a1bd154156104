"""Staying under Teams' rate limits, on many worker instances at once.

Per tenant (Teams: 50 requests/s per app per tenant) the budget is shared
through one Table Storage row per tenant holding the next free send time and
the current rate. A worker reserves a short run of send slots with an
ETag-conditional write (about 0.2 s worth, so one storage write per ~10
sends at 50/s; while no other instance reserves for the tenant, up to 0.4 s
worth for a busy one and up to 1 s worth for a tenant with only a few sends
a second) and spends them locally, spaced about 1/rate apart. However many
instances run, together they can't reserve more than the rate: slots are
handed out from one clock in one row.

Teams counts requests in a sliding second, by when they arrive, so a send
that leaves late bunches with the sends after it. Slots are therefore handed
out so that `rate` of them span 1 + SPREAD seconds (48.1/s of Teams' 50/s,
9.6/s of a 10/s limit), and a send whose slot has passed by more than LATE
(its task woke late: a busy event loop) gives that slot up and takes the
next: a send arrives at most about LATE after its slot, and a send `rate`
slots later at least 1 + SPREAD - LATE seconds after it, never inside the
same second. The allowance is in seconds, not in whole requests, so a scaled
limit (10/s, 20/s) is held as exactly as 50/s.

Adaptive (AIMD): every 429 lowers the tenant's shared rate a little (x0.97,
not below FLOOR of the ceiling), so the cut is in proportion to how many
calls Teams refused: one now and then (Teams answers 429 at any rate) costs a
few percent for a second, a storm (every call refused) reaches the floor
within a second or two. Once no 429 has come for QUIET_BEFORE_RECOVERY (1 s)
the rate climbs back by RECOVERY (30 % of the ceiling) per second: from the
floor to the ceiling 2.7 s later. (Counting only one 429 per reservation,
as before, let a busy worker, whose tasks hold slots booked up to max_wait
ahead, climb back between two counted 429s and hover near the ceiling
through a storm.) Tenants never share a row, so throttling in one never
slows another. A 429's Retry-After names that conversation and that moment:
the recipient's retry waits for it (on the queue), and so does this
process's next send to that conversation (`ConversationPacer.hold`); it does
not stop the tenant.

Per conversation: delivering/conversation_pacing.py.

A wait longer than `max_wait` is not slept through: `Defer` tells the caller
to put the message back on the queue with that delay.

The budget row is also the one row every instance sending to a tenant keeps
current, for free: `stamp` gives a property of it a new value, every
instance's next reservation for the tenant conflicts with that write, reads
the row again and so sees it (`seen`). Opt-outs are signalled that way
(delivering/optouts.py).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from proactive.errors import Reason, RetryLater
from proactive.storage import tables

if TYPE_CHECKING:
    from proactive.storage.tables import Table

Clock = Callable[[], float]

# AIMD: every 429 multiplies the shared rate by DECREASE (not below FLOOR x
# the ceiling, nor MIN_RATE): a cut in proportion to the 429s, small for one
# now and then, to the floor within a second or two when every call is refused;
# RECOVERY x the ceiling per second is added back once no 429 has come for
# QUIET_BEFORE_RECOVERY seconds.
DECREASE = 0.97
FLOOR = 0.2
RECOVERY = 0.3
QUIET_BEFORE_RECOVERY = 1.0
MIN_RATE = 1.0
# How late a reserved slot may still be used, in seconds.
LATE = 0.02
# `rate` slots span 1 + SPREAD seconds: a send may arrive up to SPREAD later
# than its slot relative to the one `rate` slots after it (LATE, plus the
# trip to Teams) without rate + 1 of them falling in one sliding second.
# Seconds, not whole requests: at 10/s a whole-request headroom of 4 % rounds
# to nothing, and a send LATE behind its slot bunched with the 10th after it.
SPREAD = 0.04
# Slots a hair further apart still, so that float rounding never puts
# rate + 1 of them inside one second.
SPACING_MARGIN = 1.001
# A sparsely used tenant's reservation grows by this factor per reservation,
# up to SPARSE_WINDOW seconds of its budget (at most half of max_wait, so an
# instance waiting behind it still waits rather than defers).
SPARSE_GROWTH = 2.0
SPARSE_WINDOW = 1.0
# A busy instance alone on a tenant (at most 1/BUSY_UNUSED of its slots given
# up) grows its reservation the same way up to BUSY_WINDOW seconds.
BUSY_WINDOW = 0.4
BUSY_UNUSED = 10
# A send's last step before its call (the delivery's claim, one storage write)
# starts this many times its mean duration before the slot, at most MAX_EARLY s.
EARLY_MARGIN = 1.5
MAX_EARLY = 0.25
# Slots given up in a row because the task woke too late, before deferring.
LATE_TRIES = 8
BUDGET = "budget"


class Defer(RetryLater):
    """Come back later: the budget is spent for `delay` seconds. Not a
    failure: the message keeps its attempt count."""

    reason = Reason.PACED

    def __init__(self, delay: float) -> None:
        super().__init__(delay, detail=f"the tenant's budget is spent for {delay:.2f}s")


@dataclass
class _Slots:
    times: deque[tuple[float, float]] = field(default_factory=deque)  # (slot, reserved at)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # The budget row as this process last wrote it. Written back optimistically
    # (ETag-conditional), so an instance that has a tenant to itself pays one
    # storage write per reservation, no read; a conflict means another
    # instance reserved meanwhile, and only then is the row read again.
    row: dict[str, Any] = field(default_factory=dict)
    etag: str = ""
    # Seconds of budget the next reservation takes (see SPARSE_GROWTH), and
    # how many slots of the current one were given up unused.
    window: float = 0.0
    unused: int = 0
    reserved: int = 0
    # The tenant's next free slot as this process last read or wrote it: a
    # lower bound (it never moves back), so `defers` never puts off wrongly.
    next_free: float = 0.0


def spacing_of(rate: float) -> float:
    """Seconds between two slots at `rate`: `rate` of them span 1 + SPREAD s."""
    return SPACING_MARGIN * (1.0 + SPREAD) / rate


def budget_key(tenant: str) -> str:
    """The partition of a tenant's budget row: one per tenant however its id
    is spelled (Teams and Azure AD give tenant ids in either case)."""
    return tables.safe_key((tenant or "-").lower())


class TenantPacer:
    def __init__(self, table: Table, *, rate: float = 50.0, clock: Clock = time.time,
                 batch_seconds: float = 0.2, max_wait: float = 2.0,
                 sleep: Callable[[float], object] = asyncio.sleep) -> None:
        self.table = table
        self.rate = rate
        self.clock = clock
        self.batch_seconds = batch_seconds
        self.max_wait = max_wait
        self.sleep = sleep
        self._slots: dict[str, _Slots] = defaultdict(_Slots)
        self._took = 0.0  # the mean time of the step between slot and call (`took`)
        # When this process's last `rate` requests per tenant left (`spaced`).
        self._left: dict[str, deque[float]] = {}

    async def acquire(self, tenant: str, *, early: float = 0.0) -> float:
        """Wait for this tenant's next send slot (returned), or raise Defer.
        `early`: return that many seconds before the slot (`until` waits out
        the rest), for work that must come between the slot and the call."""
        slots = self._slots[budget_key(tenant)]
        for _ in range(LATE_TRIES):
            async with slots.lock:
                now = self.clock()
                while slots.times and slots.times[0][0] < now - LATE:
                    # Reserved but not used in time: using it now would bunch
                    # this instance's sends with the next instance's slots.
                    slots.times.popleft()
                    slots.unused += 1
                if not slots.times:
                    await self._reserve(tenant, slots, now)
                at, _ = slots.times.popleft()
            wait = at - early - self.clock()
            if wait > 0:
                await self.sleep(wait)  # type: ignore[misc]
            if self.clock() - at <= LATE:
                return at
            # Woke too late (a busy event loop): the slot has passed; a send
            # now would arrive too close to the sends `rate` slots later.
        raise Defer(self.batch_seconds)

    @property
    def early(self) -> float:
        """How long before its slot a send starts its last step (`took`)."""
        return min(MAX_EARLY, EARLY_MARGIN * self._took)

    def took(self, seconds: float) -> None:
        """The last step before a call took this long (its claim's write)."""
        self._took += 0.2 * (seconds - self._took)

    async def until(self, tenant: str, at: float) -> None:
        """Wait for slot `at` that `acquire` returned early; if it has passed
        by more than LATE meanwhile, for the next slot instead."""
        wait = at - self.clock()
        if wait > 0:
            await self.sleep(wait)  # type: ignore[misc]
        elif -wait > LATE:
            await self.acquire(tenant)

    async def spaced(self, tenant: str) -> None:
        """Just before a request leaves: if this process's request `rate`
        places back left less than 1 + SPREAD seconds ago (it left late after
        its slot: a busy event loop), wait until it has. Slots keep the
        instances together under the rate; this keeps one process's requests
        `rate` per 1 + SPREAD s however late each leaves, so SPREAD is all
        left for the trip to Teams. Sends on their slots never wait here."""
        key = budget_key(tenant)
        limit = max(1, int(self.rate))
        left = self._left.get(key)
        if left is None:
            if len(self._left) >= 4096:  # tenants sent to: forget the oldest
                del self._left[next(iter(self._left))]
            left = self._left[key] = deque(maxlen=limit)
        if len(left) == limit:
            wait = left[0] + 1.0 + SPREAD - self.clock()
            if wait > 0:
                await self.sleep(wait)  # type: ignore[misc]
        left.append(self.clock())

    async def _budget(self, tenant: str, slots: _Slots, attempt: int) -> tuple[dict[str, Any],
                                                                                 str]:
        if attempt == 0 and slots.etag:
            return dict(slots.row), slots.etag
        found = await tables.read(self.table, budget_key(tenant), BUDGET)
        return found if found else ({}, "")

    async def _write(self, slots: _Slots, entity: dict[str, Any], etag: str) -> None:
        slots.etag = await tables.write_if(self.table, entity, etag)
        slots.row = entity

    async def _reserve(self, tenant: str, slots: _Slots, now: float) -> None:
        pk, rk = budget_key(tenant), BUDGET
        async for attempt in tables.attempts():
            row, etag = await self._budget(tenant, slots, attempt)
            rate = _recovered(row, now, self.rate)
            slots.next_free = max(slots.next_free, float(row.get("nextFree", 0.0)))
            start = max(now, float(row.get("nextFree", 0.0)))
            if start - now > self.max_wait:
                raise Defer(start - now)
            window = self._window(slots, contended=attempt > 0 or (
                start > now and row.get("nextFree") != slots.row.get("nextFree")),
                throttled=now - float(row.get("throttledAt", 0.0)) < QUIET_BEFORE_RECOVERY)
            count = max(1, round(rate * window))
            spacing = spacing_of(rate)
            entity = {**row, "PartitionKey": pk, "RowKey": rk, "rate": rate,
                      "nextFree": start + count * spacing, "updated": now}
            entity.setdefault("throttledAt", 0.0)
            try:
                await self._write(slots, entity, etag)
            except tables.Conflict:
                continue
            slots.times.extend((start + i * spacing, now) for i in range(count))
            slots.next_free = entity["nextFree"]
            slots.window, slots.reserved, slots.unused = window, count, 0
            return
        raise Defer(self.batch_seconds)

    def _window(self, slots: _Slots, *, contended: bool, throttled: bool) -> float:
        """How much of the tenant's budget to reserve: batch_seconds, grown
        while this instance has the tenant to itself. Sparse (most of its
        slots unused): up to SPARSE_WINDOW, so a tenant with a few sends a
        second costs one write per several sends instead of one per send.
        Busy (nearly every slot used): up to BUSY_WINDOW, one write per ~20
        sends at 50/s. Back to batch_seconds as soon as another instance
        reserves too (its sends would wait for ours), a 429 came lately (the
        next reservation takes the lowered rate sooner), or use changes."""
        if contended or throttled or not slots.window:
            return self.batch_seconds
        if slots.unused * 2 >= slots.reserved:
            return min(slots.window * SPARSE_GROWTH, max(self.batch_seconds,
                                                         min(SPARSE_WINDOW, self.max_wait / 2)))
        if slots.unused * BUSY_UNUSED <= slots.reserved:
            return min(slots.window * SPARSE_GROWTH, max(self.batch_seconds, BUSY_WINDOW))
        return self.batch_seconds

    async def throttled(self, tenant: str) -> float:
        """Teams answered 429 for this tenant: lower its shared rate by a
        little (DECREASE), so that the cut is in proportion to how many of
        the sends were refused."""
        pk, rk = budget_key(tenant), BUDGET
        now = self.clock()
        slots = self._slots[pk]
        async for attempt in tables.attempts():
            row, etag = await self._budget(tenant, slots, attempt)
            # Slots reserved already stay: at most a reservation's worth
            # (batch_seconds) at the old rate, and dropping them would throw
            # that budget away on the shared clock as well.
            rate = max(_floor(self.rate), _recovered(row, now, self.rate) * DECREASE)
            entity = {**row, "PartitionKey": pk, "RowKey": rk, "rate": rate,
                      "throttledAt": now, "updated": now,
                      "nextFree": max(now, float(row.get("nextFree", 0.0)))}
            try:
                await self._write(slots, entity, etag)
            except tables.Conflict:
                continue
            return rate
        return self.rate

    async def current_rate(self, tenant: str) -> float:
        found = await tables.read(self.table, budget_key(tenant), BUDGET)
        return _recovered(found[0], self.clock(), self.rate) if found else self.rate

    def defers(self, tenant: str) -> float:
        """The delay an `acquire` for the tenant would `Defer` by now, as far as
        this process knows the budget row (no storage request); 0.0 when it
        would not, or this process does not know. A send asks before it claims
        its recipient (claimed, deferred and released, it would cost two writes
        for nothing)."""
        slots = self._slots.get(budget_key(tenant))
        if slots is None or slots.times:
            return 0.0
        ahead = slots.next_free - self.clock()
        return ahead if ahead > self.max_wait else 0.0

    def seen(self, tenant: str, name: str) -> Any:
        """Property `name` of the tenant's budget row as this process last read
        or wrote it: after `acquire`, as of the reservation of the slot it
        returned or later (a reservation that conflicts reads the row again)."""
        slots = self._slots.get(budget_key(tenant))
        return slots.row.get(name) if slots is not None else None

    async def stamp(self, tenant: str, name: str) -> None:
        """Give property `name` of the tenant's budget row a new value (the row
        is created if missing). This process sees it at once; every other
        instance at its next reservation for the tenant."""
        value = uuid.uuid4().hex
        await tables.merge(self.table, {"PartitionKey": budget_key(tenant), "RowKey": BUDGET,
                                        name: value})
        slots = self._slots.get(budget_key(tenant))
        if slots is not None:  # its ETag is stale now: the next write reads the row
            slots.row[name] = value


def _floor(ceiling: float) -> float:
    return min(ceiling, max(MIN_RATE, FLOOR * ceiling))


def _recovered(row: dict[str, object], now: float, ceiling: float) -> float:
    """The row's rate as of `now`: additive increase once 429s are quiet."""
    rate = float(row.get("rate", ceiling))  # type: ignore[arg-type]
    throttled_at = float(row.get("throttledAt", 0.0))  # type: ignore[arg-type]
    recover_at = throttled_at + QUIET_BEFORE_RECOVERY
    updated = float(row.get("updated", now))  # type: ignore[arg-type]
    if rate < ceiling and now > recover_at:
        rate += RECOVERY * ceiling * max(0.0, now - max(updated, recover_at))
    return min(ceiling, max(_floor(ceiling), rate))
