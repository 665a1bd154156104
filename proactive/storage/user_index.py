"""A tenant's users, in one partition of the references table: `allUsers`
without a table scan, and a part's references in one query.

    users:{tenant id, lower case}  /  {aad object id, lower case}

Each row is a copy of the user's reference row (`user:{aad id}` / tenant:
what a send needs: conversation, serviceUrl, bot, install state, time zone).
ReferenceStore writes it after every write of the user row (install,
uninstall, block, a conversation created, a serviceUrl moved), so it tells
the same as the user row; two writes racing for one user may leave the older
copy here. A part therefore uses a copy only while it says `installed` (stale
towards trying Teams, whose 403/404 is authoritative and marks both rows);
any other state is read again from the user row.

Listing a tenant's users reads this partition a page (PAGE: 250) at a time, in
key order, so a part cut from it holds a contiguous run of keys and reads its
references back in one range query (`part_rows`).

Rows written before the index existed: the index of a tenant first seen
since (its `tenant:` row created by this code) starts with a marker row
(RowKey MARKER, before every aad id), read with the listing's first page. A
tenant without it, one from before the index, has its users listed once
with the old scan (RowKey = tenant, kind = user, across the table) beside
the index, and each user row missing there is copied in (one write per user,
once); then the marker is written and every later listing reads the index
alone.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

from proactive.errors import NotFound
from proactive.storage import tables
from proactive.storage.faults import translated

if TYPE_CHECKING:
    from proactive.storage.tables import Table

# The RowKey of the marker row: the tenant's users are all in its index.
MARKER = "!"
# The fields of a user row a send needs (Reference.from_entity) and the index keeps.
FIELDS = ("conversationId", "serviceUrl", "tenantId", "botId", "conversationType",
          "installState", "timezone", "locale", "userId", "aadObjectId")
PAGE = 250  # a 200-user tenant and its marker row: one page
# A part's range query reads at most this many rows (its users are contiguous
# when it was cut from the index; a hand-made list may not be).
PART_ROWS_LIMIT = 100


def index_pk(tenant_id: str) -> str:
    return tables.safe_key(f"users:{tenant_id.lower()}")


def index_rk(aad_id: str) -> str:
    return tables.safe_key(aad_id.lower())


def entry(user_row: dict[str, Any]) -> dict[str, Any] | None:
    """The index row of a user row (None: not a user with a tenant)."""
    aad, tenant = user_row.get("aadObjectId"), user_row.get("tenantId")
    if user_row.get("kind") != "user" or not aad or not tenant:
        return None
    return {"PartitionKey": index_pk(str(tenant)), "RowKey": index_rk(str(aad)),
            **{name: user_row[name] for name in FIELDS if name in user_row}}


def as_user_row(row: dict[str, Any]) -> dict[str, Any]:
    """An index row as the user row it copies (with its keys)."""
    return {**row, "PartitionKey": _user_pk(str(row.get("aadObjectId", ""))),
            "RowKey": tables.safe_key(str(row.get("tenantId", ""))), "kind": "user"}


def _user_pk(aad_id: str) -> str:  # references.user_pk (which imports this module)
    return tables.safe_key(f"user:{aad_id.lower()}")


async def put(table: Table, user_row: dict[str, Any]) -> None:
    """Copy a user row (as just written) into its tenant's index."""
    found = entry(user_row)
    if found is not None:
        await table.upsert_entity(found, mode="replace")


async def change(table: Table, tenant_id: str, aad_id: str, fields: dict[str, Any]) -> None:
    """Change fields of an index row that exists (a user never listed stays out)."""
    with contextlib.suppress(NotFound), translated():
        await table.update_entity({"PartitionKey": index_pk(tenant_id),
                                   "RowKey": index_rk(aad_id), **fields},
                                  mode="merge")


async def users(table: Table, tenant_id: str, after: str = "") -> AsyncIterator[dict[str, Any]]:
    """The tenant's index rows, in key order; the first listing of a tenant
    indexed before this code copies its rows over from the old scan first.
    `after`: only the users after this one (a listing that went this far
    before: the copy is done)."""
    if after:
        async for row in _index(table, tenant_id, after=index_rk(after)):
            yield row
        return
    rows = _index(table, tenant_id)
    first = await anext(rows, None)
    if first is None or first["RowKey"] != MARKER:  # a tenant from before the index
        await _copy_missing(table, tenant_id)
        await mark(table, tenant_id)
        rows = _index(table, tenant_id)
    async for row in rows:
        if row["RowKey"] != MARKER:
            yield row


async def record_tenant(table: Table, row: dict[str, Any], seen: set[str]) -> None:
    """Write the tenant row (its latest serviceUrl); a tenant new here gets its
    index marked complete from the start. Once per tenant per process (`seen`,
    kept to a few thousand) an insert is tried first, refused for a tenant
    known before; then a merge, as every other time."""
    tenant = str(row["tenantId"]).lower()
    if tenant in seen:
        await tables.merge(table, row)
        return
    if len(seen) >= 4096:
        seen.clear()
    try:
        await tables.create(table, row)
    except tables.Conflict:
        await tables.merge(table, row)
    else:
        await mark(table, tenant)
    seen.add(tenant)


async def mark(table: Table, tenant_id: str) -> None:
    """Say that all of the tenant's users are in its index (a new tenant:
    from its first user on)."""
    await table.upsert_entity({"PartitionKey": index_pk(tenant_id), "RowKey": MARKER,
                               "indexed": True})


def _index(table: Table, tenant_id: str, after: str = "") -> AsyncIterator[dict[str, Any]]:
    """The index partition in key order (`after`: from the next RowKey on)."""
    query, parameters = "PartitionKey eq @pk", {"pk": index_pk(tenant_id)}
    if after:
        query, parameters["after"] = query + " and RowKey gt @after", after
    return _dicts(table.query_entities(query, parameters=parameters, results_per_page=PAGE))


async def _dicts(rows: AsyncIterator[Any]) -> AsyncIterator[dict[str, Any]]:
    async for row in rows:
        yield dict(row)


async def part_references(table: Table, tenant_id: str, aad_ids: Sequence[str],
                          fresh: Callable[[str, str], dict[str, Any] | None]
                          ) -> dict[str, dict[str, Any]]:
    """A part's users' reference rows by user PartitionKey: those `fresh`
    (the store's cache) has, the rest read from the tenant's index in one
    range query. Only `installed` copies are used; anyone else is left to be
    read from their own row as before."""
    rk = tables.safe_key(tenant_id) if tenant_id else ""
    held: dict[str, dict[str, Any]] = {}
    missing = []
    for aad in aad_ids:
        pk = _user_pk(aad)
        cached = fresh(pk, rk) if rk else None
        if cached is not None:
            held[pk] = cached
        else:
            missing.append(aad)
    if missing and tenant_id:
        for row in await part_rows(table, tenant_id, missing):
            if row.get("installState") == "installed" and row.get("aadObjectId"):
                user_row = as_user_row(row)
                held[user_row["PartitionKey"]] = user_row
    return held


async def _copy_missing(table: Table, tenant_id: str) -> None:
    """The old scan beside the index, both in the same order (user:{aad id}
    and {aad id}, lower case): the user rows not in the index yet are copied
    in (all of them for a tenant from before the index, none for a tenant
    whose installs were all recorded since). Nothing is held but a page."""
    scan = table.query_entities(
        "RowKey eq @rk and kind eq 'user'", parameters={"rk": tables.safe_key(tenant_id)},
        results_per_page=PAGE)
    index = _index(table, tenant_id)
    next_key: str | None = ""
    async for row in scan:
        key = index_rk(str(row.get("aadObjectId", "")))
        while next_key is not None and next_key < key:
            found = await anext(index, None)
            next_key = str(found["RowKey"]) if found is not None else None
        if next_key != key:
            await put(table, dict(row))


async def part_rows(table: Table, tenant_id: str, aad_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The index rows of users in index order, in one range query (None of
    them when they are not in index order: a hand-made list)."""
    keys = [index_rk(a) for a in aad_ids]
    if not keys or any(a >= b for a, b in itertools.pairwise(keys)):
        return []
    wanted, rows = set(keys), []
    query = table.query_entities(
        "PartitionKey eq @pk and RowKey ge @lo and RowKey le @hi",
        parameters={"pk": index_pk(tenant_id), "lo": keys[0], "hi": keys[-1]},
        results_per_page=PART_ROWS_LIMIT)
    seen = 0
    async for row in query:
        seen += 1
        if row["RowKey"] in wanted:
            rows.append(dict(row))
        if seen >= PART_ROWS_LIMIT:
            break
    return rows


