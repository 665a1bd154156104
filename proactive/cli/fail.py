"""How the CLI fails: one line on stderr saying what is wrong and what to do,
exit code 2, never a traceback (README "The CLI").

`CliError` is what a command raises for a mistake or a service it can't use;
`guarded` turns it, and the few other failures a person can meet (a file that
can't be read, storage that doesn't answer), into that line.
"""

from __future__ import annotations

import os
import socket
import sys
import traceback
from collections.abc import Callable
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
