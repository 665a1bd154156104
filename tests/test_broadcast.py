"""One send to many users: parts, exactly-once per user, counters, cancel."""

from __future__ import annotations

import json
from typing import Any

import pytest

from proactive.delivering.broadcast import PART
from proactive.receiving.activities import parse_activity
from proactive.runtime import Runtime
from proactive.storage import deliveries as d
from proactive.worker import process
from proactive_devtools.emulator import ConnectorEmulator
from tests.activities_data import TENANT, install, uninstall
from tests.polling import eventually
from tests.sealed import app_made


def aad(i: int) -> str:
    return f"00000000-0000-4000-8000-{i:012d}"


async def install_users(rt: Runtime, url: str, count: int) -> list[str]:
    users = [aad(i) for i in range(count)]
    for i, user in enumerate(users):
        await rt.references.record(parse_activity(install(
            service_url=url, aad=user, conversation=f"a:conv-{i}")))
    return users


async def drain(rt: Runtime, limit: int = 100) -> int:
    """Run the worker over what is visible on the outbox queue, as the host would."""
    handled = 0
    while handled < limit:
        batch = [m async for m in rt.outbox.queue.receive_messages(
            messages_per_page=32, visibility_timeout=30, max_messages=32)]
        if not batch:
            return handled
        for message in batch:
            await process(rt, message.content, message_id=message.id)
            await rt.outbox.queue.delete_message(message)
            handled += 1
    return handled


def broadcast(to: dict[str, Any], key: str = "all-hands") -> str:
    return json.dumps({"version": 1, "op": "send", "key": key, "to": to,
                       "text": "All-hands at 15:00", "summary": "All-hands"})


async def test_a_list_is_split_and_each_user_gets_it_once(
        runtime: Runtime, emulator: ConnectorEmulator) -> None:
    users = await install_users(runtime, emulator.url, 60)
    message = broadcast({"users": [*users, users[0]]})
    outcome = await process(runtime, message, message_id="b1")
    assert outcome.reason == "split"
    # Teams redelivers nothing here, but the queue may: the same split again
    # adds no parts.
    assert (await process(runtime, message, message_id="b1")).reason == "duplicate"
    parts = await runtime.outbox.queue.peek_messages(max_messages=32)
    assert len(parts) == -(-60 // PART)
    assert all(len(json.loads(p.content)["to"]["users"]) <= PART for p in parts)
    await drain(runtime)
    assert emulator.counters["delivered"] == 60
    assert not emulator.duplicates()
    progress = await runtime.campaigns.progress("all-hands")
    assert progress is not None
    assert progress.counts == {"queued": 60, "sent": 60}


async def test_all_users_of_a_tenant_skipping_who_left(
        runtime: Runtime, emulator: ConnectorEmulator) -> None:
    users = await install_users(runtime, emulator.url, 30)
    await runtime.references.record(parse_activity(uninstall(
        service_url=emulator.url, aad=users[3], conversation="a:conv-3")))
    await process(runtime, broadcast({"allUsers": True, "tenant": TENANT}), message_id="b")
    await drain(runtime)
    assert emulator.counters["delivered"] == 29
    progress = await runtime.campaigns.progress("all-hands")
    assert progress is not None
    assert progress.counts == {"queued": 30, "sent": 29, "skipped": 1,
                                  "skipped_uninstalled": 1}


async def test_all_users_of_a_tenant_nobody_installed_in_is_done_at_once_saying_why(
        runtime: Runtime) -> None:
    outcome = await process(runtime, broadcast({"allUsers": True, "tenant": "t-nobody"},
                                               key="empty-1"), message_id="e")
    assert outcome.reason == "no-recipients"
    assert await runtime.outbox.queue.peek_messages(max_messages=1) == []  # no parts
    progress = await runtime.campaigns.progress("empty-1")
    assert progress is not None and progress.summary.state == "done"  # not `running` forever
    assert progress.summary.reason == "no-recipients"
    assert "'t-nobody'" in str(progress.summary.detail)


async def test_failures_of_some_users_do_not_stop_the_others(
        runtime: Runtime, emulator: ConnectorEmulator) -> None:
    users = await install_users(runtime, emulator.url, 10)
    emulator.set_status("a:conv-2", "blocked")
    emulator.inject(500, conversation_id="a:conv-5")
    await process(runtime, broadcast({"users": users}), message_id="b")
    await drain(runtime)
    assert emulator.counters["delivered"] == 8
    progress = await runtime.campaigns.progress("all-hands")
    assert progress is not None
    assert progress.counts["sent"] == 8
    assert progress.counts["skipped_blocked"] == 1
    assert progress.counts["failed_service_error"] == 1


async def test_a_transient_failure_retries_that_user_alone(
        runtime: Runtime, emulator: ConnectorEmulator) -> None:
    users = await install_users(runtime, emulator.url, 5)
    emulator.inject(429, conversation_id="a:conv-1", retry_after=1)
    await process(runtime, broadcast({"users": users}), message_id="b")
    await drain(runtime)
    assert emulator.counters["delivered"] == 4
    # The throttled user's retry becomes visible after Retry-After (1 s).
    async def retried() -> bool:
        await drain(runtime)
        return bool(emulator.counters["delivered"] >= 5)

    await eventually(retried, 10, "the throttled user's retry")
    assert emulator.counters["delivered"] == 5
    progress = await runtime.campaigns.progress("all-hands")
    assert progress is not None and progress.counts["sent"] == 5


async def test_a_429_holds_that_conversation_for_its_retry_after_not_the_tenant(
        runtime: Runtime, emulator: ConnectorEmulator) -> None:
    from proactive.delivering.pacing import Defer

    users = await install_users(runtime, emulator.url, 5)
    emulator.inject(429, conversation_id="a:conv-1", retry_after=3)
    await process(runtime, broadcast({"users": users}), message_id="b")
    await drain(runtime)
    assert emulator.counters["delivered"] == 4  # the others were not held up
    # That user's retry waits on the queue for Retry-After...
    assert (await runtime.outbox.queue.get_queue_properties()).approximate_message_count == 1
    assert not [m async for m in runtime.outbox.queue.receive_messages(max_messages=1)]
    # ... and so does this process's next send to that conversation, only that one.
    with pytest.raises(Defer) as deferred:
        await runtime.conversation_pacer.acquire("a:conv-1")
    assert 2.0 < deferred.value.delay <= 3.0
    await runtime.conversation_pacer.acquire("a:conv-2")
    # One 429 costs the tenant a little of its rate, not most of it.
    assert await runtime.tenant_pacer.current_rate(TENANT) >= 0.85 * runtime.tenant_pacer.rate


async def test_cancel_skips_what_was_not_sent_yet(runtime: Runtime,
                                                  emulator: ConnectorEmulator) -> None:
    users = await install_users(runtime, emulator.url, 3 * PART)
    await process(runtime, broadcast({"users": users}), message_id="b")
    [first] = [m async for m in runtime.outbox.queue.receive_messages(max_messages=1)]
    await process(runtime, first.content, message_id=first.id)
    await runtime.outbox.queue.delete_message(first)
    cancel = json.dumps({"version": 1, "op": "cancel", "key": "all-hands"})
    assert (await process(runtime, cancel, message_id="c")).reason == "cancelled"
    await drain(runtime)
    assert emulator.counters["delivered"] == PART
    progress = await runtime.campaigns.progress("all-hands")
    assert progress is not None
    assert progress.summary.state == "cancelled"
    assert progress.counts["sent"] == PART
    assert progress.counts["skipped_cancelled"] == 2 * PART
    row = await runtime.deliveries.table.get_entity("all-hands", f"user:{users[-1]}")
    assert row["state"] == d.CANCELLED


async def test_cancel_of_an_unknown_key_says_so(runtime: Runtime) -> None:
    cancel = json.dumps({"version": 1, "op": "cancel", "key": "nope"})
    assert (await process(runtime, cancel, message_id="c")).reason == "unknown-key"


async def test_several_messages_under_one_key_each_split_once(
        runtime: Runtime, emulator: ConnectorEmulator) -> None:
    users = await install_users(runtime, emulator.url, 40)
    first, second = broadcast({"users": users[:30]}), broadcast({"users": users[30:]})
    for body in (first, second, first):  # the first one redelivered after the second
        await process(runtime, body, message_id="m")
    await drain(runtime)
    assert emulator.counters["delivered"] == 40
    progress = await runtime.campaigns.progress("all-hands")
    assert progress is not None
    assert progress.counts == {"queued": 40, "sent": 40}


async def test_a_list_too_long_to_keep_whole_in_a_row_is_split(
        runtime: Runtime, emulator: ConnectorEmulator) -> None:
    users = [aad(i) for i in range(1500)]  # ~55 KB: fits a queue message, not a property
    assert (await process(runtime, broadcast({"users": users}), message_id="m")).reason \
        == "split"
    parts = await runtime.outbox.queue.peek_messages(max_messages=32)
    assert len(parts) == min(32, -(-1500 // PART))  # (peek shows 32 at most) the parts


async def test_a_part_put_off_by_the_tenant_budget_goes_back_whole(
        runtime: Runtime, emulator: ConnectorEmulator) -> None:
    from proactive.delivering.pacing import TenantPacer

    users = await install_users(runtime, emulator.url, 6)
    # Another instance has booked the tenant's next 10 s.
    other = TenantPacer(runtime.tenant_pacer.table, rate=1, batch_seconds=10)
    await other.acquire(TENANT)
    part = await app_made(runtime, {**json.loads(broadcast({"users": users, "tenant": TENANT})),
                                    "part": True})
    assert (await process(runtime, part, message_id="p")).reason == "part"
    assert emulator.counters.get("requests", 0) == 0
    # One message back, invisible for the wait, holding every user of the part.
    assert await runtime.outbox.queue.peek_messages() == []
    properties = await runtime.outbox.queue.get_queue_properties()
    assert properties.approximate_message_count == 1
    rows = [r async for r in runtime.deliveries.table.query_entities(
        "PartitionKey eq 'all-hands'")]
    assert len(rows) <= 1  # at most the user that found the budget spent was claimed
    assert all(r["state"] == d.RETRYING and r["reason"] == "paced" for r in rows)
    progress = await runtime.campaigns.progress("all-hands")
    assert progress is not None and progress.counts == {}
    # The next part of the send, while the budget is still booked: this worker
    # knows it now, and puts the part off without claiming anyone (a claim
    # and its release would be two writes for nothing).
    more = await install_users(runtime, emulator.url, 12)
    part = await app_made(runtime, {**json.loads(broadcast({"users": more[6:],
                                                            "tenant": TENANT})), "part": True})
    assert (await process(runtime, part, message_id="p2")).reason == "part"
    rows = [r async for r in runtime.deliveries.table.query_entities(
        "PartitionKey eq 'all-hands'")]
    assert len(rows) <= 1 and emulator.counters.get("requests", 0) == 0
    assert (await runtime.outbox.queue.get_queue_properties()).approximate_message_count == 2


async def test_a_split_run_again_after_a_crash_counts_queued_once(
        runtime: Runtime, emulator: ConnectorEmulator) -> None:
    users = await install_users(runtime, emulator.url, 30)
    message = broadcast({"users": users})
    await process(runtime, message, message_id="b")
    # A crash after the parts were queued but before the split was recorded:
    # the message comes back and is split again.
    async for row in runtime.campaigns.table.query_entities(
            "PartitionKey eq 'all-hands' and RowKey ge 'split-' and RowKey lt 'split.'"):
        await runtime.campaigns.table.delete_entity(row["PartitionKey"], row["RowKey"])
    assert (await process(runtime, message, message_id="b")).reason == "split"
    await drain(runtime)
    assert emulator.counters["delivered"] == 30
    progress = await runtime.campaigns.progress("all-hands")
    assert progress is not None
    assert progress.counts == {"queued": 30, "sent": 30}


async def test_more_entries_than_one_transaction_holds_are_each_counted_once(
        runtime: Runtime) -> None:
    from collections import Counter

    await runtime.campaigns.start("many")
    entries = {f"part:x:{i}": Counter(queued=2) for i in range(250)}
    await runtime.campaigns.count("many", entries)
    await runtime.campaigns.count("many", entries)  # reported twice: counted once
    progress = await runtime.campaigns.progress("many")
    assert progress is not None and progress.counts == {"queued": 500}


async def test_a_process_writes_its_last_counter_shard_back_without_reading_it(
        runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    from collections import Counter

    from proactive.storage.progress import Campaigns

    ours, theirs = runtime.campaigns, Campaigns(runtime.campaigns.table)  # two processes
    await ours.start("k")
    reads: list[object] = []
    get_entity = ours.table.get_entity

    async def counted(*args: Any, **kwargs: Any) -> Any:
        reads.append(args)
        return await get_entity(*args, **kwargs)

    monkeypatch.setattr(ours.table, "get_entity", counted)
    await ours.count("k", {"a": Counter(sent=1)})
    await ours.count("k", {"b": Counter(sent=1)})
    assert len(reads) == 1  # the first count read a shard; the second wrote it back
    # Another process counting into the same shards: conflicts are read again,
    # and every entry still counts once.
    for i in range(12):
        await theirs.count("k", {f"t{i}": Counter(sent=1)})
        await ours.count("k", {f"o{i}": Counter(sent=1), "a": Counter(sent=1)})
    progress = await ours.progress("k")
    assert progress is not None and progress.counts == {"sent": 26}


async def test_counts_at_once_in_one_process_take_different_shards(
        runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """A send's parts in one worker count at the same time: each takes a shard
    no other count of the process is writing, so none conflicts with another
    and, once each shard was written, none reads one."""
    import asyncio
    from collections import Counter

    from proactive.storage import tables

    campaigns = runtime.campaigns
    await campaigns.start("k")
    reads: list[object] = []
    transactions: list[object] = []
    get_entity, submit = campaigns.table.get_entity, tables.submit

    async def read(*args: Any, **kwargs: Any) -> Any:
        reads.append(args)
        return await get_entity(*args, **kwargs)

    async def submitted(*args: Any, **kwargs: Any) -> Any:
        transactions.append(args)
        return await submit(*args, **kwargs)

    monkeypatch.setattr(campaigns.table, "get_entity", read)
    monkeypatch.setattr(tables, "submit", submitted)
    for n in range(3):
        await asyncio.gather(*(campaigns.count("k", {f"{n}-{i}": Counter(sent=1)})
                               for i in range(8)))
    assert len(transactions) == 24  # one each: no conflict
    assert len(reads) == 8  # the first round read the eight shards; then none
    progress = await campaigns.progress("k")
    assert progress is not None and progress.counts == {"sent": 24}
    # A shard whose read failed (storage down) is not left marked as taken.
    from proactive.errors import StorageUnavailable

    async def down(*args: Any, **kwargs: Any) -> Any:
        raise StorageUnavailable("down")

    monkeypatch.setattr(campaigns.table, "get_entity", down)
    with pytest.raises(StorageUnavailable):
        await campaigns.count("j", {"x": Counter(sent=1)})
    assert campaigns.shards._writing == {}


class _Killed(BaseException):
    """The process dies: no `except Exception` of the product catches it."""


async def test_a_crash_at_any_point_of_the_split_loses_and_doubles_nothing(
        runtime: Runtime, emulator: ConnectorEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """The split of a tenant's users dies before each of its storage writes in
    turn (a part queued, parts counted, the split recorded), as a killed
    worker would: what was written stays, nothing after runs. Its message
    comes back: every user gets the message once, `queued` counts each once,
    and the send ends `done`."""
    from proactive.delivering import broadcast as b

    monkeypatch.setattr(b, "PART", 4)  # 5 parts of 18 users
    monkeypatch.setattr(b, "PER_TRANSACTION", 9)  # parts counted two at a time
    users = await install_users(runtime, emulator.url, 18)
    writers = {"put": runtime.outbox, "count": runtime.campaigns,
               "mark_split": runtime.campaigns}
    real = {name: getattr(owner, name) for name, owner in writers.items()}
    steps = 5 + 3 + 1  # 5 parts queued, counted in 3 transactions, the split marked
    for kill_at in range(steps + 1):  # the last: after every write, before settling
        done = 0

        def dying(name: str, kill_at: int = kill_at) -> Any:
            async def write(*args: Any, **kwargs: Any) -> Any:
                nonlocal done
                if done == kill_at:
                    raise _Killed  # nothing after this point runs, as after SIGKILL
                done += 1
                return await real[name](*args, **kwargs)
            return write

        key = f"split-crash-{kill_at}"
        message = json.dumps({"version": 1, "op": "send", "key": key, "text": key,
                              "to": {"allUsers": True, "tenant": TENANT}})
        for name, owner in writers.items():
            setattr(owner, name, dying(name))
        try:
            await process(runtime, message, message_id=key)
        except _Killed:
            pass
        finally:
            for name, owner in writers.items():
                setattr(owner, name, real[name])
        assert done == min(kill_at, steps)
        # The queue brings the message back to a healthy worker.
        assert (await process(runtime, message, message_id=key)).reason in (
            "split", "duplicate")
        await drain(runtime)
        reached = sorted(d.conversation_id for d in emulator.deliveries if d.text == key)
        assert reached == sorted(f"a:conv-{i}" for i in range(len(users))), kill_at
        progress = await runtime.campaigns.progress(key)
        assert progress is not None
        assert progress.counts == {"queued": 18, "sent": 18}, kill_at
        assert progress.summary.state == "done", kill_at


@pytest.mark.parametrize("audience", ["allUsers", "users"])
async def test_a_split_that_failed_part_way_goes_on_where_its_last_count_was(
        runtime: Runtime, emulator: ConnectorEmulator, monkeypatch: pytest.MonkeyPatch,
        audience: str, caplog: pytest.LogCaptureFixture) -> None:
    """Storage fails under a long split (its tenth part can't be queued): the
    message comes back and the split goes on after the parts its last count
    recorded, queuing again only those queued since (not every part from the
    first user on). Every user gets the message once and is queued once."""
    from proactive.delivering import broadcast as b
    from proactive.errors import StorageUnavailable

    monkeypatch.setattr(b, "PART", 4)  # 15 parts of 60 users
    monkeypatch.setattr(b, "PER_TRANSACTION", 9)  # counted two parts at a time
    users = await install_users(runtime, emulator.url, 60)
    put = runtime.outbox.put
    parts: list[list[str]] = []

    async def failing(message: Any, *args: Any, **kwargs: Any) -> Any:
        if len(parts) == 9 and not failed:
            failed.append(True)
            raise StorageUnavailable(detail="queue outbox: ServiceRequestError")
        if message.part:  # not the message itself, put back to be tried again
            parts.append(list(message.target.users))
        return await put(message, *args, **kwargs)

    failed: list[bool] = []
    monkeypatch.setattr(runtime.outbox, "put", failing)
    to = {"allUsers": True, "tenant": TENANT} if audience == "allUsers" else {"users": users}
    message = broadcast(to, key="resumed")
    assert (await process(runtime, message, message_id="r")).reason == "storage-unavailable"
    # The operator's log says what failed, not just that something did.
    assert "outbox message r: storage-unavailable: queue outbox: ServiceRequestError" \
        in caplog.text
    assert (await process(runtime, message, message_id="r")).reason == "split"
    # Parts 1-8 were counted with the split's position; part 9 was queued
    # after that count and is queued again; nothing before it is.
    assert len(parts) == 16
    assert parts[9] == parts[8] and parts[10:] == [users[i:i + 4] for i in range(36, 60, 4)]
    await drain(runtime)
    assert sorted(d.conversation_id for d in emulator.deliveries) == sorted(
        f"a:conv-{i}" for i in range(60))
    progress = await runtime.campaigns.progress("resumed")
    assert progress is not None
    assert progress.counts == {"queued": 60, "sent": 60}
    assert progress.summary.state == "done"


async def test_a_split_position_is_kept_even_when_its_people_were_counted_before(
        runtime: Runtime) -> None:
    """A split run again queues a part counted before (its count's answer was
    lost): the count adds nothing, and the split's position still moves on."""
    from collections import Counter

    await runtime.campaigns.start("k")
    entries = {f"queued:user:{i}": Counter(queued=1) for i in range(3)}
    await runtime.campaigns.count("k", entries, resume=("a", "3"))
    assert await runtime.campaigns.resumes_after("k", "a") == "3"
    await runtime.campaigns.count("k", entries, resume=("a", "6"))
    assert await runtime.campaigns.resumes_after("k", "a") == "6"
    progress = await runtime.campaigns.progress("k")
    assert progress is not None and progress.counts == {"queued": 3}


@pytest.mark.parametrize("landed", [False, True])
async def test_a_count_whose_answer_was_lost_is_counted_once_without_failing(
        runtime: Runtime, monkeypatch: pytest.MonkeyPatch, landed: bool) -> None:
    """Storage resets the connection of a count's transaction (the tables SDK
    retries no POST): whether it landed or not, the count goes on by itself
    (its part is not failed and run again) and counts each entry once. A
    transaction that did not land costs one read to find out."""
    from collections import Counter

    from proactive.errors import StorageUnavailable
    from proactive.storage import tables

    await runtime.campaigns.start("k")
    submit, get_entity = tables.submit, runtime.campaigns.table.get_entity
    transactions, reads = [], []

    async def lossy(*args: Any, **kwargs: Any) -> Any:
        transactions.append(args)
        if len(transactions) == 1:
            if landed:
                await submit(*args, **kwargs)
            raise StorageUnavailable(detail="ServiceRequestError")
        return await submit(*args, **kwargs)

    async def read(*args: Any, **kwargs: Any) -> Any:
        reads.append(args)
        return await get_entity(*args, **kwargs)

    monkeypatch.setattr(tables, "submit", lossy)
    monkeypatch.setattr(runtime.campaigns.table, "get_entity", read)
    entries = {f"user:{i}": Counter(sent=1) for i in range(25)}
    await runtime.campaigns.count("k", entries)
    progress = await runtime.campaigns.progress("k")
    assert progress is not None and progress.counts == {"sent": 25}
    if not landed:
        assert len(transactions) == 2
        assert len([r for r in reads if str(r[1]).startswith("~")]) == 1
