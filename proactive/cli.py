"""`python -m proactive ...`: put messages on the outbox, read their status,
and run the local tools.

    send     put a send on the outbox queue (prints its key)
    update   put an update of an earlier message (by key)
    delete   put a delete of an earlier message (by key)
    cancel   put a cancel of a many-user or scheduled send (by key)
    schedules list scheduled sends (all still to come, or one key's)
    status   show the delivery records of a key
    progress show the counters of a many-user send
    poison   list what is parked in the poison queue, with reasons
    host     run function_app.py locally (Functions host semantics)
    emulator run the Connector emulator
    dev      start Azurite, the app and the Agents Playground together
    package  build and check the Teams app package (appPackage/ -> a zip to upload)

The queue commands only write the queue message; the function app does the
rest. Settings come from the environment, then from local.settings.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from proactive.config import Settings
from proactive.contract import VERSION, InvalidMessage, parse_message


def load_local_settings(path: Path = Path("local.settings.json")) -> None:
    """Like the Functions host: Values into the environment, without
    overriding what is already set."""
    try:
        values = json.loads(path.read_text()).get("Values", {})
    except (OSError, ValueError):
        return
    for name, value in values.items():
        os.environ.setdefault(name, str(value))


def _target(args: argparse.Namespace) -> dict[str, Any]:
    target: dict[str, Any] = {}
    if args.to:
        target["user"] = args.to
    if args.users:
        text = Path(args.users[1:]).read_text() if args.users.startswith("@") else args.users
        target["users"] = [u.strip() for u in text.replace(",", "\n").splitlines() if u.strip()]
    if args.all_users:
        target["allUsers"] = True
    if args.conversation:
        target["conversation"] = args.conversation
    if args.channel:
        target["channel"] = args.channel
        if args.team:
            target["team"] = args.team
        if args.reply_to:
            target["replyTo"] = args.reply_to
    if args.tenant:
        target["tenant"] = args.tenant
    return target


def build_message(args: argparse.Namespace) -> dict[str, Any]:
    message: dict[str, Any] = {"version": VERSION, "op": args.command}
    message["key"] = args.key or (f"cli-{uuid.uuid4().hex[:12]}" if args.command == "send" else "")
    if args.command == "send":
        message["to"] = _target(args)
    if args.command in ("send", "update"):
        if args.text:
            message["text"] = args.text
        if args.card:
            message["card"] = json.loads(Path(args.card).read_text())
        if args.summary:
            message["summary"] = args.summary
        schedule = _schedule(args)
        if schedule:
            message["schedule"] = schedule
    return message


def _schedule(args: argparse.Namespace) -> dict[str, Any]:
    """The schedule object from --at / --local / --rrule / --cron and friends."""
    schedule: dict[str, Any] = {}
    for flag in ("at", "local", "rrule", "cron", "start", "timezone", "until", "count"):
        value = getattr(args, flag, None)
        if value is not None:
            schedule[flag] = value
    return schedule


def _check_schedule(settings: Settings, message: dict[str, Any]) -> None:
    """Refuse a schedule with nothing left to fire (the worker would park it)."""
    from proactive.scheduling.spec import Plan, ScheduleError, parse_spec

    spec = parse_spec(message["schedule"])
    zone = spec.timezone or settings.default_timezone  # the recipient's is known later
    if Plan(spec, zone).first(datetime.now(UTC)) is None:
        raise ScheduleError("the schedule has no occurrence from now on")


async def _schedules(settings: Settings, key: str, active_only: bool) -> list[dict[str, Any]]:
    from azure.core.exceptions import ResourceNotFoundError
    from azure.data.tables.aio import TableClient

    from proactive.runtime import SCHEDULES_TABLE
    from proactive.scheduling.timer import list_items

    name = settings.table_name(SCHEDULES_TABLE)
    async with TableClient.from_connection_string(settings.storage_connection, name) as table:
        try:
            return await list_items(table, key, active_only=active_only)
        except ResourceNotFoundError:
            return []


async def _enqueue(settings: Settings, message: dict[str, Any]) -> None:
    from azure.storage.queue.aio import QueueClient

    from proactive.storage.queues import dumps, encode, ensure_queue

    async with QueueClient.from_connection_string(settings.storage_connection,
                                                  settings.outbox_queue) as queue:
        await ensure_queue(queue)
        await queue.send_message(encode(dumps(message)))


async def _status(settings: Settings, key: str) -> list[dict[str, Any]]:
    from azure.core.exceptions import ResourceNotFoundError
    from azure.data.tables.aio import TableClient

    from proactive.runtime import DELIVERIES_TABLE
    from proactive.storage.tables import safe_key

    name = settings.table_name(DELIVERIES_TABLE)
    rows: list[dict[str, Any]] = []
    async with TableClient.from_connection_string(settings.storage_connection, name) as table:
        try:
            async for entity in table.query_entities("PartitionKey eq @pk",
                                                     parameters={"pk": safe_key(key)}):
                rows.append({k: v for k, v in entity.items()
                             if k not in ("PartitionKey", "RowKey")})
        except ResourceNotFoundError:
            pass
    return rows


async def _progress(settings: Settings, key: str) -> dict[str, Any] | None:
    from azure.core.exceptions import ResourceNotFoundError
    from azure.data.tables.aio import TableClient

    from proactive.runtime import SENDS_TABLE
    from proactive.storage.progress import Campaigns

    name = settings.table_name(SENDS_TABLE)
    async with TableClient.from_connection_string(settings.storage_connection, name) as table:
        try:
            return await Campaigns(table).progress(key)
        except ResourceNotFoundError:
            return None


async def _poison(settings: Settings, limit: int) -> list[Any]:
    from azure.core.exceptions import ResourceNotFoundError
    from azure.storage.queue.aio import QueueClient

    out: list[Any] = []
    async with QueueClient.from_connection_string(settings.storage_connection,
                                                  settings.poison_queue) as queue:
        try:
            for item in await queue.peek_messages(max_messages=min(32, limit)):
                text = item.content
                try:
                    out.append(json.loads(text))
                except ValueError:
                    out.append(text)
        except ResourceNotFoundError:
            pass
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m proactive", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("send", "update", "delete", "cancel"):
        cmd = sub.add_parser(name, help=f"put a '{name}' message on the outbox queue")
        cmd.add_argument("--key", required=name != "send",
                         help="the message's key (send: default a new random key)")
        if name == "send":
            who = cmd.add_argument_group("recipient (one of --to, --users, --all-users, "
                                         "--conversation, --channel)")
            who.add_argument("--to", help="user's Azure AD object id")
            who.add_argument("--users", help="several users: comma-separated AAD object ids, "
                                             "or @FILE with one per line")
            who.add_argument("--all-users", action="store_true",
                             help="every user of the tenant with a stored personal chat")
            who.add_argument("--conversation", help="a stored conversation id")
            who.add_argument("--channel", help="channel id (new thread, or --reply-to)")
            who.add_argument("--team", help="the channel's team id")
            who.add_argument("--reply-to", help="root message id of the thread to reply in")
            who.add_argument("--tenant", help="tenant id (optional)")
        if name in ("send", "update"):
            cmd.add_argument("--text", help="markdown text")
            cmd.add_argument("--card", help="path of an Adaptive Card JSON file")
            cmd.add_argument("--summary", help="notification summary")
            when = cmd.add_argument_group(
                "schedule (README 'Scheduling'; on update: a new time for a scheduled key)")
            when.add_argument("--at", help="once, at an instant: 2026-12-01T09:00:00Z")
            when.add_argument("--local", help="once, at a wall time: 2026-12-01T09:00 "
                                              "(in --timezone, else the recipient's)")
            when.add_argument("--rrule", help="recurring: FREQ=WEEKLY;BYDAY=MO;BYHOUR=9;"
                                              "BYMINUTE=0")
            when.add_argument("--cron", help="recurring: '0 9 * * 1-5'")
            when.add_argument("--start", help="first wall time of --rrule / --cron")
            when.add_argument("--timezone", help="IANA zone (default: the recipient's)")
            when.add_argument("--until", help="last time of --rrule / --cron")
            when.add_argument("--count", type=int, help="occurrences of --rrule / --cron")
    schedules = sub.add_parser("schedules", help="list scheduled sends")
    schedules.add_argument("--key", default="", help="one key (or an occurrence key)")
    schedules.add_argument("--all", action="store_true",
                           help="also those done or cancelled (with --key they always show)")
    status = sub.add_parser("status", help="show the delivery records of a key")
    status.add_argument("--key", required=True)
    progress = sub.add_parser("progress", help="counters of a many-user send")
    progress.add_argument("--key", required=True)
    poison = sub.add_parser("poison", help="list messages parked in the poison queue")
    poison.add_argument("--limit", type=int, default=32)
    sub.add_parser("host", help="run function_app.py locally", add_help=False)
    sub.add_parser("emulator", help="run the Connector emulator", add_help=False)
    sub.add_parser("dev", help="start Azurite, the app and the Playground", add_help=False)
    sub.add_parser("package", help="build and check the Teams app package", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("host", "emulator", "dev", "package"):
        return _run_tool(argv[0], argv[1:])
    args = _parser().parse_args(argv)
    load_local_settings()
    settings = Settings.from_env()
    if args.command == "status":
        rows = asyncio.run(_status(settings, args.key))
        print(json.dumps(rows, indent=2, default=str))
        return 0 if rows else 1
    if args.command == "progress":
        found = asyncio.run(_progress(settings, args.key))
        print(json.dumps(found, indent=2, default=str))
        return 0 if found else 1
    if args.command == "poison":
        print(json.dumps(asyncio.run(_poison(settings, args.limit)), indent=2))
        return 0
    if args.command == "schedules":
        items = asyncio.run(_schedules(settings, args.key, not args.all))
        print(json.dumps(items, indent=2, default=str, ensure_ascii=False))
        return 0 if items or not args.key else 1
    message = build_message(args)
    try:  # refuse here what the worker would park in the poison queue
        parse_message(json.dumps(message), max_activity_bytes=settings.max_activity_bytes)
        if "schedule" in message:
            _check_schedule(settings, message)
    except (InvalidMessage, ValueError) as exc:  # ValueError: ScheduleError
        print(f"error: {getattr(exc, 'detail', exc)}", file=sys.stderr)
        return 2
    from proactive.storage.queues import MAX_QUEUE_MESSAGE, dumps, encode

    if len(encode(dumps(message)).encode()) > MAX_QUEUE_MESSAGE:
        print("error: the message is over the 64 KB a storage queue message can hold",
              file=sys.stderr)
        return 2
    asyncio.run(_enqueue(settings, message))
    print(json.dumps({"queued": settings.outbox_queue, "op": message["op"],
                      "key": message["key"]}))
    return 0


def _run_tool(name: str, argv: list[str]) -> int:
    """Hand over to the dev tools package, which lives beside the product and is
    never deployed (.funcignore)."""
    try:
        from proactive_devtools import run_tool
    except ImportError:
        print(f"error: 'python -m proactive {name}' is a development tool; it runs from a "
              "clone of the repository (proactive_devtools/), not from a deployed app",
              file=sys.stderr)
        return 2
    return run_tool(name, argv)
