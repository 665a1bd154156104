"""`python -m proactive poison ...`: what is parked, and putting it right.

    poison [list] [--limit N]   the parked messages with their reasons (past 32)
    poison count                how many are parked
    poison show ID              one, with the original message as it came
    poison requeue ID [--file F] back on the outbox (F: the fixed message), after a check
    poison purge [ID]           delete one, or all

A storage queue can only *peek* at its first 32 messages; to page further the
CLI receives them (hidden for PAGE_HIDE seconds) and puts each back in view
when done; if the CLI is killed meanwhile they come back by themselves, as
nothing else reads the poison queue. Requeue and purge ask first, or need
--yes in a script.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from proactive.cli.checks import ask, interactive
from proactive.cli.fail import CliError
from proactive.config import Settings
from proactive.storage import credentials

if TYPE_CHECKING:
    from azure.storage.queue.aio import QueueClient

    from proactive.storage.credentials import StorageTokens

PAGE = 32  # the most a storage queue hands out per call
PAGE_HIDE = 30  # seconds a listed message stays hidden (receive, not peek, past 32)
MAX_COUNT = 10_000  # `count` says at most this (a poison queue that long needs a look anyway)
Runner = Callable[[Settings, Callable[["StorageTokens | None"], Awaitable[Any]]], Any]


def add_arguments(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("action", nargs="?", default="list",
                     choices=("list", "count", "show", "requeue", "purge"),
                     help="list (default), count, show ID, requeue ID, purge [ID]")
    cmd.add_argument("id", nargs="?", default="",
                     help="the parked message's id (the 'id' that list shows)")
    cmd.add_argument("--limit", type=int, default=PAGE,
                     help=f"list: at most this many (default {PAGE}; more pages past {PAGE})")
    cmd.add_argument("--file", metavar="PATH",
                     help="requeue: the fixed message (contract JSON) instead of the original")
    cmd.add_argument("--yes", action="store_true",
                     help="requeue / purge without asking (for scripts)")


def _entry(item: Any) -> dict[str, Any]:
    try:
        body: Any = json.loads(item.content)
    except ValueError:
        body = item.content
    return {"id": item.id, "insertedAt": item.inserted_on, "parked": body}


async def _list(queue: QueueClient, limit: int) -> list[dict[str, Any]]:
    if limit <= PAGE:
        return [_entry(m) for m in await queue.peek_messages(max_messages=max(1, limit))]
    received: list[Any] = []
    try:
        while len(received) < limit:
            batch = [m async for m in queue.receive_messages(
                messages_per_page=PAGE, max_messages=min(PAGE, limit - len(received)),
                visibility_timeout=PAGE_HIDE)]
            if not batch:
                break
            received.extend(batch)
    finally:
        await _unhide(queue, received)
    return [_entry(m) for m in received]


async def _unhide(queue: QueueClient, items: list[Any]) -> None:
    """Back in view at once: the hiding was only to page past 32."""
    for item in items:
        await queue.update_message(item, visibility_timeout=0)


async def _find(queue: QueueClient, message_id: str) -> Any:
    """Receive (hide) until the message with this id turns up; every other
    message received on the way, the rest of the match's batch included, is
    back in view before this returns (else `count` drops and another id
    "doesn't exist" for PAGE_HIDE seconds)."""
    others: list[Any] = []
    try:
        while True:
            batch = [m async for m in queue.receive_messages(
                messages_per_page=PAGE, max_messages=PAGE, visibility_timeout=PAGE_HIDE)]
            match = next((item for item in batch if item.id == message_id), None)
            others.extend(item for item in batch if item is not match)
            if match is not None:
                return match
            if not batch:
                raise CliError(f"no parked message has id {message_id!r}",
                               "see `python -m proactive poison list`")
    finally:
        await _unhide(queue, others)


def _original(item: Any) -> str:
    """The message as it came: the envelope's `message`, or the text itself
    (parked without an envelope when too large)."""
    try:
        envelope = json.loads(item.content)
    except ValueError:
        return str(item.content)
    if isinstance(envelope, dict) and isinstance(envelope.get("message"), str):
        return str(envelope["message"])
    return str(item.content)


def _confirm(args: argparse.Namespace, question: str) -> None:
    if args.yes:
        return
    if interactive() and ask(question):
        return
    raise CliError(f"{question.rstrip('?')}: not confirmed", "add --yes to do it without asking")


def command(args: argparse.Namespace, settings: Settings, run: Runner) -> int:
    if args.action in ("show", "requeue") and not args.id:
        raise CliError(f"poison {args.action} needs the message's id",
                       "see `python -m proactive poison list`")
    if args.action == "requeue":
        fixed = Path(args.file).read_text() if args.file else None
        if fixed is not None:
            _valid(fixed, settings, edited=True)
        _confirm(args, f"put message {args.id} back on {settings.outbox_queue}?")
    if args.action == "purge":
        what = f"message {args.id}" if args.id else "EVERY parked message"
        _confirm(args, f"delete {what} from {settings.poison_queue}?")

    async def work(tokens: StorageTokens | None) -> Any:
        from proactive.errors import NotFound

        async with credentials.queue_client(settings, settings.poison_queue, tokens) as queue:
            try:
                return await _act(args, settings, tokens, queue)
            except NotFound:
                return None if args.action in ("list", "count") else _missing(args)

    result = run(settings, work)
    if args.action == "list":
        print(json.dumps(result or [], indent=2, default=str, ensure_ascii=False))
    elif args.action == "count":
        print(json.dumps({"queue": settings.poison_queue, "count": result or 0}))
    else:
        print(json.dumps(result, indent=2, default=str, ensure_ascii=False))
    return 0


def _missing(args: argparse.Namespace) -> None:
    raise CliError(f"no parked message has id {args.id!r}" if args.id else "nothing is parked")


def _valid(text: str, settings: Settings, *, edited: bool) -> None:
    from proactive.contract import InvalidMessage, parse_message, refuse_app_only
    from proactive.delivering.render import checked

    try:
        if edited:  # a fixed message is the operator's: only the app's own may carry these
            data = None
            with contextlib.suppress(ValueError, RecursionError):  # parse_message says why
                data = json.loads(text)
            refuse_app_only(data)
        checked(parse_message(text, default_key="check"), settings.max_activity_bytes)
    except InvalidMessage as exc:
        raise CliError(f"the message is still invalid ({exc.reason}): {exc.detail}",
                       "fix it and requeue with --file") from None


async def _act(args: argparse.Namespace, settings: Settings, tokens: StorageTokens | None,
               queue: QueueClient) -> Any:
    if args.action == "list":
        return await _list(queue, args.limit)
    if args.action == "count":
        # Counted by paging, not from the queue's metadata: the same operations
        # (and roles) as list, and exact rather than approximate.
        return len(await _list(queue, MAX_COUNT))
    if args.action == "purge" and not args.id:
        while batch := [m async for m in queue.receive_messages(
                messages_per_page=PAGE, max_messages=PAGE, visibility_timeout=PAGE_HIDE)]:
            for item in batch:
                await queue.delete_message(item)
        return {"purged": settings.poison_queue}
    item = await _find(queue, args.id)
    if args.action == "show":
        await _unhide(queue, [item])
        return {**_entry(item), "original": _original(item)}
    if args.action == "purge":
        await queue.delete_message(item)
        return {"purged": args.id}
    text = Path(args.file).read_text() if args.file else _original(item)
    try:
        # an unfixed message would only be parked again
        _valid(text, settings, edited=bool(args.file))
    except CliError:
        await _unhide(queue, [item])
        raise
    from proactive.storage.queues import encode, ensure_queue

    async with credentials.queue_client(settings, settings.outbox_queue, tokens) as outbox:
        await ensure_queue(outbox)
        await outbox.send_message(encode(text))
    await queue.delete_message(item)  # after the copy is safely on the outbox
    return {"requeued": args.id, "queue": settings.outbox_queue}
