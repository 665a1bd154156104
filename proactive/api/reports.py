"""The report and reach routes' data.

The reach route answers with the reach report of `proactive.reporting.reports`
(who blocked, uninstalled or disabled the bot, who opted out, each with when)
beside counts of what the bot can reach per tenant.

Why pages and not a stream: a Python Functions HttpResponse holds its whole
body (true streaming needs the azurefunctions-extensions-http-fastapi
extension, which changes every HTTP trigger to ASGI types and which the
built-in host can't run). A report is therefore served in pages of at most
MAX_PAGE rows, each a complete CSV (with its header) or JSON document, the next
page named by a `continuation` token (in the JSON and in a `Link: rel="next"`
header), so no response grows with the audience.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from typing import TYPE_CHECKING

from proactive.api.problems import Problem, Reply
from proactive.api.sends import page_of_recipients
from proactive.reporting.reports import REPORT_COLUMNS

if TYPE_CHECKING:
    from proactive.runtime import Runtime

FORMATS = ("json", "csv")
# Reach counts every reference row; past this many it says the count is partial
# rather than make one request read an unbounded table.
MAX_REACH_ROWS = 100_000


def report_format(fmt: str | None, accept: str) -> str:
    if fmt:
        if fmt not in FORMATS:
            raise Problem(400, "bad-format", f"'format' must be one of {', '.join(FORMATS)}")
        return fmt
    return "csv" if "text/csv" in accept.lower() else "json"


async def report(rt: Runtime, key: str, *, fmt: str, limit: str | None,
                 continuation: str | None, url: str) -> Reply:
    items, token = await page_of_recipients(rt, key, limit=limit, continuation=continuation)
    headers = {}
    if token:
        sep = "&" if "?" in url else "?"
        headers["Link"] = f'<{url}{sep}format={fmt}&continuation={token}>; rel="next"'
    if fmt == "json":
        body = {"key": key, "items": items, **({"continuation": token} if token else {})}
        return Reply.json(200, body, **headers)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(REPORT_COLUMNS), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(items)
    return Reply(200, out.getvalue().encode(), "text/csv", headers)


async def reach(rt: Runtime, group: str = "") -> Reply:
    """Per tenant: how many users, conversations and teams the bot can reach;
    and who can't be reached, with why and when (at most MAX_REACH_ROWS); with
    `group`, also that Entra ID group's members who never installed the bot
    (one paced Graph call each: for small groups; the CLI for large ones)."""
    from proactive.errors import NotFound
    from proactive.reporting.reports import REACH_COLUMNS, ReportError, reach_rows
    from proactive.runtime import REFERENCES_TABLE
    from proactive.storage.reference_rows import ReferenceRow

    table = rt.sdk_table(REFERENCES_TABLE, create=False)
    counts: dict[str, Counter[str]] = {}
    rows, partial = 0, False
    try:
        async for entity in table.query_entities("kind ne ''", select=["RowKey", "kind"]):
            rows += 1
            if rows > MAX_REACH_ROWS:
                partial = True
                break
            row = ReferenceRow.from_entity(dict(entity))
            counts.setdefault(row.row_key, Counter())[str(row.kind)] += 1
    except NotFound:
        pass
    tenants = [{"tenant": tenant, "counts": dict(kinds)}
               for tenant, kinds in sorted(counts.items())]
    unreachable: list[dict[str, str]] = []
    try:
        async for entry in reach_rows(rt, group):
            if len(unreachable) >= MAX_REACH_ROWS:
                partial = True
                break
            unreachable.append({name: "" if entry.get(name) is None else str(entry[name])
                                for name in REACH_COLUMNS})
    except ReportError as exc:  # Graph install off, or the group can't be read
        raise Problem(400, "bad-group", str(exc)) from exc
    return Reply.json(200, {"tenants": tenants, "unreachable": unreachable,
                            "partial": partial})
