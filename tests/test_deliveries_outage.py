"""Delivery records through a storage outage: Azurite (on disk) stopped and
started again with its data, around one claim.

Each outage lasts as long as Azurite takes to start again (2-4 s): longer
than the storage client's own retries (0.1 + 0.4 + 1.6 s).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from proactive.errors import StorageUnavailable
from proactive.runtime import Runtime
from proactive.storage import deliveries as d
from proactive.storage import tables
from proactive.storage.deliveries import Claim, DeliveryStore
from proactive_devtools.processes import Azurite
from tests.polling import eventually

KEY, RECIPIENT = "outage-key", "user:00000000-0000-4000-8000-000000000001"


@pytest.fixture
def rt(disk_runtime: Runtime) -> Runtime:
    return disk_runtime


def store_with_pauses(rt: Runtime, pauses: list[float]) -> DeliveryStore:
    """The runtime's table, a 60 s lease; the pauses between write tries are
    recorded and kept short (the product's backoff, not the test's waiting)."""
    async def pause(seconds: float) -> None:
        pauses.append(seconds)
        await asyncio.sleep(0.05)

    return DeliveryStore(rt.deliveries.table, lease=timedelta(seconds=60), sleep=pause)


async def row(store: DeliveryStore) -> dict[str, object]:
    return dict(await store.table.get_entity(tables.safe_key(KEY), tables.safe_key(RECIPIENT)))


async def test_teams_answer_is_written_once_storage_is_back_not_sent_again(
        rt: Runtime, disk_azurite: Azurite) -> None:
    """Teams accepted the send, then storage went down: the worker keeps
    trying the `sent` write instead of giving up, and a copy of the message
    arriving in the same process meanwhile is answered from that record
    (the finished row), never with a claim to send again."""
    pauses: list[float] = []
    store = store_with_pauses(rt, pauses)
    claim = await store.claim(KEY, RECIPIENT)
    assert isinstance(claim, Claim)
    disk_azurite.stop()
    writing = asyncio.create_task(store.finish(claim, d.SENT, activityId="1:answered"))
    await eventually(lambda: pauses or writing.done(), what="a write tried and failed")
    copy = asyncio.create_task(store.claim(KEY, RECIPIENT))  # the message came back
    disk_azurite.restart()
    await asyncio.wait_for(writing, 60)
    answer = await asyncio.wait_for(copy, 60)

    assert not isinstance(answer, Claim), "the copy would send again"
    assert answer.state == d.SENT
    stored = await row(store)
    assert (stored["state"], stored["attempts"], stored["activityId"]) == (
        d.SENT, 1, "1:answered")


async def test_a_claim_that_could_not_be_given_back_is_taken_back_uncounted(
        rt: Runtime, disk_azurite: Azurite) -> None:
    """Storage went down on the way to Teams: nothing was sent and the claim
    could not be given back. The same process takes it back when the message
    returns, without waiting out its lease and without counting an attempt
    that never reached Teams; while storage is down, no claim is handed out."""
    store = store_with_pauses(rt, [])
    claim = await store.claim(KEY, RECIPIENT)
    assert isinstance(claim, Claim)
    disk_azurite.stop()
    await store.release(claim, reason="storage-unavailable")  # can't be written: kept
    with pytest.raises(StorageUnavailable):
        await store.claim(KEY, RECIPIENT)
    disk_azurite.restart()

    again = await store.claim(KEY, RECIPIENT)
    assert isinstance(again, Claim), again
    assert again.attempts == 1
    await store.finish(again, d.SENT)
    assert (await row(store))["attempts"] == 1
