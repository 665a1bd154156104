"""Streamed reports: `send_report` (every recipient of a key) and
`reach_report` (who blocked, uninstalled or disabled the bot, who opted out).

Both page through Table Storage (1,000 rows a page) and yield bytes as they
go, so a 100,000-recipient send is never held in memory (benchmarks/
report_memory.py measures it). Formats: `csv` (a header line, then one line
a row) and `json`, which is JSON Lines: one object a line, so a reader can
stream it too and a cut-off download is still valid up to its last line.
The HTTP API and the CLI both call these.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from proactive.errors import UNREACHABLE
from proactive.storage import tables

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient

    from proactive.runtime import Runtime as AppRuntime
    from proactive.storage.preferences import PreferenceStore
    from proactive.storage.reads import ReadLookup

T = TypeVar("T")


class Runtime(Protocol):
    """What the reports read: the app's Runtime, or the CLI's tables."""

    def sdk_table(self, base: str) -> TableClient: ...

    @property
    def preferences(self) -> PreferenceStore: ...

FORMATS = ("csv", "json")
PAGE = 1000
# A send report's columns: the delivery row's field for each.
SEND_COLUMNS = {
    "recipient": "recipient", "state": "state", "reason": "reason", "attempts": "attempts",
    "firstAttemptAt": "createdAt", "lastAttemptAt": "updatedAt", "sentAt": "sentAt",
    "activityId": "activityId", "conversationId": "conversationId", "tenantId": "tenantId",
    "optedOut": "optedOut", "detail": "detail", "updateState": "updateState",
    "deleteState": "deleteState",
    # An attempt whose outcome is unknown (a crash mid-call, a lost answer): the
    # first such attempt, and the copies Teams accepted beyond `activityId`.
    "ambiguous": "ambiguous", "unknownAttempt": "unknownAttempt",
    "unknownAttemptAt": "unknownAttemptAt", "unknownCause": "unknownCause",
    "otherCopies": "otherCopies",
    "ackedAt": "ackedAt",
}
# Worked out per row from the conversation's read receipts (proactive/storage/
# reads.py), not stored on it: `read` is read / unread / not-available (group
# chats, channels) / unknown; `readAt` when, `readAtApprox` when it is an upper bound.
READ_COLUMNS = ("read", "readAt", "readAtApprox")
# The report's columns, in the CLI's stream and the API's pages alike.
REPORT_COLUMNS = (*SEND_COLUMNS, *READ_COLUMNS)
# The count of sent deliveries whose read state is unknown (ids that don't compare).
READ_UNKNOWN = "read_unknown"
REACH_COLUMNS = ("user", "tenantId", "status", "topic", "at", "via")


class ReportError(ValueError):
    """The report can't be made as asked (an unknown format)."""


async def _encode(rows: AsyncIterator[Mapping[str, Any]], columns: Iterable[str],
                  fmt: str) -> AsyncIterator[bytes]:
    if fmt not in FORMATS:
        raise ReportError(f"format must be one of {', '.join(FORMATS)}")
    names = list(columns)
    if fmt == "json":
        async for row in rows:
            yield (json.dumps({k: row.get(k) for k in names}, ensure_ascii=False,
                              default=str) + "\n").encode()
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=names, extrasaction="ignore",
                            lineterminator="\r\n")
    writer.writeheader()
    async for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in names})
        if buffer.tell() >= 64 * 1024:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


async def _deliveries(rt: Runtime, key: str) -> AsyncIterator[dict[str, Any]]:

    from proactive.runtime import DELIVERIES_TABLE, REFERENCES_TABLE
    from proactive.storage.reads import ReadLookup

    reads = ReadLookup(rt.sdk_table(REFERENCES_TABLE))
    table = rt.sdk_table(DELIVERIES_TABLE)
    pages = table.query_entities("PartitionKey eq @pk", parameters={"pk": tables.safe_key(key)},
                                 select=list(set(SEND_COLUMNS.values())), results_per_page=PAGE)
    async for entity in pages:
        row = {name: entity.get(field) for name, field in SEND_COLUMNS.items()}
        yield {**row, **await read_columns(reads, entity)}


async def read_columns(reads: ReadLookup, entity: Mapping[str, Any]) -> dict[str, Any]:
    """A delivery row's READ_COLUMNS (a row never sent: no read state)."""
    if entity.get("state") not in ("sent", "deleted") or not entity.get("activityId"):
        return {"read": None, "readAt": None, "readAtApprox": None}
    state, at, approximate = await reads.of(dict(entity))
    return {"read": str(state), "readAt": at or None, "readAtApprox": approximate or None}


def send_report(rt: Runtime, key: str, fmt: str) -> AsyncIterator[bytes]:
    """Every recipient's result under `key`, streamed. Raises ReportError
    for an unknown format (when iterated)."""
    return _encode(_deliveries(rt, key), REPORT_COLUMNS, fmt)


async def _unreachable(rt: Runtime) -> AsyncIterator[dict[str, Any]]:
    from proactive.runtime import REFERENCES_TABLE
    from proactive.storage.reference_rows import ReferenceRow

    table = rt.sdk_table(REFERENCES_TABLE)
    states = " or ".join(f"installState eq '{state}'" for state in sorted(UNREACHABLE))
    async for entity in table.query_entities(f"kind eq 'user' and ({states})",
                                             results_per_page=PAGE):
        row = ReferenceRow.from_entity(dict(entity))
        yield {"user": row.aad_id, "tenantId": row.tenant_id,
               "status": str(row.install_state), "at": row.state_at}


async def _opted_out(rt: Runtime) -> AsyncIterator[dict[str, Any]]:
    async for opt_out in rt.preferences.every():
        yield {"user": opt_out.aad_id, "tenantId": opt_out.tenant_id, "status": "opted-out",
               "topic": opt_out.topic, "at": opt_out.at, "via": opt_out.via}


# Members asked of Graph at once by `never_installed` (each call still paced
# through the tenant's Graph budget, so this bounds requests in flight only).
READS = 8


async def never_installed(rt: Runtime, group: str) -> AsyncIterator[dict[str, Any]]:
    """Members of an Entra ID group who never installed the bot, through
    Microsoft Graph (rows like the reach report's, status `not-installed`).

    Cheap first: a member whose user row says installed is skipped without a
    Graph call, and one whose row says blocked, uninstalled or disabled is in
    the report already under that status; a disabled account is a row
    `disabled-account`. Everyone else is asked of Graph (installedApps
    filtered by the app's catalog id), READS at a time, each call paced
    through the tenant's Graph budget (install.graph_call); a 429 waits
    Retry-After. A member Graph refuses is a row with the reason (`forbidden`,
    `not-found`, ...) and the report goes on. Raises ReportError (when
    iterated) if Graph install is off, the group can't be read, or Graph
    refuses the app itself (`graph-permission`: a missing permission or consent)."""
    import asyncio

    from proactive.delivering import install
    from proactive.errors import DeliveryFailed, Reason
    from proactive.storage.reference_keys import InstallState
    from proactive.teams.graph import DirectoryUser

    app_rt: AppRuntime = rt  # type: ignore[assignment]  # the full Runtime: it has Graph
    settings = getattr(rt, "settings", None)
    if settings is None or not settings.graph_install or getattr(rt, "graph", None) is None:
        raise ReportError("who in a group never installed the bot needs proactive install "
                          "through Microsoft Graph: set PROACTIVE_GRAPH_APP_CATALOG_ID or "
                          "PROACTIVE_GRAPH_APP_MANIFEST_ID")
    tenant = settings.app_tenant_id
    gate = asyncio.Semaphore(READS)

    async def page_of(link: str) -> tuple[list[DirectoryUser], str]:
        return await _patient(lambda: install.graph_call(
            app_rt, tenant, lambda graph: graph.group_members(group, link)))

    def row(member: DirectoryUser, status: str, tenant_id: str = "") -> dict[str, Any]:
        return {"user": member.id, "tenantId": tenant_id or tenant, "status": status, "at": ""}

    async def check(member: DirectoryUser, app: str) -> dict[str, Any] | None:
        if not member.enabled:
            return row(member, Reason.DISABLED_ACCOUNT)
        ref = await app_rt.references.user(member.id)
        if ref is not None and (ref.state == InstallState.INSTALLED or ref.state in UNREACHABLE):
            return None  # installed, or in the report already under its own status
        tenant_id = ref.tenant_id if ref else tenant
        async with gate:
            try:
                found = await _patient(lambda: install.graph_call(
                    app_rt, tenant, lambda graph: graph.installation(member.id, app)))
            except DeliveryFailed as exc:
                if exc.reason == Reason.GRAPH_PERMISSION:
                    raise
                return row(member, exc.reason, tenant_id)  # this member only
        return None if found else row(member, "not-installed", tenant_id)

    try:
        app = await _patient(lambda: install.catalog_id(app_rt, tenant))
    except DeliveryFailed as exc:
        raise ReportError(f"Microsoft Graph could not find the app: "
                          f"{exc.detail or exc.reason}") from exc
    try:
        members, link = await page_of("")
    except DeliveryFailed as exc:
        raise ReportError(f"Microsoft Graph could not list group {group!r}: "
                          f"{exc.detail or exc.reason}") from exc
    while True:
        try:
            found = await asyncio.gather(*(check(member, app) for member in members))
        except DeliveryFailed as exc:  # Graph refused the app itself: no member can be read
            raise ReportError(f"Microsoft Graph refused the app ({exc.reason}): "
                              f"{exc.detail}") from exc
        for checked in found:
            if checked is not None:
                yield checked
        if not link:
            break
        try:
            members, link = await page_of(link)
        except DeliveryFailed as exc:
            raise ReportError(f"Microsoft Graph could not list group {group!r}: "
                              f"{exc.detail or exc.reason}") from exc


async def _patient(call: Callable[[], Awaitable[T]], tries: int = 8) -> T:
    """`call`, again after Graph's Retry-After (or the pacer's delay) when
    throttled: a report waits rather than fail half-way."""
    import asyncio

    from proactive.errors import RetryLater, Transient

    for _ in range(tries - 1):
        try:
            return await call()
        except Transient as exc:  # 429 or 5xx: Graph says when (graph_call fed the pacer)
            await asyncio.sleep(exc.retry_after or 1.0)
        except RetryLater as exc:  # pacing.Defer: the tenant's budget is spent a while
            await asyncio.sleep(exc.delay or 1.0)
    return await call()


async def reach_rows(rt: Runtime, group: str = "") -> AsyncIterator[dict[str, Any]]:
    """The reach report's rows (REACH_COLUMNS), for callers that encode them."""
    async for row in _unreachable(rt):
        yield row
    async for row in _opted_out(rt):
        yield row
    if group:
        async for row in never_installed(rt, group):
            yield row


def reach_report(rt: Runtime, fmt: str, *, group: str = "") -> AsyncIterator[bytes]:
    """Who can't be reached and why, each with when: blocked, uninstalled or
    disabled (from the references), opted out (and of what), streamed."""
    return _encode(reach_rows(rt, group), REACH_COLUMNS, fmt)


# Status counts `read` and `acked` by reading every delivery row of the key
# (and one reference row per conversation); past this many it leaves them out
# and says to use the report, so a status poll stays cheap.
MAX_ENGAGEMENT_ROWS = 1_000


async def engagement(rt: Runtime, key: str) -> dict[str, int] | None:
    """Counts of the key's sent deliveries by read state (`read`, `unread`,
    `not-available`, READ_UNKNOWN), and `acked`; None
    when the key has more than MAX_ENGAGEMENT_ROWS deliveries."""
    from collections import Counter

    from proactive.errors import NotFound
    from proactive.runtime import DELIVERIES_TABLE, REFERENCES_TABLE
    from proactive.storage.reads import ReadLookup, ReadState

    reads = ReadLookup(rt.sdk_table(REFERENCES_TABLE))
    counts: Counter[str] = Counter({str(ReadState.READ): 0, "acked": 0})
    seen = 0
    pages = rt.sdk_table(DELIVERIES_TABLE).query_entities(
        "PartitionKey eq @pk", parameters={"pk": tables.safe_key(key)}, results_per_page=PAGE,
        select=["state", "activityId", "conversationId", "tenantId", "ackedAt"])
    try:
        async for entity in pages:
            seen += 1
            if seen > MAX_ENGAGEMENT_ROWS:
                return None
            state = (await read_columns(reads, entity))["read"]
            if state is not None:  # `unknown` alone is a delivery state (onUnknown skip)
                counts[READ_UNKNOWN if state == ReadState.UNKNOWN else state] += 1
            if entity.get("ackedAt"):
                counts["acked"] += 1
    except NotFound:
        pass
    return {name: counts[name] for name in sorted(counts)}
