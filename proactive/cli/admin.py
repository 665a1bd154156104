"""The CLI's report and opt-out commands (`python -m proactive report|reach|
optout|optin`), apart from proactive/cli.py to keep each module readable.

    report  every recipient's result of a send (key), streamed as CSV or JSON Lines
    reach   who blocked, uninstalled or disabled the bot, and who opted out
    optout  stop a user's notifications (all, or one --topic), as an admin
    optin   clear a user's opt-out (all, or one --topic): the only way besides
            the user typing `start`
    rotate-signing-key  sign what the app enqueues for itself with a new key
            (proactive/storage/seal.py; older keys keep verifying for 8 days)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from proactive.cli.fail import CliError
from proactive.config import Settings
from proactive.storage import credentials

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient, TableServiceClient

    from proactive.delivering.optouts import OptOuts
    from proactive.storage.credentials import StorageTokens
    from proactive.storage.preferences import PreferenceStore

COMMANDS = ("report", "reach", "optout", "optin", "rotate-signing-key")
Run = Callable[[Settings, Callable[["StorageTokens | None"], Awaitable[Any]]], Any]


def add_parsers(sub: Any, storage: argparse.ArgumentParser) -> None:
    report = sub.add_parser("report", help="every recipient's result of a send, streamed",
                            parents=[storage])
    report.add_argument("--key", required=True, help="the key given with send --key")
    reach = sub.add_parser("reach", help="who can't be reached (blocked, uninstalled, "
                                         "disabled, opted out), with when", parents=[storage])
    reach.add_argument("--group", metavar="GROUP_ID",
                       help="also list this Entra ID group's members who never installed the "
                            "bot (asks Microsoft Graph; needs proactive install on)")
    for cmd in (report, reach):
        cmd.add_argument("--format", choices=("csv", "json"), default="csv",
                         help="csv, or json (JSON Lines: one object a line)")
        cmd.add_argument("--out", metavar="FILE", help="write here (default: stdout)")
    for name, verb in (("optout", "stop"), ("optin", "resume")):
        cmd = sub.add_parser(name, help=f"{verb} a user's notifications (admin)",
                             parents=[storage])
        cmd.add_argument("--user", required=True, help="the user's Azure AD object id")
        cmd.add_argument("--topic", help="one topic (default: all)")
        cmd.add_argument("--tenant", default="",
                         help="the user's tenant id (default: from their stored conversation)")
    sub.add_parser("rotate-signing-key", parents=[storage],
                   help="sign the app's own queue messages with a new key (SECURITY.md)")


@dataclass
class _Tables:
    """The tables the reports read, as the Runtime offers them."""

    settings: Settings
    service: TableServiceClient

    def sdk_table(self, base: str) -> TableClient:
        """A missing table is a NotFound here: the CLI creates nothing to read it."""
        from proactive.storage.autocreate import checked

        name = self.settings.table_name(base)
        return checked(self.service.get_table_client(name), f"table {name}")

    @property
    def preferences(self) -> PreferenceStore:
        from proactive.runtime import PREFERENCES_TABLE
        from proactive.storage.preferences import PreferenceStore

        return PreferenceStore(self.sdk_table(PREFERENCES_TABLE))

    def opt_outs(self) -> OptOuts:
        """Changes made here reach the running workers too (delivering/optouts.py)."""
        from proactive.delivering.optouts import OptOuts
        from proactive.delivering.pacing import TenantPacer
        from proactive.runtime import PACING_TABLE

        return OptOuts(self.preferences, TenantPacer(self.sdk_table(PACING_TABLE)))

    async def tenant_of(self, aad_id: str) -> str:
        """The tenant of the user's stored conversation; CliError if none."""
        from proactive.errors import NotFound
        from proactive.runtime import REFERENCES_TABLE
        from proactive.storage.references import ReferenceStore

        try:
            ref = await ReferenceStore(self.sdk_table(REFERENCES_TABLE)).user(aad_id, None)
        except NotFound:  # no references table yet
            ref = None
        if ref is None or not ref.tenant_id:
            raise CliError("the user's tenant is not known (no conversation with them is "
                           "stored)", "give --tenant")
        return ref.tenant_id


async def _write(chunks: AsyncIterator[bytes], path: str | None) -> None:
    """A streamed report to the file at `path`, or to stdout."""
    if path:
        with open(path, "wb") as out:
            await _stream(chunks, out)
    else:
        await _stream(chunks, sys.stdout.buffer)
        sys.stdout.buffer.flush()


async def _stream(chunks: AsyncIterator[bytes], out: BinaryIO) -> None:
    from proactive.errors import NotFound

    try:
        async for chunk in chunks:
            out.write(chunk)
    except NotFound:
        pass  # no such table yet: nothing to report


def command(args: argparse.Namespace, settings: Settings, run: Run) -> int:
    from proactive.contract.fields import valid_topic
    from proactive.reporting.reports import ReportError, reach_report, send_report
    from proactive.storage.preferences import ALL

    topic = getattr(args, "topic", None)
    if topic is not None and not valid_topic(topic):
        print("error: --topic must be 1 to 64 of a-z 0-9 . _ -", file=sys.stderr)
        return 2
    group = getattr(args, "group", None) or ""
    if group and not settings.graph_install:
        print("error: --group needs proactive install through Microsoft Graph: set "
              "PROACTIVE_GRAPH_APP_CATALOG_ID or PROACTIVE_GRAPH_APP_MANIFEST_ID", file=sys.stderr)
        return 2
    if group:
        try:
            run(settings, lambda tokens: _group_reach(settings, tokens, group, args))
        except ReportError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0

    async def work(tokens: StorageTokens | None) -> Any:
        async with credentials.table_service(settings, tokens) as service:
            rt = _Tables(settings, service)
            if args.command in ("report", "reach"):
                await _write(send_report(rt, args.key, args.format) if args.command == "report"
                             else reach_report(rt, args.format), args.out)
                return None
            await _ensure(rt)
            if args.command == "rotate-signing-key":
                from proactive.runtime import PACING_TABLE
                from proactive.storage.seal import Seal

                return {"signingKey": await Seal(rt.sdk_table(PACING_TABLE)).rotate()}
            if args.command == "optout":
                tenant = args.tenant or await rt.tenant_of(args.user)
                new = await rt.opt_outs().stop(args.user, topic or ALL, via="admin",
                                               tenant_id=tenant)
                return {"user": args.user, "optedOut": topic or ALL, "new": new}
            cleared = await rt.opt_outs().start(args.user, topic, tenant_id=args.tenant)
            return {"user": args.user, "cleared": cleared}

    result = run(settings, work)
    if result is not None:
        print(json.dumps(result))
    return 0


async def _group_reach(settings: Settings, tokens: StorageTokens | None, group: str,
                       args: argparse.Namespace) -> None:
    """The reach report with a group's never-installed members: the full
    Runtime, for its Graph client and the shared Graph pacer."""
    from proactive.reporting.reports import reach_report
    from proactive.runtime import Runtime

    rt = await Runtime.create(settings, storage_tokens=tokens)
    try:
        await _write(reach_report(rt, args.format, group=group), args.out)
    finally:
        await rt.close()


async def _ensure(rt: _Tables) -> None:
    """The tables an opt-out change writes: its own, and the one that tells
    the workers (the pacing table: delivering/optouts.py)."""
    from proactive.runtime import PACING_TABLE, PREFERENCES_TABLE

    for base in (PREFERENCES_TABLE, PACING_TABLE):
        await rt.service.create_table_if_not_exists(rt.settings.table_name(base))
