"""A crash strands little (README "Exactly once, as far as Teams allows"):
the Functions host keeps a dead worker's queue messages invisible for ten
minutes, so a part of a many-user send keeps a standby copy that comes back
sooner, holds its users for a bounded time, and a claim a dead worker holds
is waited out rather than polled. Real Azurite, the Connector emulator.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from proactive.errors import Busy
from proactive.receiving.activities import parse_activity
from proactive.runtime import Runtime
from proactive.storage import tables
from proactive.storage.deliveries import BUSY_WAIT, Claim, DeliveryStore
from proactive.worker import process
from proactive_devtools.emulator import ConnectorEmulator
from tests.activities_data import TENANT, install
from tests.polling import eventually
from tests.sealed import app_made


def aad(i: int) -> str:
    return f"00000000-0000-4000-8000-{i:012d}"


async def install_users(rt: Runtime, url: str, count: int) -> list[str]:
    for i in range(count):
        await rt.references.record(parse_activity(install(
            service_url=url, aad=aad(i), conversation=f"a:conv-{i}")))
    return [aad(i) for i in range(count)]


def part(users: list[str], key: str = "k") -> str:
    """A part as the split queues it (sign it: `app_made`)."""
    return json.dumps({"version": 1, "op": "send", "key": key, "text": key, "part": True,
                       "to": {"users": users, "tenant": TENANT}})


async def visible(rt: Runtime) -> list[Any]:
    return [m async for m in rt.outbox.queue.receive_messages(
        messages_per_page=32, visibility_timeout=30, max_messages=32)]


async def run(rt: Runtime, messages: list[Any]) -> None:
    for m in messages:
        await process(rt, m.content, message_id=m.id)
        await rt.outbox.queue.delete_message(m)


class _Killed(BaseException):
    """The process dies: no `except Exception` of the product catches it."""


async def test_a_part_whose_worker_dies_comes_back_as_its_standby_copy(
        runtime: Runtime, emulator: ConnectorEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    from proactive.delivering import broadcast as b

    monkeypatch.setattr(b, "STANDBY", 1.0)  # 60 s in production
    users = await install_users(runtime, emulator.url, 10)
    await runtime.campaigns.start("k")
    await runtime.campaigns.count("k", {"part:x:0": Counter(queued=10)})
    await runtime.campaigns.mark_split("k", "x")

    # The worker dies during its fourth call to Teams (carried out: the user
    # has it), with nothing after that running: not even a `finally`.
    real_send, withdraw = runtime.connector.send, runtime.outbox.withdraw
    calls = 0

    async def dies_on_the_fourth(*args: Any, **kwargs: Any) -> str:
        nonlocal calls
        calls += 1
        answer = await real_send(*args, **kwargs)
        if calls == 4:
            raise _Killed
        return answer

    async def never(standby: tuple[str, str]) -> None:
        raise _Killed

    runtime.connector.send = dies_on_the_fourth  # type: ignore[method-assign]
    runtime.outbox.withdraw = never  # type: ignore[method-assign]
    with pytest.raises(_Killed):
        # the host keeps it 600 s
        await process(runtime, await app_made(runtime, part(users)), message_id="held")
    runtime.connector.send, runtime.outbox.withdraw = real_send, withdraw  # type: ignore[method-assign]
    reached = emulator.counters["delivered"]
    assert 4 <= reached < 10

    # Its standby copy turns visible (1 s here) and a healthy worker runs it;
    # the dead worker's claims run out meanwhile (the store's clock moves on).
    later = timedelta(seconds=runtime.settings.claim_lease_seconds + 1)
    runtime.deliveries.clock = lambda: tables.now_utc() + later
    copies = await eventually(lambda: visible(runtime), what="the standby copy", timeout=10)
    assert [json.loads(m.content)["to"]["users"] for m in copies] == [users]
    await run(runtime, copies)
    while more := await visible(runtime):
        await run(runtime, more)

    assert {d.conversation_id for d in emulator.deliveries} == {
        f"a:conv-{i}" for i in range(10)}
    progress = await runtime.campaigns.progress("k")
    assert progress is not None and progress.summary.state == "done"
    counts = progress.counts
    assert (counts["queued"], counts["sent"]) == (10, 10)
    # The users the dead worker had claimed: resent (one was surely carried out), and said so.
    assert 1 <= counts["ambiguous"] <= runtime.settings.max_calls_in_flight
    assert len(emulator.duplicates()) <= counts["ambiguous"]


async def test_a_part_holds_its_users_for_a_bounded_time_then_hands_the_rest_back(
        runtime: Runtime, emulator: ConnectorEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    from proactive.delivering import broadcast as b

    monkeypatch.setattr(b, "PART_SECONDS", 0.0)  # 10 s in production
    users = await install_users(runtime, emulator.url, 5)
    emulator.configure(answer_seconds=0.1)
    await process(runtime, await app_made(runtime, part(users)), message_id="p")
    assert emulator.counters["delivered"] == 1  # the first always goes
    [rest] = await visible(runtime)
    assert json.loads(rest.content)["to"]["users"] == users[1:]
    assert "attempt" not in json.loads(rest.content)  # handing back uses up no attempt


async def test_a_claim_held_long_is_waited_out_not_polled(runtime: Runtime) -> None:
    now = tables.now_utc()
    store = DeliveryStore(runtime.deliveries.table, lease=timedelta(seconds=300),
                          clock=lambda: now)
    assert isinstance(await store.claim("k", "user:a"), Claim)
    with pytest.raises(Busy) as young:  # its holder is likely mid-call: look again soon
        await store.claim("k", "user:a")
    assert young.value.delay == 0
    store.clock = lambda: now + timedelta(seconds=BUSY_WAIT + 10)
    with pytest.raises(Busy) as old:  # likely dead: wait for the lease to end
        await store.claim("k", "user:a")
    assert 250 <= old.value.delay <= 300 - BUSY_WAIT
