"""A send's state, its recipients page by page, and cancel, for the HTTP API.

State comes from what the workers record: a many-user send's progress counters
(`proactive.storage.progress`), otherwise its delivery rows, and its scheduled
items. A key the service has no record of is 404: a message accepted a moment
ago shows up once a worker has picked it up (the detail says so).
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from proactive.api import paging
from proactive.api.problems import Problem, Reply
from proactive.contract import MAX_KEY, Op, OutboxMessage
from proactive.storage import tables

if TYPE_CHECKING:
    from proactive.runtime import Runtime
    from proactive.storage.send_index import SendIndexRow

# A one-recipient send has one delivery row; more than this without progress
# counters is unusual, and status must stay one cheap read.
MAX_ROWS_COUNTED = 1000


def check_key(key: str) -> str:
    if not key.strip() or len(key) > MAX_KEY:
        raise Problem(400, "schema", f"the key must be 1 to {MAX_KEY} characters")
    return key


async def status(rt: Runtime, key: str, *, base_url: str) -> Reply:
    from proactive.runtime import DELIVERIES_TABLE
    from proactive.scheduling import list_items
    from proactive.storage.counting import reason_count
    from proactive.storage.deliveries import FINAL
    from proactive.storage.progress import FINISHED

    check_key(key)
    view: dict[str, Any] = {"key": key}
    progress = await rt.campaigns.progress(key)
    if progress is not None:
        summary = progress.summary
        counts = {k: int(v) for k, v in progress.counts.items()}
        done = sum(counts.get(k, 0) for k in FINISHED)
        state = str(summary.state or "running")
        if state == "running" and counts.get("queued", 0) and done >= counts["queued"]:
            state = "done"
        view.update(state=state, counts=counts, createdAt=summary.created_at)
        if summary.cancelled_at:
            view["cancelledAt"] = summary.cancelled_at
        if summary.detail:  # done with nobody to send to: why
            view.update(reason=summary.reason, detail=summary.detail)
    else:
        states: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        table = rt.sdk_table(DELIVERIES_TABLE)
        ambiguous = 0  # an attempt's outcome was unknown (README "Exactly once ...")
        async for row in table.query_entities("PartitionKey eq @pk",
                                              select=["state", "reason", "ambiguous"],
                                              parameters={"pk": tables.safe_key(key)}):
            states[str(row.get("state"))] += 1
            reasons.update(reason_count(row.get("state"), row.get("reason")))
            ambiguous += bool(row.get("ambiguous"))
            if sum(states.values()) >= MAX_ROWS_COUNTED:
                break
        if states:
            state = "done" if set(states) <= FINAL else "running"
            view.update(state=state, counts={**states, **reasons} | (
                {"ambiguous": ambiguous} if ambiguous else {}))
    scheduled = [item for item in await list_items(rt.schedules_table, key)
                 if item.get("state") in ("scheduled", "dispatching")]
    if scheduled:
        view["scheduled"] = len(scheduled)
        view.setdefault("state", "scheduled")
        view.setdefault("counts", {})
    if "state" not in view:
        raise Problem(404, "unknown-key", f"no send with key {key!r} is recorded (a message "
                                          "accepted a moment ago appears once a worker has "
                                          "picked it up)")
    view["counts"] = {k: int(v) for k, v in view["counts"].items()}
    from proactive.reporting.reports import engagement

    seen = await engagement(rt, key)
    if seen is None:
        view["engagement"] = "too many recipients to count here: see the report"
    else:  # read, unread, not-available, unknown, acked (README "Read, acknowledged...")
        view["counts"].update(seen)
    view["links"] = {name: f"{base_url}{name}" for name in ("recipients", "report")}
    return Reply.json(200, {k: v for k, v in view.items() if v is not None})


async def page_of_recipients(rt: Runtime, key: str, *, limit: str | None,
                             continuation: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the key's recipients, in recipient order, with the send
    report's columns (those with a value), and the token of the next page."""
    # A pager that continues from a token; a missing table is an empty page.
    from proactive.errors import NotFound
    from proactive.reporting.reports import SEND_COLUMNS
    from proactive.runtime import DELIVERIES_TABLE

    check_key(key)
    size, token = paging.page_size(limit), paging.decode_token(continuation)
    table = rt.sdk_table(DELIVERIES_TABLE, create=False)
    pages = table.query_entities("PartitionKey eq @pk", parameters={"pk": tables.safe_key(key)},
                                 results_per_page=size,
                                 select=list(set(SEND_COLUMNS.values()))).by_page(
        continuation_token=token)  # type: ignore[arg-type]  # the SDK's token is a dict
    items: list[dict[str, Any]] = []
    from proactive.reporting.reports import read_columns
    from proactive.runtime import REFERENCES_TABLE
    from proactive.storage.reads import ReadLookup

    reads = ReadLookup(rt.sdk_table(REFERENCES_TABLE))
    try:
        async for page in pages:
            async for row in page:
                item = {name: row[field] for name, field in SEND_COLUMNS.items()
                        if row.get(field) not in (None, "")}
                read = await read_columns(reads, row)
                items.append({**item, **{k: v for k, v in read.items() if v is not None}})
            break
    except NotFound:
        pass
    return items, paging.encode_token(getattr(pages, "continuation_token", None))


async def recipients(rt: Runtime, key: str, *, limit: str | None,
                     continuation: str | None) -> Reply:
    items, next_token = await page_of_recipients(rt, key, limit=limit,
                                                 continuation=continuation)
    body: dict[str, Any] = {"key": key, "items": items}
    if next_token:
        body["continuation"] = next_token
    return Reply.json(200, body)


async def cancel(rt: Runtime, key: str, *, base_url: str) -> Reply:
    """Queue a cancel, as `python -m proactive cancel` does: the worker carries it
    out in order with the key's other messages (README "Sends to many users")."""
    check_key(key)
    await rt.outbox.put(OutboxMessage(Op.CANCEL, key))
    return Reply.json(202, {"key": key, "status": base_url}, Location=base_url)


# Index rows read at most per listing request when filters skip most of them;
# the answer then carries a continuation from where it stopped.
MAX_SCANNED = 2000


async def listing(rt: Runtime, *, limit: str | None, continuation: str | None,
                  state: str | None, topic: str | None, text: str | None) -> Reply:
    """Sends to many recipients, newest first, from the send index (never a
    scan of deliveries): each with its state, audience and counts."""
    from proactive.errors import NotFound
    from proactive.runtime import SENDS_TABLE
    from proactive.storage import send_index
    from proactive.storage.send_index import SendIndexRow, SendState

    size, token = paging.page_size(limit), paging.decode_token(continuation)
    if state and state not in SendState.__members__.values():
        raise Problem(400, "bad-state", "'state' must be one of "
                      + ", ".join(str(s) for s in SendState))
    for name, value in (("topic", topic), ("text", text)):
        if value and len(value) > MAX_KEY:
            raise Problem(400, "schema", f"'{name}' must be at most {MAX_KEY} characters")
    table = rt.sdk_table(SENDS_TABLE, create=False)
    query = "PartitionKey eq @pk and RowKey lt @below"
    params = {"pk": send_index.PARTITION, "below": send_index.ROWS_BELOW}
    if topic:  # an exact match the service can filter itself
        query += " and topic eq @topic"
        params["topic"] = topic
    pages = table.query_entities(query, parameters=params, results_per_page=size).by_page(
        continuation_token=token)  # type: ignore[arg-type]  # the SDK's token is a dict
    found: list[SendIndexRow] = []
    scanned, next_token = 0, None
    try:
        async for page in pages:
            async for row in page:
                scanned += 1
                entry = SendIndexRow.from_entity(dict(row))
                if entry.matches(state=state or "", topic=topic or "", text=text or ""):
                    found.append(entry)
            next_token = getattr(pages, "continuation_token", None)
            if len(found) >= size or scanned >= MAX_SCANNED or not next_token:
                break
    except NotFound:
        next_token = None
    # A page may hold more matches than asked for: all are returned rather
    # than a token that could not resume inside a page.
    items = [await _listed(rt, entry) for entry in found]
    body: dict[str, Any] = {"items": items}
    if encoded := paging.encode_token(next_token):
        body["continuation"] = encoded
    return Reply.json(200, body)


async def _listed(rt: Runtime, entry: SendIndexRow) -> dict[str, Any]:
    from proactive.storage.progress import FINISHED

    progress = await rt.campaigns.progress(entry.key)
    counts = {k: int(v) for k, v in (progress.counts if progress else {}).items()}
    state = str((progress.summary.state if progress else None) or entry.state)
    if state == "running" and counts.get("queued", 0) and sum(
            counts.get(k, 0) for k in FINISHED) >= counts["queued"]:
        state = "done"
    item = {"key": entry.key, "state": state, "createdAt": entry.created_at,
            "audience": entry.audience, "topic": entry.topic, "text": entry.text,
            "counts": counts}
    return {k: v for k, v in item.items() if v not in ("", None)}
