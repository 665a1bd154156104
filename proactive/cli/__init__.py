"""`python -m proactive ...`: put messages on the outbox, read their status,
and run the local tools.

    send     put a send on the outbox queue (prints its key)
    update   put an update of an earlier message (by key)
    delete   put a delete of an earlier message (by key)
    cancel   put a cancel of a many-user or scheduled send (by key)
    install  pre-install the app for an audience through Graph (cli/install.py)
    schedules list scheduled sends (all still to come, or one key's)
    status   show the delivery records of a key
    progress show the counters of a many-user send
    poison   list what is parked in the poison queue, with reasons
    report, reach, optout, optin   reports and opt-outs (cli/admin.py)
    host     run function_app.py locally (Functions host semantics)
    emulator run the Connector emulator
    dev      start Azurite, the app and the Agents Playground together
    package  build and check the Teams app package (appPackage/ -> a zip to upload)
    doctor   after `azd up`: is every part of the deployment working? (cli/doctor.py)

The queue commands only write the queue message; the function app does the
rest. Settings come from the environment, then from local.settings.json: a
connection string (AzureWebJobsStorage) or the identity-based AzureWebJobsStorage__*
settings the deployment uses. `--account NAME` reaches the storage account NAME
with your own sign-in (`az login`; DefaultAzureCredential) instead.

Modules: this one parses and routes; fail.py (one-line errors, exit 2), storage.py (settings,
queue and table reads), checks.py (warnings before enqueueing), live.py (--watch), admin.py,
install.py, poison.py, doctor.py + doctor_checks.py (their commands), azd.py, localdev.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from proactive.cli import admin, doctor, install
from proactive.cli.fail import (
    TARGET_FLAGS,
    CliError,
    OneLineParser,
    from_file,
    guarded,
    in_flags,
    json_file,
    parse,
)
from proactive.cli.live import add_watch
from proactive.cli.storage import (
    StorageRefused,
    _enqueue,
    _known_users,
    _progress_view,
    _run,
    _schedules,
    _status,
    load_local_settings,
    storage_settings,
)
from proactive.config import Settings, storage_problems
from proactive.contract import OnUnknown, Op, OutboxMessage, TargetKind, build
from proactive.errors import ConfigError, InvalidMessage

if TYPE_CHECKING:
    from proactive.scheduling import Spec

__all__ = ["StorageRefused", "build_message", "load_local_settings", "main", "storage_settings"]


def _target(args: argparse.Namespace) -> dict[str, Any]:
    from proactive.users_file import read_users_file

    target: dict[str, Any] = {}
    if args.to:
        target["user"] = args.to
    if args.users:
        text = (from_file("--users", args.users[1:], Path.read_text)
                if args.users.startswith("@") else args.users)
        target["users"] = [u.strip() for u in text.replace(",", "\n").splitlines() if u.strip()]
    if args.users_file:
        target["users"] = from_file("--users-file", args.users_file, read_users_file)
    if args.all_users:
        target["allUsers"] = True
    if args.team and not args.channel:  # a team alone: its members
        target["teamMembers"] = args.team
    if args.group:
        target["group"] = args.group
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
    kinds = [k for k in TARGET_FLAGS if k in target]
    if len(kinds) != 1:
        named = ", ".join(TARGET_FLAGS[k] for k in kinds)
        raise CliError("give exactly one recipient: --to, --users, --users-file, --all-users, "
                       "--group, --team, --conversation or --channel"
                       + (f" (got {named})" if named else ""))
    return target


def build_message(args: argparse.Namespace) -> OutboxMessage:
    """The message these flags ask for; CliError, or InvalidMessage naming a
    contract field (`in_flags` tells it as a flag)."""
    message: dict[str, Any] = {}
    message["key"] = args.key or (f"cli-{uuid.uuid4().hex[:12]}" if args.command == "send" else "")
    if args.command == "send":
        message["to"] = _target(args)
        if args.on_unknown != "resend":
            message["onUnknown"] = args.on_unknown
    if args.command == "send" and not (args.text or args.card or args.notification):
        raise CliError("--text, --card or --notification is required (what to send)")
    if args.command in ("send", "update"):
        if args.text:
            message["text"] = args.text
        if args.card:
            message["card"] = json_file("--card", args.card)
        if args.notification:
            message["notification"] = json_file("--notification", args.notification)
        if args.topic:
            message["topic"] = args.topic
        if args.summary:
            message["summary"] = args.summary
        if getattr(args, "ack", None) is not None:  # --ack, or --ack LABEL
            message["ack"] = {"label": args.ack} if args.ack else True
        schedule = _schedule(args)
        if schedule:
            message["schedule"] = schedule
    return build(Op(args.command), **message)


def _schedule(args: argparse.Namespace) -> dict[str, Any]:
    """The schedule object from --at / --local / --rrule / --cron and friends."""
    schedule: dict[str, Any] = {}
    for flag in ("at", "local", "rrule", "cron", "start", "timezone", "until", "count"):
        value = getattr(args, flag, None)
        if value is not None:
            schedule[flag] = value
    return schedule


def _check_schedule(settings: Settings, spec: Spec) -> None:
    """Refuse a schedule with nothing left to fire (the worker would park it)."""
    from proactive.scheduling import Plan, ScheduleError

    zone = spec.timezone or settings.default_timezone  # the recipient's is known later
    if Plan(spec, zone).first(datetime.now(UTC)) is None:
        raise ScheduleError("the schedule has no occurrence from now on")


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m proactive", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    storage = OneLineParser(add_help=False)
    storage.add_argument("--account", metavar="NAME",
                         help="the storage account to use, signed in as you (az login); "
                              "default: the settings' storage")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("send", "update", "delete", "cancel"):
        cmd = sub.add_parser(name, help=f"put a '{name}' message on the outbox queue",
                             parents=[storage])
        cmd.add_argument("--key", required=name != "send",
                         help="the message's key, to follow it with status / progress and to "
                                  "update, delete or cancel it later (send: default a new "
                                  "random key)")
        if name == "send":
            who = cmd.add_argument_group("recipient (one of --to, --users, --all-users, "
                                         "--conversation, --channel)")
            who.add_argument("--to", help="user's Azure AD object id")
            who.add_argument("--users", help="several users: comma-separated AAD object ids, "
                                             "or @FILE with one per line")
            who.add_argument("--users-file", metavar="PATH", help="users: CSV with an id/upn/"
                             "email column, or one per line")
            who.add_argument("--group", help="an Entra ID group's members (through Graph)")
            who.add_argument("--all-users", action="store_true",
                             help="every user of the tenant with a stored personal chat")
            who.add_argument("--conversation", help="a stored conversation id")
            who.add_argument("--channel", help="channel id (new thread, or --reply-to)")
            who.add_argument("--team", help="the channel's team id (alone: its members)")
            who.add_argument("--reply-to", help="root message id of the thread to reply in")
            who.add_argument("--tenant", help="tenant id (optional; --all-users: default the "
                                              "app's own tenant, locally the Agents "
                                              "Playground's)")
            cmd.add_argument("--force", action="store_true",
                             help="send even what looks like a mistake (--at in the past, a "
                                  "--to that is not a GUID, --all-users to a tenant with no "
                                  "known users); without it the CLI asks, or refuses when not "
                                  "at a terminal")
            cmd.add_argument("--on-unknown", choices=list(OnUnknown), default="resend",
                             help="a recipient whose attempt's outcome is unknown (a worker "
                                  "died mid-call, a lost answer): resend = at least once "
                                  "(default), skip = at most once (recorded unknown)")
            add_watch(cmd, "then show the send's progress live until it is done")
        if name in ("send", "update"):
            cmd.add_argument("--text", help="the message, as markdown")
            cmd.add_argument("--card", help="path of an Adaptive Card JSON file")
            cmd.add_argument("--notification", metavar="FILE",
                             help="path of a JSON file with a notification's facts (title, "
                                  "what, item, by, facts, actions, severity: README "
                                  "'Notification cards'); the app makes the card")
            cmd.add_argument("--topic", help="what the message is about (a-z 0-9 . _ -): a "
                                             "user who opted out of it gets nothing")
            cmd.add_argument("--summary", help="the line Teams shows in the notification")
            cmd.add_argument("--ack", nargs="?", const="", default=None, metavar="LABEL",
                             help="ask each recipient to acknowledge (a button, default "
                                  "label 'Got it')")
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
    status.add_argument("--key", required=True, help="the key given with send --key")
    progress = sub.add_parser("progress", help="counters of a many-user send", parents=[storage])
    progress.add_argument("--key", required=True, help="the key given with send --key")
    add_watch(progress, "a live bar with rate, ETA and counts by reason, until done")
    poison = sub.add_parser("poison", help="list, count, show, requeue or purge messages "
                                           "parked in the poison queue", parents=[storage])
    from proactive.cli.poison import add_arguments

    add_arguments(poison)
    admin.add_parsers(sub, storage)
    install.add_parser(sub, storage)
    sub.add_parser("host", help="run function_app.py locally", add_help=False)
    sub.add_parser("emulator", help="run the Connector emulator", add_help=False)
    sub.add_parser("dev", help="start Azurite, the app and the Playground", add_help=False)
    sub.add_parser("package", help="build and check the Teams app package", add_help=False)
    doctor.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("host", "emulator", "dev", "package"):
        return _run_tool(argv[0], argv[1:])
    if argv and argv[0] == "doctor":  # its own settings: flags, then azd's, then local
        return doctor.main(argv[1:])
    args = parse(_parser(), argv)
    return guarded(lambda: _main(args))


def _main(args: argparse.Namespace) -> int:
    load_local_settings()
    try:
        settings = storage_settings(Settings.from_env(), args.account)
        if problems := storage_problems(settings):
            raise ConfigError(*problems)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    return COMMANDS[args.command](args, settings)


def _show(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str, ensure_ascii=False))


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    rows = _run(settings, lambda t: _status(settings, t, args.key))
    if not rows:
        raise CliError(f"nothing is recorded under --key {args.key}",
                       "check the key; a send just queued shows once the app has taken it")
    _show(rows)
    return 0


# Seconds `progress --watch` looks for a key that does not exist before exit 1.
WATCH_MISSING = 30.0


def cmd_progress(args: argparse.Namespace, settings: Settings) -> int:
    if args.watch:
        from proactive.cli.live import watch

        # A key that never appears is a typo (or a message not sent): give up.
        return watch(lambda: _run(settings, lambda t: _progress_view(settings, t, args.key)),
                     args.key, interval=args.interval, missing_after=WATCH_MISSING)
    found = _run(settings, lambda t: _progress_view(settings, t, args.key))
    if found is None:
        raise CliError(f"no many-user send is recorded under --key {args.key}",
                       "check the key; a one-user send shows with `status`")
    _show(found)
    return 0


def cmd_poison(args: argparse.Namespace, settings: Settings) -> int:
    from proactive.cli import poison

    return poison.command(args, settings, _run)


def cmd_schedules(args: argparse.Namespace, settings: Settings) -> int:
    items = _run(settings, lambda t: _schedules(settings, t, args.key, not args.all))
    _show(items)
    return 0 if items or not args.key else 1


def cmd_enqueue(args: argparse.Namespace, settings: Settings) -> int:
    """send / update / delete / cancel: build, check, then put on the outbox."""
    from proactive.delivering.render import checked

    try:  # refuse here what the worker would park in the poison queue
        # OSError, ValueError: a users file
        message = checked(build_message(args), settings.max_activity_bytes)
        if message.schedule is not None:
            _check_schedule(settings, message.schedule)
    except (InvalidMessage, ValueError, OSError) as exc:  # ValueError: ScheduleError
        raise CliError(in_flags(str(getattr(exc, "detail", exc)), args)) from None
    from proactive.storage.queues import MAX_QUEUE_MESSAGE, dumps, encode

    if len(encode(dumps(message.to_json())).encode()) > MAX_QUEUE_MESSAGE:
        raise CliError("the message is over the 64 KB a storage queue message can hold",
                       "send a shorter text or card, or a --users @FILE to fewer users")
    to = message.target
    if to is not None and to.kind == TargetKind.ALL_USERS and not to.tenant \
            and not settings.app_tenant_id:
        from proactive.cli.localdev import PLAYGROUND, playground_tenant

        if tenant := playground_tenant(settings):  # local: the Playground's (./scripts/dev)
            message = replace(message, target=replace(to, tenant=tenant))
            print(f"tenant: {tenant} (the Agents Playground's, from {PLAYGROUND})",
                  file=sys.stderr)
    async def put(tokens: Any) -> None:  # one storage session (one sign-in) for all of it
        if args.command == "send" and not args.force:
            from proactive.cli.checks import confirm_send
            from proactive.cli.storage import send_state

            # What the checks may ask, read up front in this session.
            earlier = await send_state(settings, tokens, message.key) \
                if getattr(args, "key", None) else None
            assert message.target is not None
            known = await _known_users(settings, tokens, message.target.tenant or
                                       settings.app_tenant_id) if args.all_users else 0
            confirm_send(args, message, lambda: known, lambda: earlier)
        await _enqueue(settings, tokens, message)

    _run(settings, put)
    print(json.dumps({"queued": settings.outbox_queue, "op": str(message.op),
                      "key": message.key}))
    if getattr(args, "watch", False):
        from proactive.cli.live import watch
        from proactive.cli.storage import send_state

        return watch(lambda: _run(settings, lambda t: send_state(settings, t, message.key)),
                     message.key, interval=args.interval)
    return 0


# One small function per subcommand: adding one is a line here and one in _parser.
COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "send": cmd_enqueue, "update": cmd_enqueue, "delete": cmd_enqueue, "cancel": cmd_enqueue,
    "status": cmd_status, "progress": cmd_progress, "poison": cmd_poison,
    "schedules": cmd_schedules,
    "install": install.command,
    **{name: (lambda args, settings: admin.command(args, settings, _run))
       for name in admin.COMMANDS},
}


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
