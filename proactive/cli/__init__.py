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
rest. Settings come from the environment, then from local.settings.json: a
connection string (AzureWebJobsStorage) or the identity-based AzureWebJobsStorage__*
settings the deployment uses. `--account NAME` reaches the storage account NAME
with your own sign-in (`az login`; DefaultAzureCredential) instead.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from proactive.config import ConfigError, Settings, storage_problems
from proactive.contract import VERSION, InvalidMessage, parse_message
from proactive.storage import credentials

if TYPE_CHECKING:
    from proactive.storage.credentials import StorageTokens

T = TypeVar("T")


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
    from proactive.scheduling import Plan, ScheduleError, parse_spec

    spec = parse_spec(message["schedule"])
    zone = spec.timezone or settings.default_timezone  # the recipient's is known later
    if Plan(spec, zone).first(datetime.now(UTC)) is None:
        raise ScheduleError("the schedule has no occurrence from now on")


async def _schedules(settings: Settings, tokens: StorageTokens | None, key: str,
                     active_only: bool) -> list[dict[str, Any]]:
    from azure.core.exceptions import ResourceNotFoundError

    from proactive.runtime import SCHEDULES_TABLE
    from proactive.scheduling import list_items

    name = settings.table_name(SCHEDULES_TABLE)
    async with credentials.table_client(settings, name, tokens) as table:
        try:
            return await list_items(table, key, active_only=active_only)
        except ResourceNotFoundError:
            return []


async def _enqueue(settings: Settings, tokens: StorageTokens | None,
                   message: dict[str, Any]) -> None:
    from proactive.storage.queues import dumps, encode, ensure_queue

    async with credentials.queue_client(settings, settings.outbox_queue, tokens) as queue:
        await ensure_queue(queue)
        await queue.send_message(encode(dumps(message)))


async def _status(settings: Settings, tokens: StorageTokens | None,
                  key: str) -> list[dict[str, Any]]:
    from azure.core.exceptions import ResourceNotFoundError

    from proactive.runtime import DELIVERIES_TABLE
    from proactive.storage.tables import safe_key

    name = settings.table_name(DELIVERIES_TABLE)
    rows: list[dict[str, Any]] = []
    async with credentials.table_client(settings, name, tokens) as table:
        try:
            async for entity in table.query_entities("PartitionKey eq @pk",
                                                     parameters={"pk": safe_key(key)}):
                rows.append({k: v for k, v in entity.items()
                             if k not in ("PartitionKey", "RowKey")})
        except ResourceNotFoundError:
            pass
    return rows


async def _progress(settings: Settings, tokens: StorageTokens | None,
                    key: str) -> dict[str, Any] | None:
    from azure.core.exceptions import ResourceNotFoundError

    from proactive.runtime import SENDS_TABLE
    from proactive.storage.progress import Campaigns

    name = settings.table_name(SENDS_TABLE)
    async with credentials.table_client(settings, name, tokens) as table:
        try:
            return await Campaigns(table).progress(key)
        except ResourceNotFoundError:
            return None


async def _poison(settings: Settings, tokens: StorageTokens | None, limit: int) -> list[Any]:
    from azure.core.exceptions import ResourceNotFoundError

    out: list[Any] = []
    async with credentials.queue_client(settings, settings.poison_queue, tokens) as queue:
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
    storage = argparse.ArgumentParser(add_help=False)
    storage.add_argument("--account", metavar="NAME",
                         help="the storage account to use, signed in as you (az login); "
                              "default: the settings' storage")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("send", "update", "delete", "cancel"):
        cmd = sub.add_parser(name, help=f"put a '{name}' message on the outbox queue",
                             parents=[storage])
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
    schedules = sub.add_parser("schedules", help="list scheduled sends", parents=[storage])
    schedules.add_argument("--key", default="", help="one key (or an occurrence key)")
    schedules.add_argument("--all", action="store_true",
                           help="also those done or cancelled (with --key they always show)")
    status = sub.add_parser("status", help="show the delivery records of a key",
                            parents=[storage])
    status.add_argument("--key", required=True)
    progress = sub.add_parser("progress", help="counters of a many-user send", parents=[storage])
    progress.add_argument("--key", required=True)
    poison = sub.add_parser("poison", help="list messages parked in the poison queue",
                            parents=[storage])
    poison.add_argument("--limit", type=int, default=32)
    sub.add_parser("host", help="run function_app.py locally", add_help=False)
    sub.add_parser("emulator", help="run the Connector emulator", add_help=False)
    sub.add_parser("dev", help="start Azurite, the app and the Playground", add_help=False)
    sub.add_parser("package", help="build and check the Teams app package", add_help=False)
    return parser


def storage_settings(settings: Settings, account: str | None) -> Settings:
    """`settings`, or with `--account NAME`: that account by the person's own
    sign-in (DefaultAzureCredential), whatever the settings say."""
    if not account:
        return settings
    return dataclasses.replace(settings, storage_connection="", storage_credential="",
                               storage_client_id="", storage_account=account,
                               queue_service_uri="", table_service_uri="")


class StorageRefused(Exception):
    """Storage could not be reached as configured (no token, no role, no network)."""


def _run(settings: Settings, work: Callable[[StorageTokens | None], Awaitable[T]]) -> T:
    """Run `work` with the process's storage token source (identity-based
    storage: one credential for every client), closed at the end."""
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ServiceRequestError,
    )

    async def go() -> T:
        tokens = credentials.storage_tokens(settings)
        try:
            if tokens is not None:
                # Signed in before the first storage call: the SDKs retry a token
                # failure like a network one (for over a minute).
                await tokens.token()
            return await work(tokens)
        finally:
            if tokens is not None:
                await tokens.close()

    where = settings.storage_url("queue") or "storage"
    # The CLI says what went wrong in one line; azure-identity and the token cache
    # would log it again, with tracebacks, on stderr.
    quiet = [logging.getLogger(name) for name in ("azure", "proactive.storage.credentials")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.CRITICAL)
    try:
        return asyncio.run(go())
    except ClientAuthenticationError as exc:
        first = (str(exc).splitlines() or [""])[0][:300]
        hint = " (sign in with 'az login')" if settings.storage_by_identity else ""
        raise StorageRefused(f"could not sign in to {where}{hint}: {first}") from None
    except HttpResponseError as exc:
        if exc.status_code not in (401, 403):
            raise
        code = getattr(exc, "error_code", None) or exc.reason
        raise StorageRefused(
            f"{where} refused the request ({exc.status_code} {code}): your identity needs "
            "the Storage Queue Data Contributor and Storage Table Data Contributor roles on "
            "the account") from None
    except ServiceRequestError as exc:
        raise StorageRefused(f"could not reach {where}: {str(exc)[:200]}") from None
    finally:
        for logger, level in zip(quiet, levels, strict=True):
            logger.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("host", "emulator", "dev", "package"):
        return _run_tool(argv[0], argv[1:])
    args = _parser().parse_args(argv)
    load_local_settings()
    try:
        settings = storage_settings(Settings.from_env(), args.account)
        if problems := storage_problems(settings):
            raise ConfigError(*problems)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        return _command(args, settings)
    except StorageRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _command(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "status":
        rows = _run(settings, lambda t: _status(settings, t, args.key))
        print(json.dumps(rows, indent=2, default=str))
        return 0 if rows else 1
    if args.command == "progress":
        found = _run(settings, lambda t: _progress(settings, t, args.key))
        print(json.dumps(found, indent=2, default=str))
        return 0 if found else 1
    if args.command == "poison":
        print(json.dumps(_run(settings, lambda t: _poison(settings, t, args.limit)), indent=2))
        return 0
    if args.command == "schedules":
        items = _run(settings, lambda t: _schedules(settings, t, args.key, not args.all))
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
    _run(settings, lambda t: _enqueue(settings, t, message))
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
