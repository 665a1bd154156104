"""Warnings before enqueueing what is probably a mistake (README "The CLI").

A send that is valid by the contract can still be a slip: a time in the past
(it goes out at once), a `--to` that is not an Azure AD object id (the worker
finds no user and records it as failed), an `--all-users` send to a tenant
nobody of which has installed the app (it reaches nobody), a `--key` that
already has results (nothing is sent to those recipients again). At a terminal the
CLI asks; elsewhere (scripts, CI) it refuses unless `--force` says "I mean it".
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from proactive.cli.fail import CliError

if TYPE_CHECKING:
    from proactive.contract import OutboxMessage

# An object id is a GUID; loosely (hex and dashes, 32+ hex digits), because the
# Agents Playground's default user has one digit too many and is still right.
GUID = re.compile(r"(?=(?:[^0-9a-fA-F]*[0-9a-fA-F]){32})[0-9a-fA-F-]{32,40}")


def _instant(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None  # the contract check says what is wrong with it
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def used_key(key: str, state: dict[str, Any]) -> str:
    """A send under a key that already has results delivers nothing again
    (exactly once per key and recipient): say so, with what became of it."""
    from proactive.cli.live import reasons

    counts = state.get("counts", {})
    why = reasons(counts)
    told = ", ".join(f"{name} {counts[name]}" for name in ("sent", "failed", "skipped")
                     if counts.get(name))
    gone = ("; conversation-not-found: the chat the app stored is gone (after a Playground "
            "restart, open the Playground again so the app stores the new chat)"
            if "conversation-not-found" in why else "")
    return (f"--key {key} was already sent ({told or 'running'}{': ' + why if why else ''}"
            f"{gone}): a send under a used key goes only to recipients it has no result "
            "for, so these get nothing again; give a new --key (or none) to send again")


def doubts(args: argparse.Namespace, message: OutboxMessage,
           known_users: Callable[[], int], *, now: datetime | None = None,
           earlier: Callable[[], dict[str, Any] | None] = lambda: None) -> list[str]:
    """What looks like a mistake in this send, one sentence each; `earlier`:
    what is recorded under the key already (send_state)."""
    found: list[str] = []
    if getattr(args, "key", None) and (state := earlier()) is not None:
        found.append(used_key(args.key, state))
    now = now or datetime.now(UTC)
    at = _instant(args.at) if getattr(args, "at", None) else None
    if at is not None and at < now:
        found.append(f"--at {args.at} is in the past: the message goes out now")
    to = message.target
    bad = [u for u in ([args.to] if args.to else []) + list(to.users if to else ())
           if not GUID.fullmatch(u)]
    if bad:
        found.append(f"{bad[0]!r} is not an Azure AD object id (a GUID): --to and --users "
                     "take the user's object id, not a name or e-mail address")
    if args.all_users and known_users() == 0:
        tenant = to.tenant if to else ""
        which = (f"tenant {tenant}" if tenant else
                 "the app's own tenant (MicrosoftAppTenantId; or give --tenant)")
        found.append(f"no user of {which} has a stored personal chat (nobody installed "
                     "the app yet): an --all-users send would reach nobody")
    return found


def ask(question: str) -> bool:
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    try:
        return input().strip().lower() in ("y", "yes")
    except EOFError:
        return False


def interactive() -> bool:
    return sys.stdin.isatty() and sys.stderr.isatty()


def confirm_send(args: argparse.Namespace, message: OutboxMessage,
                 known_users: Callable[[], int],
                 earlier: Callable[[], dict[str, Any] | None] = lambda: None) -> None:
    """Raise CliError for a doubtful send unless --force, or the person at the
    terminal says yes."""
    if args.force:
        return
    found = doubts(args, message, known_users, earlier=earlier)
    if not found:
        return
    if interactive():
        for doubt in found:
            print(f"warning: {doubt}", file=sys.stderr)
        if ask("send anyway?"):
            return
        raise CliError("not sent")
    raise CliError(found[0] + (f" (and {len(found) - 1} more)" if len(found) > 1 else ""),
                   "add --force to send it anyway")
