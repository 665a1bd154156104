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
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from proactive.cli.azd import azd_values
from proactive.cli.fail import CliError, guarded, is_local, where
from proactive.config import ConfigError, Settings, storage_problems

if TYPE_CHECKING:
    from proactive.storage.credentials import StorageTokens

CHECKS = ("storage", "endpoint", "config", "package", "timer")
HEARTBEAT_MAX_AGE = timedelta(minutes=5)  # the timer runs every minute
HTTP_TIMEOUT = 30.0  # seconds: a Flex Consumption app may start cold
POLL = 5.0  # seconds between tries with --wait
# The marker put on the outbox: hidden for MARKER_HIDDEN seconds and deleted at
# once. Should the delete never happen, it is a `cancel` of a key nobody uses,
# which the worker answers `unknown-key` without writing anything, and it
# expires after MARKER_TTL.
MARKER_HIDDEN = 60
MARKER_TTL = 300
LOCAL_PORT = 7071  # the local host's default (local.settings.json Host.LocalHttpPort)
REDEPLOY = "run `azd deploy`; locally, start `python -m proactive dev`"


@dataclass(frozen=True)
class Result:
    check: str
    ok: bool
    what: str
    fix: str = ""

    def line(self, marks: tuple[str, str]) -> str:
        text = f"{marks[0] if self.ok else marks[1]} {self.check}: {self.what}"
        return text + (f" (fix: {self.fix})" if self.fix and not self.ok else "")


class Failed(Exception):
    """A check's failure: what was found and what to do."""

    def __init__(self, what: str, fix: str = "") -> None:
        super().__init__(what)
        self.what, self.fix = what, fix


@dataclass
class Target:
    settings: Settings  # storage as it will be reached
    endpoint: str  # the app's base URL, no trailing slash
    values: dict[str, str]  # azd's environment (for the app package)
    now: Callable[[], datetime]
    vnet: bool = False  # VNET_ENABLED: storage takes no traffic from outside the network


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
    from proactive.cli import load_local_settings
    from proactive.cli.storage import storage_settings

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


def _run_storage(target: Target, work: Callable[[StorageTokens | None], Any]) -> Any:
    from proactive.cli.storage import _run

    try:
        return _run(target.settings, work)
    except CliError as exc:
        if not target.vnet:
            raise
        raise Failed(exc.what, "with VNET_ENABLED=true the storage account takes traffic from "
                               "its network only: run doctor inside it, or --skip storage "
                               "--skip timer") from None


def check_storage(target: Target) -> Result:
    settings = target.settings
    found = _run_storage(target, lambda tokens: _storage(settings, tokens))
    return Result("storage", True, found)


async def _storage(settings: Settings, tokens: StorageTokens | None) -> str:
    """Only operations the app's own code makes (credentials.OPERATIONS), which the
    deployment's data roles grant you: a read of each table, a peek at each queue."""
    from azure.core.exceptions import ResourceNotFoundError

    from proactive.runtime import storage_names
    from proactive.storage import credentials
    from proactive.storage.queues import dumps, encode

    names = storage_names(settings)
    missing, waiting = [], 0
    for name in names.tables:
        async with credentials.table_client(settings, name, tokens) as table:
            try:
                async for _ in table.query_entities("PartitionKey eq 'doctor'",
                                                    results_per_page=1):
                    break
            except ResourceNotFoundError:
                missing.append(f"table {name}")
    for name in names.queues:
        async with credentials.queue_client(settings, name, tokens) as queue:
            try:
                peeked = len(await queue.peek_messages(max_messages=32))
            except ResourceNotFoundError:
                missing.append(f"queue {name}")
                continue
            waiting = peeked if name == settings.outbox_queue else waiting
    if missing:
        raise Failed(f"missing {', '.join(missing)}",
                     "`azd provision` creates them (locally `python -m proactive host` does "
                     "at start)")
    async with credentials.queue_client(settings, settings.outbox_queue, tokens) as queue:
        sent = await queue.send_message(encode(dumps(marker())), visibility_timeout=MARKER_HIDDEN,
                                        time_to_live=MARKER_TTL)
        await queue.delete_message(sent.id, sent.pop_receipt)
    return (f"{len(names.tables)} tables and {len(names.queues)} queues exist; you may peek "
            f"at {settings.outbox_queue} ({waiting}{'+' if waiting == 32 else ''} waiting) "
            "and put on it")


def marker() -> dict[str, Any]:
    """The message doctor puts on the outbox (see MARKER_HIDDEN)."""
    return {"version": 1, "op": "cancel", "key": f"doctor-{uuid.uuid4().hex}"}


def _http(method: str, url: str, **kwargs: Any) -> Any:
    import httpx

    if url.startswith("/"):  # no base address
        raise Failed("the app's address is unknown",
                     "pass --endpoint https://<app>.azurewebsites.net; azd's "
                     "BOT_MESSAGING_ENDPOINT gives it")

    try:
        return httpx.request(method, url, timeout=HTTP_TIMEOUT, **kwargs)
    except httpx.HTTPError as exc:
        raise Failed(f"cannot reach {url}: {str(exc)[:200] or type(exc).__name__}",
                     "check --endpoint; " + REDEPLOY) from None


def check_endpoint(target: Target) -> Result:
    url = f"{target.endpoint}/api/messages"
    # Not a loopback serviceUrl: even local development mode refuses it unsigned.
    activity = {"type": "message", "channelId": "msteams", "id": "doctor",
                "serviceUrl": "https://smba.trafficmanager.net/doctor/"}
    answer = _http("POST", url, json=activity)
    status = answer.status_code
    if status == 401:
        return Result("endpoint", True, f"{url} answers 401 without a token: up and "
                                        "authenticating")
    if status == 404:
        raise Failed(f"{url} answered 404: the app is not deployed there",
                     "check --endpoint; " + REDEPLOY)
    if status == 503:
        names = _config_names(target)
        raise Failed(f"{url} answered 503: the app's configuration is invalid"
                     + (f" ({', '.join(names)})" if names else ""),
                     "fix those app settings (see the config line), then restart the app")
    if 200 <= status < 300:
        raise Failed(f"{url} accepted an activity without a token",
                     "PROACTIVE_LOCAL_DEV must be off outside your machine")
    raise Failed(f"{url} answered {status}", "see the app's log (Application Insights)")


def _config_names(target: Target) -> list[str]:
    try:
        body = _http("GET", f"{target.endpoint}/api/health").json()
    except (Failed, ValueError):
        return []
    names = body.get("settings") if isinstance(body, dict) else None
    return [str(n) for n in names] if isinstance(names, list) else []


def check_config(target: Target) -> Result:
    url = f"{target.endpoint}/api/health"
    answer = _http("GET", url)
    if answer.status_code == 200:
        return Result("config", True, "the app's settings can be used")
    if answer.status_code == 404:
        raise Failed(f"{url} answered 404: the deployed app is older than this clone, or "
                     "not there", REDEPLOY)
    try:
        body = answer.json()
    except ValueError:
        body = {}
    names = body.get("settings") if isinstance(body, dict) else None
    if answer.status_code == 503 and isinstance(names, list):
        shown = ", ".join(map(str, names)) or "(unnamed: see the app's log)"
        raise Failed(f"the app's configuration is invalid: {shown}",
                     "set them (`azd env set ...` and `azd provision`, or the app settings; "
                     "README \"Settings\"), then restart the app")
    raise Failed(f"{url} answered {answer.status_code}", "see the app's log")


def check_package(target: Target) -> Result:
    try:
        from proactive_devtools.app_package import build, variables
        from proactive_devtools.manifest_check import ROOT, PackageError
    except ImportError as exc:
        raise Failed(f"the app package tools can't be loaded ({exc})",
                     "run doctor from a clone of the repository set up with `./scripts/dev` "
                     "(proactive_devtools/ and node_modules/)") from None
    values = variables(target.values, os.environ, {})
    try:
        manifest, _ = build(ROOT / "appPackage", values)
    except PackageError as exc:
        more = len(exc.problems) - 1
        raise Failed(str(exc.problems[0]) + (f" (and {more} more)" if more else ""),
                     "`python -m proactive package` lists them; set what they name") from None
    bots = manifest.get("bots") or [{}]
    return Result("package", True, f"the Teams app package builds and validates (bot "
                                   f"{bots[0].get('botId')}, manifest "
                                   f"v{manifest.get('manifestVersion')})")


def check_timer(target: Target) -> Result:
    from proactive.runtime import SCHEDULES_TABLE
    from proactive.scheduling.timer import HEARTBEAT
    from proactive.storage import credentials

    settings = target.settings

    async def read(tokens: StorageTokens | None) -> dict[str, Any] | None:
        from azure.core.exceptions import ResourceNotFoundError

        name = settings.table_name(SCHEDULES_TABLE)
        async with credentials.table_client(settings, name, tokens) as table:
            try:
                return dict(await table.get_entity(*HEARTBEAT))
            except ResourceNotFoundError:
                return None

    row = _run_storage(target, read)
    fix = ("it runs every minute: try again with --wait 120; if it still fails, see the "
           "config line and the app's log")
    if row is None:
        raise Failed("the schedules timer has not run yet (no heartbeat)", fix)
    try:
        at = datetime.fromisoformat(str(row.get("at", "")).replace("Z", "+00:00"))
    except ValueError:
        raise Failed(f"the heartbeat's time can't be read: {str(row.get('at'))[:40]!r}",
                     fix) from None
    age = target.now() - at
    ago = f"{int(age.total_seconds() // 60)} min {int(age.total_seconds() % 60)} s ago"
    if age > HEARTBEAT_MAX_AGE:
        raise Failed(f"the schedules timer last ran {ago} ({row.get('at')})", fix)
    when = ago if age > timedelta(0) else "just now"
    return Result("timer", True, f"the schedules timer ran {when}")
