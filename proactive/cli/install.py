"""`python -m proactive install`: pre-install the app for a whole audience
(README "Pre-installing for an audience").

Puts one `install` message on the outbox; the function app splits the
audience, installs through Microsoft Graph and counts each user's result
under the key, so `progress --key K --watch` (or `--watch` here) shows it.
"""

from __future__ import annotations

import argparse
import json
import uuid
from pathlib import Path
from typing import Any

from proactive.cli.fail import CliError, from_file
from proactive.config import Settings
from proactive.contract import InvalidMessage, Op, OutboxMessage, build

AUDIENCE_FLAGS = ("--group", "--users-file", "--team", "--users", "--all-users")


def add_parser(sub: Any, storage: argparse.ArgumentParser) -> None:
    cmd = sub.add_parser("install", parents=[storage],
                         help="pre-install the app for an audience through Microsoft Graph "
                              "(sends nothing)")
    cmd.add_argument("--key", help="the install's key, to follow it with progress "
                                   "(default: a new random key)")
    who = cmd.add_argument_group("audience (one of " + ", ".join(AUDIENCE_FLAGS) + ")")
    who.add_argument("--group", help="an Entra ID group's members (through Graph)")
    who.add_argument("--users-file", metavar="PATH", help="users: CSV with an id/upn/email "
                                                          "column, or one per line")
    who.add_argument("--team", help="a team's members (the bot is installed in the team)")
    who.add_argument("--users", help="comma-separated AAD object ids or principal names, "
                                     "or @FILE with one per line")
    who.add_argument("--all-users", action="store_true",
                     help="every user of the tenant with a stored reference")
    who.add_argument("--tenant", help="tenant id (default: the app's own tenant)")
    from proactive.cli.live import add_watch

    add_watch(cmd, "then show the install's progress live until it is done")


def build_install(args: argparse.Namespace) -> OutboxMessage:
    """The contract message for these flags; CliError or InvalidMessage for a
    mistake."""
    from proactive.users_file import read_users_file

    given = [flag for flag in AUDIENCE_FLAGS if getattr(args, flag[2:].replace("-", "_"))]
    if len(given) != 1:
        raise CliError(f"give exactly one audience: {', '.join(AUDIENCE_FLAGS)}"
                       + (f" (got {', '.join(given)})" if given else ""))
    to: dict[str, Any] = {}
    if args.group:
        to["group"] = args.group
    elif args.team:
        to["teamMembers"] = args.team
    elif args.all_users:
        to["allUsers"] = True
    elif args.users_file:
        to["users"] = from_file("--users-file", args.users_file, read_users_file)
    else:
        text = (from_file("--users", args.users[1:], Path.read_text)
                if args.users.startswith("@") else args.users)
        to["users"] = [u.strip() for u in text.replace(",", "\n").splitlines() if u.strip()]
    if args.tenant:
        to["tenant"] = args.tenant
    return build(Op.INSTALL, key=args.key or f"cli-{uuid.uuid4().hex[:12]}", to=to)


def command(args: argparse.Namespace, settings: Settings) -> int:
    from proactive.cli.storage import _enqueue, _run, send_state

    try:  # refuse here what the worker would park in the poison queue
        message = build_install(args)  # OSError, ValueError: a users file
    except (InvalidMessage, ValueError, OSError) as exc:
        raise CliError(str(getattr(exc, "detail", exc))) from None
    from proactive.storage.queues import MAX_QUEUE_MESSAGE, dumps, encode

    if len(encode(dumps(message.to_json())).encode()) > MAX_QUEUE_MESSAGE:
        raise CliError("the message is over the 64 KB a storage queue message can hold",
                       "use --group or --team, or several installs under the same --key")
    _run(settings, lambda t: _enqueue(settings, t, message))
    print(json.dumps({"queued": settings.outbox_queue, "op": "install", "key": message.key}))
    if args.watch:
        from proactive.cli.live import watch

        return watch(lambda: _run(settings, lambda t: send_state(settings, t, message.key)),
                     message.key, interval=args.interval)
    return 0
