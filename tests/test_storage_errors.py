"""Storage errors are translated once, at the storage edge (issue 20 §1): an
operation on a Runtime client that fails for want of storage raises the tree's
StorageUnavailable, so nothing above proactive/storage/ catches azure-core's
exceptions; an answer about the entity (404, 409, 412, a transaction's
conflict) becomes its member too (NotFound, Conflict, PreconditionFailed).
The real outage (Azurite stopped) is in test_deliveries_outage.py and
test_chaos.py; here each kind of failure is raised on purpose under the
wrapper every Runtime client goes through."""

from __future__ import annotations

import ast
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)

from proactive.errors import (
    Conflict,
    NotFound,
    PreconditionFailed,
    Reason,
    StorageError,
    StorageUnavailable,
)
from proactive.storage.autocreate import checked, on_demand
from proactive.storage.faults import translated


class Failing:
    """A storage client whose every operation fails with `error`."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def get_entity(self, *args: Any) -> dict[str, Any]:
        raise self.error

    def list_entities(self) -> AsyncIterator[dict[str, Any]]:
        async def pages() -> AsyncIterator[dict[str, Any]]:
            raise self.error
            yield {}  # an async generator, as the SDK's pager

        return pages()


def status(code: int) -> HttpResponseError:
    error = HttpResponseError(message=f"status {code}")
    error.status_code = code
    return error


async def nothing() -> None:
    return None


OUTAGES = {
    "no connection": ServiceRequestError("connection refused"),
    "no answer": ServiceResponseError("connection reset"),
    "timeout": TimeoutError(),
    "socket": ConnectionResetError(),
    "500": status(500),
    "503": status(503),
    "429": status(429),
    "408": status(408),
}

def transaction(code: int, index: int) -> HttpResponseError:
    from azure.data.tables import TableTransactionError

    error = TableTransactionError(message=f"{index}:conflict", index=index)
    error.status_code = code
    return error


# An answer about the entity (or a request storage won't take): its tree member.
ANSWERS: dict[str, tuple[Exception, type[StorageError]]] = {
    "404": (ResourceNotFoundError("entity not found"), NotFound),
    "409": (ResourceExistsError("entity exists"), Conflict),
    "412": (ResourceModifiedError("etag changed"), PreconditionFailed),
    "400": (status(400), StorageError),
    "403": (status(403), StorageError),
    "no token": (ClientAuthenticationError("no storage token"), StorageError),
    "transaction 409": (transaction(409, 2), Conflict),
    "transaction 412": (transaction(412, 0), Conflict),
}


@pytest.mark.parametrize("case", list(OUTAGES))
async def test_an_outage_is_storage_unavailable(case: str) -> None:
    client = on_demand(Failing(OUTAGES[case]), nothing, "table t1")
    with pytest.raises(StorageUnavailable) as awaited:
        await client.get_entity("p", "r")
    assert awaited.value.__cause__ is OUTAGES[case]
    assert awaited.value.detail == f"table t1: {type(OUTAGES[case]).__name__}"
    with pytest.raises(StorageUnavailable):
        [row async for row in client.list_entities()]


@pytest.mark.parametrize("case", list(ANSWERS))
async def test_an_answer_about_the_entity_is_its_tree_member(case: str) -> None:
    error, member = ANSWERS[case]
    client = on_demand(Failing(error), nothing, "table t1")
    with pytest.raises(member) as awaited:
        await client.get_entity("p", "r")
    assert type(awaited.value) is member and awaited.value.__cause__ is error
    assert awaited.value.status == (getattr(error, "status_code", None) or 0)
    if case.startswith("transaction"):  # which operation of the group failed
        assert isinstance(awaited.value, Conflict)
        assert awaited.value.index == getattr(error, "index", None)
    if case == "no token":
        assert awaited.value.reason == Reason.UNAUTHORIZED
    with pytest.raises(member):
        [row async for row in client.list_entities()]
    # A helper of storage/ given a client that is not wrapped says the same.
    with pytest.raises(member), translated("table t1"):
        await Failing(error).get_entity("p", "r")


async def test_a_bug_of_ours_is_not_translated() -> None:
    client = on_demand(Failing(KeyError("x")), nothing, "table t1")
    with pytest.raises(KeyError):
        await client.get_entity("p", "r")


async def test_a_checked_client_creates_nothing() -> None:
    """A read of a report finds a missing table NotFound (nothing created);
    the Runtime's clients create it and run the operation again."""
    missing = ResourceNotFoundError("table not found")
    missing.error_code = "TableNotFound"  # type: ignore[attr-defined]
    created: list[str] = []

    async def create() -> None:
        created.append("t1")

    with pytest.raises(NotFound):
        await checked(Failing(missing), "table t1").get_entity("p", "r")
    assert created == []
    with pytest.raises(NotFound):  # still missing after the create: not found
        await on_demand(Failing(missing), create, "table t1").get_entity("p", "r")
    assert created == ["t1"]


def test_nothing_above_storage_imports_azure_core() -> None:
    """Only proactive/storage/ handles azure-core (and teams/, whose token code
    calls azure-identity): the rest catches the tree's members."""
    root = Path(__file__).parent.parent / "proactive"
    found = []
    for path in sorted(root.rglob("*.py")):
        if path.relative_to(root).parts[0] in ("storage", "teams"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            found += [f"{path.relative_to(root)}: {n}" for n in names
                      if n == "azure.core" or n.startswith("azure.core.")]
    assert found == []
