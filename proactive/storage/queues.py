"""Writing to the outbox and its poison queue, in the encoding host.json sets.

The Functions host reads queue messages as base64 unless host.json says
`"messageEncoding": "none"` (ours does, so any client can put plain JSON).
Whatever we enqueue ourselves (welcome messages, retries, the CLI) follows
the same setting, read from host.json.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from proactive.errors import Conflict, NotFound, StorageError
from proactive.storage import tables
from proactive.storage.faults import translated

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from azure.storage.queue.aio import QueueClient

    from proactive.contract import OutboxMessage
    from proactive.storage.seal import Seal

HOST_JSON = Path(__file__).resolve().parents[2] / "host.json"
MAX_QUEUE_MESSAGE = 64 * 1024  # Azure Storage's limit, after encoding
MAX_VISIBILITY_DELAY = 7 * 24 * 3600 - 1


@cache
def queue_settings(path: Path = HOST_JSON) -> dict[str, Any]:
    try:
        host = json.loads(path.read_text())
    except (OSError, ValueError):
        host = {}
    queues = host.get("extensions", {}).get("queues", {})
    return queues if isinstance(queues, dict) else {}


def message_encoding() -> str:
    return str(queue_settings().get("messageEncoding", "base64")).lower()


def max_dequeue_count() -> int:
    return int(queue_settings().get("maxDequeueCount", 5))


def encode(text: str, encoding: str | None = None) -> str:
    if (encoding or message_encoding()) == "base64":
        return base64.b64encode(text.encode()).decode()
    return text


async def ensure_queue(client: QueueClient) -> None:
    with contextlib.suppress(Conflict), translated():
        await client.create_queue()


def lenient_text(body: str) -> str:
    """The message text, also when a producer base64-encoded it while the host
    reads plain text (the Functions host default and ours differ; accepting
    both spares producers that trap)."""
    stripped = body.strip()
    if not stripped or stripped[0] in "{[":
        return body
    try:
        decoded = base64.b64decode(stripped, validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return body
    return decoded if decoded.lstrip().startswith("{") else body


def dumps(message: Mapping[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


class Outbox:
    def __init__(self, queue: QueueClient, poison: QueueClient, seal: Seal) -> None:
        self.queue = queue
        self.poison_queue = poison
        self.seal = seal

    async def put(self, message: OutboxMessage, *, delay: float = 0) -> str:
        """Enqueue a message of the app's: every internal enqueue (retries,
        parts, an audience's next page, the welcome and answers, scheduled
        occurrences, the HTTP API) comes through here, and a message carrying
        an app-only field is signed here (proactive/storage/seal.py)."""
        delay_s = min(MAX_VISIBILITY_DELAY, max(0, round(delay)))
        sent = await self.queue.send_message(encode(dumps(await self.seal.sign(
            message.to_json()))),
                                             visibility_timeout=delay_s or None)
        return str(sent.id)

    async def standby(self, message: OutboxMessage, *, delay: float) -> tuple[str, str]:
        """A copy of `message` that turns visible after `delay` unless taken
        back (`withdraw`): it stands in for a worker that dies holding the
        message, whose own copy the Functions host keeps invisible for ten
        minutes (README "Exactly once, as far as Teams allows"). Returns what
        `withdraw` needs: the copy's id and pop receipt. Signed like `put`."""
        sent = await self.queue.send_message(encode(dumps(await self.seal.sign(
            message.to_json()))), visibility_timeout=max(1, round(delay)))
        return str(sent.id), str(sent.pop_receipt)

    async def postpone(self, standby: tuple[str, str], *, delay: float) -> tuple[str, str]:
        """Push a standby copy's turn `delay` seconds out from now (its
        part is still running); returns its new pop receipt with its id.
        Raises NotFound if the copy is gone (it ran, or was taken back)."""
        with translated():
            updated = await self.queue.update_message(
                standby[0], standby[1], visibility_timeout=max(1, round(delay)))
        return standby[0], str(updated.pop_receipt)

    async def withdraw(self, standby: tuple[str, str]) -> None:
        """Delete a standby copy; gone already (it ran), or taken by a worker
        that runs it now (a new pop receipt: Queue Storage answers 400
        PopReceiptMismatch), is fine: that copy finds its users done."""
        try:
            with contextlib.suppress(NotFound), translated():
                await self.queue.delete_message(*standby)
        except StorageError as exc:
            if exc.code != "PopReceiptMismatch":
                raise

    async def poison(self, original: str, *, reason: str, detail: str,
                     message_id: str = "") -> None:
        """Park a message that must not be retried, with why. The original
        text is kept verbatim so it can be fixed and put back."""
        envelope = {"reason": reason, "detail": detail, "failedAt": tables.iso(),
                    "queueMessageId": message_id, "message": original}
        text = encode(dumps(envelope))
        if len(text.encode()) > MAX_QUEUE_MESSAGE:
            # The wrapped copy would not fit in a queue message: park the
            # original as it came (as the Functions host does); the reason is
            # in the log line.
            log.error("outbox message %s parked without its envelope (too large): %s: %s",
                      message_id, reason, detail)
            text = encode(original)
        await self.poison_queue.send_message(text)
