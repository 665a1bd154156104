"""What the CLI reads and writes in storage, and how it reaches it: a quick
look that something is listening first, then one line for every way storage
can refuse (README "The CLI")."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from proactive.cli import fail
from proactive.cli.fail import CliError, probe
from proactive.config import Settings
from proactive.errors import Reason, StorageError, StorageUnavailable
from proactive.storage import credentials

if TYPE_CHECKING:
    from proactive.contract import OutboxMessage
    from proactive.storage.campaign_rows import CampaignProgress
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


async def _schedules(settings: Settings, tokens: StorageTokens | None, key: str,
                     active_only: bool) -> list[dict[str, Any]]:
    from proactive.errors import NotFound
    from proactive.runtime import SCHEDULES_TABLE
    from proactive.scheduling import list_items

    name = settings.table_name(SCHEDULES_TABLE)
    async with credentials.table_client(settings, name, tokens) as table:
        try:
            return await list_items(table, key, active_only=active_only)
        except NotFound:
            return []


async def _enqueue(settings: Settings, tokens: StorageTokens | None,
                   message: OutboxMessage) -> None:
    """A producer's message onto the outbox (not signed: it carries no app-only field)."""
    from proactive.storage.queues import dumps, encode, ensure_queue

    async with credentials.queue_client(settings, settings.outbox_queue, tokens) as queue:
        await ensure_queue(queue)
        await queue.send_message(encode(dumps(message.to_json())))


async def _status(settings: Settings, tokens: StorageTokens | None,
                  key: str) -> list[dict[str, Any]]:
    from proactive.errors import NotFound
    from proactive.reporting.reports import read_columns
    from proactive.runtime import DELIVERIES_TABLE, REFERENCES_TABLE
    from proactive.storage.reads import ReadLookup
    from proactive.storage.tables import safe_key

    name = settings.table_name(DELIVERIES_TABLE)
    rows: list[dict[str, Any]] = []
    async with credentials.table_client(settings, name, tokens) as table, \
            credentials.table_client(settings, settings.table_name(REFERENCES_TABLE),
                                     tokens) as references:
        reads = ReadLookup(references)  # read / readAt: README "Read, acknowledged, reminded"
        try:
            async for entity in table.query_entities("PartitionKey eq @pk",
                                                     parameters={"pk": safe_key(key)}):
                row = {k: v for k, v in entity.items() if k not in ("PartitionKey", "RowKey")}
                read = await read_columns(reads, entity)
                rows.append({**row, **{k: v for k, v in read.items() if v is not None}})
        except NotFound:
            pass
    return rows


async def _progress(settings: Settings, tokens: StorageTokens | None,
                    key: str) -> CampaignProgress | None:
    from proactive.errors import NotFound
    from proactive.runtime import SENDS_TABLE
    from proactive.storage.progress import Campaigns

    name = settings.table_name(SENDS_TABLE)
    async with credentials.table_client(settings, name, tokens) as table:
        try:
            return await Campaigns(table).progress(key)
        except NotFound:
            return None


async def _progress_view(settings: Settings, tokens: StorageTokens | None,
                         key: str) -> dict[str, Any] | None:
    """`progress`'s JSON: the summary's properties and the counts."""
    found = await _progress(settings, tokens, key)
    return found.view() if found is not None else None


async def _poison(settings: Settings, tokens: StorageTokens | None, limit: int) -> list[Any]:
    from proactive.errors import NotFound

    out: list[Any] = []
    async with credentials.queue_client(settings, settings.poison_queue, tokens) as queue:
        try:
            for item in await queue.peek_messages(max_messages=min(32, limit)):
                text = item.content
                try:
                    out.append(json.loads(text))
                except ValueError:
                    out.append(text)
        except NotFound:
            pass
    return out


def storage_settings(settings: Settings, account: str | None) -> Settings:
    """`settings`, or with `--account NAME`: that account by the person's own
    sign-in (DefaultAzureCredential), whatever the settings say."""
    if not account:
        return settings
    return dataclasses.replace(settings, storage_connection="", storage_credential="",
                               storage_client_id="", storage_account=account,
                               queue_service_uri="", table_service_uri="")


class StorageRefused(CliError):
    """Storage could not be reached as configured (no token, no role, no network)."""


def storage_endpoints(settings: Settings) -> dict[str, str]:
    """The queue and table endpoints the settings lead to (no network)."""
    if settings.storage_by_identity:
        return {s: settings.storage_url(s) for s in ("queue", "table")}
    from azure.data.tables import TableServiceClient
    from azure.storage.queue import QueueServiceClient

    try:
        queue = QueueServiceClient.from_connection_string(settings.storage_connection).url
        table = TableServiceClient.from_connection_string(settings.storage_connection).url
    except ValueError as exc:
        raise CliError(f"AzureWebJobsStorage is not a usable connection string: {exc}",
                       "see local.settings.example.json") from None
    return {"queue": queue, "table": table}


def _run(settings: Settings, work: Callable[[StorageTokens | None], Awaitable[T]]) -> T:
    """Run `work` with the process's storage token source (identity-based
    storage: one credential for every client), closed at the end."""
    from proactive.storage.faults import translated

    async def go() -> T:
        tokens = credentials.storage_tokens(settings)
        try:
            with translated():  # the token source's own errors too
                if tokens is not None:
                    # Signed in before the first storage call: the SDKs retry a token
                    # failure like a network one (for over a minute).
                    await tokens.token()
                return await work(tokens)
        finally:
            if tokens is not None:
                await tokens.close()

    endpoints = storage_endpoints(settings)
    for url in dict.fromkeys(endpoints.values()):
        probe(url)  # nothing there: say so now, not after the SDKs' minute of retries
    where = settings.storage_url("queue") or fail.where(endpoints["queue"])
    # The CLI says what went wrong in one line; azure-identity and the token cache
    # would log it again, with tracebacks, on stderr.
    quiet = [logging.getLogger(name) for name in ("azure", "proactive.storage.credentials")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.CRITICAL)
    try:
        return asyncio.run(go())
    except (StorageError, StorageUnavailable) as exc:
        raise _refused(exc, where, settings) from None
    finally:
        for logger, level in zip(quiet, levels, strict=True):
            logger.setLevel(level)


def _refused(exc: StorageError | StorageUnavailable, where: str,
             settings: Settings) -> CliError:
    """The one line for storage's refusal `exc` (translated by the storage
    edge; its cause, azure-core's error, has the words storage used)."""
    cause = exc.__cause__ or exc
    code = exc.code or getattr(cause, "reason", None) or ""
    if exc.reason == Reason.UNAUTHORIZED:
        first = (str(cause).splitlines() or [""])[0][:300]
        hint = " (sign in with 'az login')" if settings.storage_by_identity else ""
        return StorageRefused(f"could not sign in to {where}{hint}: {first}")
    if exc.status in (401, 403):
        return StorageRefused(
            f"{where} refused the request ({exc.status} {code}): your identity needs "
            "the Storage Queue Data Contributor and Storage Table Data Contributor roles on "
            "the account")
    if exc.status:
        return CliError(f"{where} answered {exc.status} {code}",
                        "try again; if it persists, check the account")
    return StorageRefused(f"could not reach {where}: {str(cause)[:200]}")


async def _known_users(settings: Settings, tokens: StorageTokens | None, tenant: str) -> int:
    """How many users of `tenant` have a stored personal chat (0 or 1 is enough
    to know whether an all-users send reaches anybody)."""
    from proactive.errors import NotFound
    from proactive.runtime import REFERENCES_TABLE
    from proactive.storage.references import ReferenceStore

    name = settings.table_name(REFERENCES_TABLE)
    async with credentials.table_client(settings, name, tokens) as table:
        try:
            async for _ in ReferenceStore(table).users_of_tenant(tenant):
                return 1
        except NotFound:
            pass
    return 0


async def send_state(settings: Settings, tokens: StorageTokens | None,
                     key: str) -> dict[str, Any] | None:
    """The progress of a many-user send; for a one-recipient send, the same
    shape made from its delivery record (settled once the record is final)."""
    from collections import Counter

    from proactive.reporting.reports import MAX_ENGAGEMENT_ROWS
    from proactive.storage.counting import reason_count
    from proactive.storage.deliveries import FINAL

    found = await _progress(settings, tokens, key)
    if found is not None:
        counts = found.counts
        if int(counts.get("queued", 0)) <= MAX_ENGAGEMENT_ROWS:  # as status does: stays quick
            rows = await _status(settings, tokens, key)
            counts["read"] = sum(row.get("read") == "read" for row in rows)
            counts["acked"] = sum(bool(row.get("ackedAt")) for row in rows)
        return found.view()
    rows = await _status(settings, tokens, key)
    if not rows:
        return None
    states = [str(row.get("state", "")) for row in rows]
    final = [s for s in states if s in FINAL]
    counts = {"queued": len(rows), "sent": states.count("sent"),
              "skipped": states.count("skipped"),
              "failed": len(final) - states.count("sent") - states.count("skipped"),
              "read": sum(row.get("read") == "read" for row in rows),
              "acked": sum(bool(row.get("ackedAt")) for row in rows)}
    by_reason = sum((reason_count(row.get("state"), row.get("reason")) for row in rows),
                    Counter())  # as a many-user send's counters have them
    counts.update(by_reason)
    return {"key": key, "state": "done" if len(final) == len(rows) else "running",
            "counts": counts}
