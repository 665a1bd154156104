"""`python -m proactive doctor`: did the deployment work? (README "Did it work?")

    python -m proactive doctor [--account NAME] [--endpoint URL] [--wait SECONDS]
                               [--skip CHECK ...]

One line per check, ✓ or ✗, a failure with what to do:

    storage   the app's tables and queues exist; you may peek at the outbox and
              put on it (a marker, hidden, then deleted: nothing is delivered)
    endpoint  POST /api/messages without a token answers 401: up and authenticating
    config    GET /api/health: the app's settings can be used (or which to fix)
    package   the Teams app package for this environment builds and validates
    timer     the schedules timer ran in the last few minutes (its heartbeat row)

Storage is reached as you (`az login`; DefaultAzureCredential) on `--account`,
else the azd environment's AZURE_STORAGE_ACCOUNT_NAME; without either, the local
settings (AzureWebJobsStorage, local.settings.json). The app is `--endpoint`,
else the azd environment's BOT_MESSAGING_ENDPOINT, else the local host on
127.0.0.1:7071. Exit code 0 when every check passes, 1 when one fails, 2 for a
usage mistake.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from proactive.cli.azd import azd_values
from proactive.cli.doctor_checks import (
    Failed,
    Result,
    Target,
    check_config,
    check_endpoint,
    check_package,
    check_storage,
    check_timer,
    marker,
)
from proactive.cli.fail import CliError, guarded, is_local, where
from proactive.config import Settings, storage_problems
from proactive.errors import ConfigError

__all__ = ["CHECKS", "Failed", "Result", "Target", "main", "marker", "run"]

CHECKS = ("storage", "endpoint", "config", "package", "timer")
POLL = 5.0  # seconds between tries with --wait
LOCAL_PORT = 7071  # the local host's default (local.settings.json Host.LocalHttpPort)


def add_parser(sub: Any) -> None:
    """`doctor` in `python -m proactive --help` (its own parser does the work)."""
    sub.add_parser("doctor", help="check a deployment: storage, endpoint, configuration, "
                                  "app package, timer", add_help=False)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m proactive doctor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--account", metavar="NAME",
                        help="the storage account, signed in as you (default: the azd "
                             "environment's AZURE_STORAGE_ACCOUNT_NAME, else the local "
                             "settings' storage)")
    parser.add_argument("--endpoint", metavar="URL",
                        help="the app's base address, https://<app>.azurewebsites.net "
                             "(default: from the azd environment's BOT_MESSAGING_ENDPOINT, "
                             f"else http://127.0.0.1:{LOCAL_PORT})")
    parser.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                        help="retry every check but the package's for up to this long (a "
                             "fresh deployment needs a minute or two: new role assignments, "
                             "a cold start, the timer's first run); default 0")
    parser.add_argument("--skip", action="append", default=[], choices=CHECKS,
                        metavar="CHECK", help=f"leave a check out (repeatable): "
                                              f"{', '.join(CHECKS)}")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    return guarded(lambda: run(args))


def run(args: argparse.Namespace, *, now: Callable[[], datetime] | None = None,
        out: Any = None) -> int:
    from proactive.cli.storage import storage_endpoints

    out = out or sys.stdout
    if args.wait < 0:
        raise CliError("--wait must be 0 or more seconds")
    target = resolve(args, now or (lambda: datetime.now(UTC)))
    marks = _marks(out)
    print(f"doctor: {where(storage_endpoints(target.settings)['queue'])}, app at "
          f"{target.endpoint or '(unknown)'}", file=out, flush=True)
    deadline = time.monotonic() + args.wait
    checks: dict[str, tuple[Callable[[Target], Result], bool]] = {
        "storage": (check_storage, True), "endpoint": (check_endpoint, True),
        "config": (check_config, True), "package": (check_package, False),
        "timer": (check_timer, True)}
    failed = 0
    for name, (check, waits) in checks.items():
        if name in args.skip:
            continue
        result = _attempt(name, check, target)
        while waits and not result.ok and time.monotonic() < deadline:
            time.sleep(max(0.0, min(POLL, deadline - time.monotonic())))
            result = _attempt(name, check, target)
        failed += not result.ok
        print(result.line(marks), file=out, flush=True)
    ran = len(CHECKS) - len(set(args.skip))
    print("all checks passed" if not failed else f"{failed} of {ran} checks failed",
          file=out, flush=True)
    return 0 if not failed else 1


def _attempt(name: str, check: Callable[[Target], Result], target: Target) -> Result:
    """`check(target)`, with every way it can fail as a ✗ line, never a traceback."""
    try:
        return check(target)
    except Failed as exc:
        return Result(name, False, exc.what, exc.fix)
    except CliError as exc:
        return Result(name, False, exc.what, exc.hint)
    except Exception as exc:
        first = (str(exc).splitlines() or [""])[0][:200]
        return Result(name, False, f"unexpected {type(exc).__name__}: {first}",
                      "run again with PROACTIVE_DEBUG=1 and report it")


def _marks(out: Any) -> tuple[str, str]:
    """✓ and ✗, or plain words where the output can't show them."""
    try:
        "✓✗".encode(getattr(out, "encoding", None) or "utf-8")
    except (UnicodeEncodeError, LookupError):
        return ("ok", "FAIL")
    return ("✓", "✗")


# --- what to check -------------------------------------------------------------


def resolve(args: argparse.Namespace, now: Callable[[], datetime]) -> Target:
    """The storage and the app to check: flags, then azd's environment, then the
    local settings. CliError (exit 2) for a flag that can't be used."""
    from proactive.cli.storage import load_local_settings, storage_settings

    azd = azd_values()
    env = {**azd, **os.environ}
    account = args.account or env.get("AZURE_STORAGE_ACCOUNT_NAME", "")
    if not account:  # the local stack: its settings, as `host` reads them
        load_local_settings()
        env = {**azd, **os.environ}
    try:
        settings = storage_settings(Settings.from_env(env), account or None)
    except ConfigError as exc:
        raise CliError(f"the settings here can't be read: {exc}") from None
    if account and (problems := storage_problems(settings)):
        raise CliError(problems[0])
    return Target(settings, _endpoint(args.endpoint, env, local=not account), azd, now,
                  vnet=env.get("VNET_ENABLED", "").strip().lower() == "true")


def _endpoint(flag: str | None, env: Mapping[str, str], *, local: bool) -> str:
    """The app's base URL; "" when storage is in Azure and nothing says where the app is."""
    url = flag or env.get("BOT_MESSAGING_ENDPOINT", "")
    if not url and not local:
        return ""
    if not url:
        port = LOCAL_PORT
        try:
            host = json.loads(Path("local.settings.json").read_text()).get("Host") or {}
            port = int(host.get("LocalHttpPort", LOCAL_PORT))
        except (OSError, ValueError, AttributeError):
            pass
        return f"http://127.0.0.1:{port}"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CliError(f"--endpoint {url!r} is not an http(s) URL",
                       "give the app's base address, e.g. https://<app>.azurewebsites.net")
    if parts.scheme == "http" and not is_local(url):
        raise CliError(f"--endpoint {url!r}: an app in Azure is reached over https")
    path = parts.path.rstrip("/").removesuffix("/api/messages")
    return f"{parts.scheme}://{parts.netloc}{path}"
