"""How the CLI fails: one line on stderr saying what is wrong and what to do,
exit code 2, never a traceback (README "The CLI").

`CliError` is what a command raises for a mistake or a service it can't use;
`guarded` turns it, and the few other failures a person can meet (a file that
can't be read, storage that doesn't answer), into that line.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

EXIT_ERROR = 2  # argparse's code for a usage error; every other error uses it too
PROBE_TIMEOUT = 3.0  # well inside the 5 s: a TCP connect answers in ms or never
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "azurite")


class CliError(Exception):
    """A mistake or an unusable service, told to the person in one line."""

    def __init__(self, what: str, hint: str = "") -> None:
        super().__init__(what)
        self.what, self.hint = what, hint

    def line(self) -> str:
        return f"error: {self.what}" + (f" ({self.hint})" if self.hint else "")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line naming the command and flag
    (no usage block), exit 2. Subparsers inherit the class."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {self.prog.removeprefix('python -m proactive').strip() or 'proactive'}"
              f": {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(EXIT_ERROR)


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """`parser.parse_args`, but a flag the command doesn't know is told by the
    command's own parser (argparse leaves it to the top level, whose usage
    doesn't list the command's flags)."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        sub.choices[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    return args


# The contract's JSON fields and the flags that set them: an error names the flag.
TARGET_FLAGS = {"user": "--to", "users": "--users", "allUsers": "--all-users",
                "teamMembers": "--team", "group": "--group",
                "conversation": "--conversation", "channel": "--channel"}
FLAGS = {**TARGET_FLAGS, "team": "--team", "replyTo": "--reply-to", "tenant": "--tenant",
         "text": "--text", "card": "--card", "summary": "--summary", "key": "--key",
         "topic": "--topic", "notification": "--notification", "schedule": "the schedule",
         **{name: f"--{name}" for name in ("at", "local", "rrule", "cron", "start", "timezone",
                                           "until", "count")}}


def in_flags(detail: str, args: argparse.Namespace) -> str:
    """A contract error told in the CLI's words: `'topic' must ...` becomes
    `--topic must ...`; an error inside a --card / --notification file names
    the file."""
    for name, flag in (("card", "--card"), ("notification", "--notification")):
        path = getattr(args, name, None)
        if path and f"'{name}" in detail:
            return f"{flag} {path}: {detail}"
    for name, flag in FLAGS.items():
        detail = detail.replace(f"'{name}'", flag)
    return detail


def from_file(flag: str, path: str, read: Callable[[Path], Any]) -> Any:
    """`read(path)` for the file a flag names; CliError naming both if it
    can't be read or `read` refuses it (ValueError)."""
    try:
        return read(Path(path))
    except OSError as exc:
        raise CliError(f"{flag} {path}: {exc.strerror or exc}", "check the path") from None
    except ValueError as exc:
        raise CliError(f"{flag} {path}: {exc}") from None


def json_file(flag: str, path: str) -> Any:
    """The JSON in the file a flag names; CliError naming both if it can't be."""
    def read(file: Path) -> Any:
        try:
            return json.loads(file.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"not JSON: {exc}") from None
    return from_file(flag, path, read)


def is_local(url: str) -> bool:
    return (urlsplit(url).hostname or "") in LOCAL_HOSTS


def where(url: str) -> str:
    """How to name the storage behind `url` to a person: Azurite, or the account."""
    host = urlsplit(url).hostname or url
    if is_local(url):
        return f"local storage (Azurite) at {host}:{urlsplit(url).port}"
    return f"storage account '{host.split('.')[0]}' ({host})"


def probe(url: str, *, timeout: float = PROBE_TIMEOUT) -> None:
    """Raise CliError unless something accepts a TCP connection at `url`'s host
    and port within `timeout`. The storage SDKs retry an unreachable endpoint
    for over a minute; a person should hear at once that nothing is there."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        if is_local(url):
            raise CliError(f"cannot reach {where(url)}: {reason}",
                           "is `./scripts/dev` running?") from None
        raise CliError(f"cannot reach {where(url)}: {reason}",
                       "check the account name (--account / AzureWebJobsStorage__accountName) "
                       "and your network") from None


def guarded(run: Callable[[], int]) -> int:
    """`run()`, with every failure a person can meet turned into one line and
    exit 2. PROACTIVE_DEBUG=1 shows the traceback of an unexpected one."""
    try:
        return run()
    except CliError as exc:
        print(exc.line(), file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a --card / --users @FILE / --file that can't be read
        name = f" {exc.filename}" if exc.filename else ""
        print(f"error: cannot use{name}: {exc.strerror or exc} (check the path)",
              file=sys.stderr)
    except ValueError as exc:  # e.g. a --card file that is not JSON
        print(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
              file=sys.stderr)
    except Exception as exc:
        if os.environ.get("PROACTIVE_DEBUG"):
            traceback.print_exc()
        first = (str(exc).splitlines() or [""])[0][:300]
        print(f"error: unexpected {type(exc).__name__}: {first} "
              "(set PROACTIVE_DEBUG=1 to see where)", file=sys.stderr)
    return EXIT_ERROR
