"""The checks of `python -m proactive doctor` (proactive/cli/doctor.py runs them):
each takes the Target and returns a ✓ Result, or raises Failed (or CliError)
saying what was found and what to do."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from proactive.cli.fail import CliError
from proactive.config import Settings

if TYPE_CHECKING:
    from proactive.storage.credentials import StorageTokens

HEARTBEAT_MAX_AGE = timedelta(minutes=5)  # the timer runs every minute
HTTP_TIMEOUT = 30.0  # seconds: a Flex Consumption app may start cold
# The marker put on the outbox: hidden for MARKER_HIDDEN seconds and deleted at
# once. Should the delete never happen, it is a `cancel` of a key nobody uses,
# which the worker answers `unknown-key` without writing anything, and it
# expires after MARKER_TTL.
MARKER_HIDDEN = 60
MARKER_TTL = 300
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
    from proactive.errors import NotFound
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
            except NotFound:
                missing.append(f"table {name}")
    for name in names.queues:
        async with credentials.queue_client(settings, name, tokens) as queue:
            try:
                peeked = len(await queue.peek_messages(max_messages=32))
            except NotFound:
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
    """The message doctor puts on the outbox (see MARKER_HIDDEN): contract JSON."""
    from proactive.contract import Op, OutboxMessage

    return OutboxMessage(Op.CANCEL, f"doctor-{uuid.uuid4().hex}").to_json()


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
        from proactive.errors import NotFound

        name = settings.table_name(SCHEDULES_TABLE)
        async with credentials.table_client(settings, name, tokens) as table:
            try:
                return dict(await table.get_entity(*HEARTBEAT))
            except NotFound:
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
