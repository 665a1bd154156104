"""What is stuck, for the HTTP API and the operations page: the poison queue
(list, requeue after a check, purge one) and the schedules still to come.

A storage queue shows its first 32 messages without hiding them (peek); the
page lists those. To requeue or purge one,
its id is looked for by receiving (hiding) batches; every other message
received on the way is put back in view before the answer, whatever happens
(so a lookup never makes the rest of the queue vanish for a while).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from proactive.api.problems import Problem, Reply

if TYPE_CHECKING:
    from azure.storage.queue.aio import QueueClient

    from proactive.runtime import Runtime

PEEK = 32  # the most a queue shows without hiding
HIDE_S = 30  # seconds a message received during a lookup stays hidden at most
MAX_LOOKED_AT = 5000  # messages received looking for one id before giving up


@dataclass(frozen=True)
class ParkedMessage:
    """One poison-queue message: the worker's envelope (reason, detail, the
    message as it came) or, when that would not fit, the bare original."""

    id: str
    inserted_at: str
    original: str
    reason: str = ""
    detail: str = ""
    failed_at: str = ""

    @classmethod
    def from_queue(cls, item: Any) -> ParkedMessage:
        from proactive.storage.queues import lenient_text

        text = lenient_text(str(item.content))
        envelope: Any = None
        with contextlib.suppress(ValueError, RecursionError):
            envelope = json.loads(text)
        inserted = item.inserted_on.isoformat() if item.inserted_on else ""
        if isinstance(envelope, dict) and isinstance(envelope.get("message"), str):
            return cls(str(item.id), inserted, envelope["message"],
                       str(envelope.get("reason", "")), str(envelope.get("detail", "")),
                       str(envelope.get("failedAt", "")))
        return cls(str(item.id), inserted, text, reason="unwrapped",
                   detail="parked as it came (too large for an envelope)")

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "insertedAt": self.inserted_at, "reason": self.reason,
                "detail": self.detail, "failedAt": self.failed_at, "message": self.original}


async def poison(rt: Runtime) -> Reply:
    """The first PEEK parked messages and how many that is (`more`: maybe others
    behind them; `python -m proactive poison count` counts them all). Peeked
    only: the same queue operation as the worker's reads, nothing hidden."""
    from proactive.errors import NotFound

    try:
        items = [ParkedMessage.from_queue(m).to_json()
                 for m in await rt.outbox.poison_queue.peek_messages(max_messages=PEEK)]
    except NotFound:
        items = []
    return Reply.json(200, {"count": len(items), "more": len(items) == PEEK, "items": items})


async def requeue(rt: Runtime, message_id: str, body: bytes) -> Reply:
    """Back on the outbox: the message as it came, or the fixed one in the body;
    either must pass the worker's checks first (an unfixed one would only be
    parked again)."""
    from proactive.contract import InvalidMessage, parse_message, refuse_app_only
    from proactive.delivering.render import checked
    from proactive.storage.queues import encode

    fixed = body.decode("utf-8", errors="replace") if body.strip() else None
    queue = rt.outbox.poison_queue
    async with _found(queue, message_id) as item:
        text = fixed if fixed is not None else ParkedMessage.from_queue(item).original
        try:
            if fixed is not None:  # an edit is the operator's: no app-only fields
                data = None
                with contextlib.suppress(ValueError, RecursionError):
                    data = json.loads(text)
                refuse_app_only(data)
            checked(parse_message(text, default_key="check"), rt.settings.max_activity_bytes)
        except InvalidMessage as exc:
            raise Problem(400, exc.reason, f"the message is still invalid: {exc.detail}") \
                from None
        await rt.outbox.queue.send_message(encode(text))
        await queue.delete_message(item)  # after the copy is safely on the outbox
    return Reply.json(200, {"requeued": message_id})


async def purge(rt: Runtime, message_id: str) -> Reply:
    queue = rt.outbox.poison_queue
    async with _found(queue, message_id) as item:
        await queue.delete_message(item)
    return Reply.json(200, {"purged": message_id})


@contextlib.asynccontextmanager
async def _found(queue: QueueClient, message_id: str) -> Any:
    """The message with this id, received (hidden); every message received
    on the way, and this one unless the caller deleted it, back in view after."""
    from proactive.errors import NotFound

    received: list[Any] = []
    target = None
    try:
        while target is None and len(received) < MAX_LOOKED_AT:
            try:
                batch = [m async for m in queue.receive_messages(
                    messages_per_page=PEEK, max_messages=PEEK, visibility_timeout=HIDE_S)]
            except NotFound:
                batch = []
            if not batch:
                break
            received.extend(batch)
            target = next((m for m in batch if m.id == message_id), None)
        if target is None:
            raise Problem(404, "unknown-message", f"no parked message has id {message_id!r}")
        yield target
    finally:
        for item in received:
            with contextlib.suppress(NotFound):  # deleted: nothing to show
                await queue.update_message(item, visibility_timeout=0)


async def schedules(rt: Runtime) -> Reply:
    from proactive.scheduling import list_items

    items = await list_items(rt.schedules_table)
    return Reply.json(200, {"items": items})
