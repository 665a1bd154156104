"""proactive.storage.table_rest against real Azurite, side by side with the SDK it stands in for."""

from __future__ import annotations

import base64
import math
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import EntityProperty, UpdateMode
from azure.data.tables.aio import TableClient, TableServiceClient

from proactive.config import DEV_ACCOUNT, DEV_KEY
from proactive.runtime import Runtime
from proactive.storage import tables
from proactive.storage.autocreate import unwrap
from proactive.storage.table_rest import RestTableClient, parse_connection_string
from proactive_devtools.processes import Azurite

# Every value type the project stores, at the edges of each EDM type.
VALUES: dict[str, Any] = {
    "text": "Build **42** is green", "empty": "", "unicode": "héllo 🌍 \u4e2d",
    "quote": "it's \"quoted\"", "int": 7, "negative": -3, "zero": 0,
    "int32max": 2**31 - 1, "int32min": -(2**31),
    "int64": 2**40, "int64min": -(2**63), "int64max": 2**63 - 1,
    "float": 1.0, "fraction": 1751899999.123, "tiny": 1e-300, "minus": -2.5,
    "nan": math.nan, "inf": math.inf, "ninf": -math.inf,
    "yes": True, "no": False,
}
KEYS = ["it's", "a''b", "user:29:1abc", "x@y.z", "a;b=c", "100%", "%25", "üñïçødé 🌍",
        "sp ace", "+plus&amp", "(paren),[br]!$*"]


@pytest.fixture
async def pair(azurite: Azurite) -> AsyncIterator[tuple[RestTableClient, TableClient]]:
    """The REST client and the SDK client on one fresh table."""
    name = f"rest{uuid.uuid4().hex[:10]}"
    conn = azurite.connection_string
    async with TableServiceClient.from_connection_string(conn) as service:
        sdk = await service.create_table(name)
        rest = RestTableClient.from_connection_string(conn, name)
        try:
            yield rest, sdk
        finally:
            await rest.close()
            await sdk.close()


def plain(entity: dict[str, Any]) -> dict[str, Any]:
    """What the SDK read, with its Int64 EntityProperty as the plain int we give."""
    return {k: v.value if isinstance(v, EntityProperty) else v for k, v in entity.items()}


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal, with types, NaN equal to NaN."""
    def norm(d: dict[str, Any]) -> dict[str, Any]:
        return {k: ("NaN" if isinstance(v, float) and math.isnan(v) else v, type(v))
                for k, v in d.items()}
    return norm(a) == norm(b)


def row(pk: str = "p", rk: str = "r", **fields: Any) -> dict[str, Any]:
    return {"PartitionKey": pk, "RowKey": rk, **fields}


async def test_every_value_type_round_trips_and_reads_as_the_sdk_reads_it(pair: Any) -> None:
    rest, sdk = pair
    written = row(**VALUES, skipped=None)
    expected = {k: v for k, v in written.items() if v is not None}
    meta = await rest.create_entity(written)
    mine = await rest.get_entity("p", "r")
    theirs = await sdk.get_entity("p", "r")
    assert same(dict(mine), expected)
    assert same(plain(theirs), expected)
    assert isinstance(mine["float"], float) and isinstance(mine["int"], int)
    assert type(mine["int64"]) is int  # not the SDK's EntityProperty
    assert mine.metadata["etag"] == theirs.metadata["etag"] == meta["etag"]


async def test_what_the_sdk_writes_reads_back_the_same_here(pair: Any) -> None:
    rest, sdk = pair
    sdk_values = {k: v for k, v in VALUES.items() if not k.startswith("int64")}  # SDK: Int32 only
    await sdk.create_entity(row(**sdk_values))
    mine = await rest.get_entity("p", "r")
    assert same(dict(mine), row(**sdk_values))
    assert same(dict(mine), plain(await sdk.get_entity("p", "r")))
    # Int64 as the SDK writes them (EntityProperty), read back here as plain ints.
    from azure.data.tables import EdmType
    await sdk.create_entity(row(rk="big", n=EntityProperty(2**40, EdmType.INT64)))
    assert dict(await rest.get_entity("p", "big")) == row(rk="big", n=2**40)


async def test_an_etag_from_one_client_guards_a_replace_by_the_other(pair: Any) -> None:
    rest, sdk = pair
    first = (await rest.create_entity(row(n=1)))["etag"]
    second = (await sdk.update_entity(row(n=2), mode=UpdateMode.REPLACE, etag=first,
                                      match_condition=MatchConditions.IfNotModified))["etag"]
    with pytest.raises(ResourceModifiedError) as stale:
        await rest.update_entity(row(n=3), mode=UpdateMode.REPLACE, etag=first,
                                 match_condition=MatchConditions.IfNotModified)
    assert stale.value.status_code == 412
    third = (await rest.update_entity(row(n=3), mode=UpdateMode.REPLACE, etag=second,
                                      match_condition=MatchConditions.IfNotModified))["etag"]
    got = await sdk.get_entity("p", "r")
    assert (got["n"], got.metadata["etag"]) == (3, third)
    # The helpers every state transition uses, over this client.
    entity, etag = await tables.read(rest, "p", "r")  # type: ignore[misc]
    assert etag == third
    await tables.replace_if(rest, {**entity, "n": 4}, etag)
    with pytest.raises(tables.Conflict):
        await tables.replace_if(rest, {**entity, "n": 5}, etag)


async def test_insert_conflict_missing_rows_and_other_errors(pair: Any, azurite: Azurite) -> None:
    rest, _ = pair
    await rest.create_entity(row())
    with pytest.raises(ResourceExistsError) as exists:
        await rest.create_entity(row(other=1))
    assert exists.value.status_code == 409
    with pytest.raises(tables.Conflict):
        await tables.create(rest, row())
    with pytest.raises(ResourceNotFoundError) as missing:
        await rest.get_entity("p", "nope")
    assert missing.value.status_code == 404
    assert await tables.read(rest, "p", "nope") is None
    with pytest.raises(ResourceNotFoundError):  # If-Match "*": no upsert
        await rest.update_entity(row(rk="nope"), mode=UpdateMode.REPLACE)
    with pytest.raises(tables.Conflict):
        await tables.replace_if(rest, row(rk="nope"), 'W/"datetime\'2020-01-01T00%3A00%3A00Z\'"')
    await rest.delete_entity("p", "r")
    await rest.delete_entity("p", "r")  # absent: no error, as the SDK
    assert await tables.read(rest, "p", "r") is None
    bad = RestTableClient("devstoreaccount1", b"wrong key", f"http://127.0.0.1:"
                          f"{azurite.table_port}/devstoreaccount1", rest.table_name)
    try:
        with pytest.raises(HttpResponseError) as denied:
            await bad.get_entity("p", "r")
        assert denied.value.status_code == 403
        assert type(denied.value) is HttpResponseError
    finally:
        await bad.close()


async def test_merge_keeps_other_properties_replace_drops_them(pair: Any) -> None:
    rest, sdk = pair
    await rest.upsert_entity(row(a=1, b="x"), mode=UpdateMode.MERGE)  # creates
    await rest.upsert_entity(row(b="y", c=2.5), mode=UpdateMode.MERGE)
    assert dict(await sdk.get_entity("p", "r")) == row(a=1, b="y", c=2.5)
    await rest.update_entity(row(d=True), mode=UpdateMode.MERGE)
    assert dict(await rest.get_entity("p", "r")) == row(a=1, b="y", c=2.5, d=True)
    await rest.upsert_entity(row(only="this"), mode=UpdateMode.REPLACE)
    assert dict(await sdk.get_entity("p", "r")) == row(only="this")
    await rest.update_entity(row(now="that"), mode=UpdateMode.REPLACE)
    assert dict(await rest.get_entity("p", "r")) == row(now="that")
    await tables.merge(rest, row(more=1))
    assert dict(await rest.get_entity("p", "r")) == row(now="that", more=1)


async def test_query_with_parameters_select_and_continuations(
        pair: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    rest, sdk = pair
    for i in range(23):
        await rest.create_entity(row("it's", f"r{i:02d}", n=i, kind="odd" if i % 2 else "even"))
    await rest.create_entity(row("other", "r00", n=50, kind="even"))
    pages: list[str] = []
    request = RestTableClient._request

    async def counted(self: RestTableClient, method: str, path: str, query: str,
                      *args: Any) -> Any:
        pages.append(query)
        return await request(self, method, path, query, *args)

    monkeypatch.setattr(RestTableClient, "_request", counted)
    found = [e async for e in rest.query_entities(
        "PartitionKey eq @pk", parameters={"pk": "it's"}, results_per_page=5)]
    assert len(pages) == 5 and all("NextRowKey=" in q for q in pages[1:])
    assert "%24filter=PartitionKey%20eq%20%27it%27%27s%27" in pages[0]
    assert [e["RowKey"] for e in found] == [f"r{i:02d}" for i in range(23)]
    assert all(e.metadata["etag"] for e in found)
    theirs = [e async for e in sdk.query_entities(
        "PartitionKey eq @pk", parameters={"pk": "it's"}, results_per_page=5)]
    assert [dict(e) for e in found] == [dict(e) for e in theirs]
    assert [e.metadata["etag"] for e in found] == [e.metadata["etag"] for e in theirs]
    # An etag from a query guards a write, as one from a point read does.
    await tables.replace_if(rest, {**found[0], "n": 100}, found[0].metadata["etag"])
    picked = [dict(e) async for e in rest.query_entities(
        "kind eq @kind and n ge @low", parameters={"kind": "even", "low": 10},
        select=["RowKey", "n"], results_per_page=3)]
    assert picked == [{"RowKey": "r00", "n": 100}] + [
        {"RowKey": f"r{i:02d}", "n": i} for i in range(10, 23, 2)] + [{"RowKey": "r00", "n": 50}]
    everything = [e async for e in rest.list_entities(results_per_page=4)]
    assert len(everything) == 24
    first = [e async for e in rest.list_entities(select="n", results_per_page=1)][:1]
    assert list(first[0]) == ["n"]


async def test_keys_with_quotes_reserved_and_unicode_characters(pair: Any) -> None:
    rest, sdk = pair
    for key in KEYS:
        await rest.create_entity(row(key, key, key=key))
        assert dict(await sdk.get_entity(key, key)) == row(key, key, key=key)
        await sdk.upsert_entity(row(key, key + "-sdk", key=key))
        got = await rest.get_entity(key, key + "-sdk")
        assert got["key"] == key
        meta = await rest.update_entity(row(key, key, key=key, n=1), mode=UpdateMode.REPLACE,
                                        etag=(await rest.get_entity(key, key)).metadata["etag"],
                                        match_condition=MatchConditions.IfNotModified)
        assert meta["etag"]
        rows = [e["RowKey"] async for e in rest.query_entities(
            "PartitionKey eq @pk", parameters={"pk": key})]
        assert rows == sorted([key, key + "-sdk"])
        await rest.delete_entity(key, key)
        with pytest.raises(ResourceNotFoundError):
            await sdk.get_entity(key, key)
    # The keys the stores build (tables.safe_key) too.
    key = tables.safe_key("user:29:1a'b/c?d#e%f\\g\x01 ü")
    await rest.create_entity(row(key, key))
    assert (await rest.get_entity(key, key))["RowKey"] == key


def test_connection_strings() -> None:
    key = "a2V5"  # base64 of "key"
    assert parse_connection_string("UseDevelopmentStorage=true") == (
        DEV_ACCOUNT, base64.b64decode(DEV_KEY),
        f"http://127.0.0.1:10002/{DEV_ACCOUNT}")
    assert parse_connection_string(
        f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={key};"
        "EndpointSuffix=core.usgovcloudapi.net") == (
        "acct", b"key", "https://acct.table.core.usgovcloudapi.net")
    assert parse_connection_string(f"AccountName=acct;AccountKey={key}")[2] == \
        "https://acct.table.core.windows.net"
    assert parse_connection_string(
        f"accountname=acct;accountkey={key};TableEndpoint=http://127.0.0.1:1/acct/;")[2] == \
        "http://127.0.0.1:1/acct"
    for keyless in ("TableEndpoint=https://x.table.core.windows.net;SharedAccessSignature=sv=1",
                    "AccountName=acct"):
        with pytest.raises(ValueError):
            parse_connection_string(keyless)


async def test_the_runtime_uses_it_for_the_hot_path_tables(runtime: Runtime) -> None:
    for table in (runtime.references.table, runtime.deliveries.table, runtime.tenant_pacer.table):
        assert isinstance(unwrap(table), RestTableClient)  # under the create-if-missing wrapper
    await runtime.deliveries.table.create_entity(row(n=1))
    sdk = runtime.table_service.get_table_client(runtime.deliveries.table.table_name)
    assert dict(await sdk.get_entity("p", "r")) == row(n=1)
