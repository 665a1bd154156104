"""Storage errors are translated once, at the storage edge (issue 20 §1): an
operation on a Runtime client that fails for want of storage raises the tree's
StorageUnavailable, so nothing above proactive/storage/ catches azure-core's
exceptions; an answer about the entity (404, 409, 412) passes through as is,
for the store that asked. The real outage (Azurite stopped) is in
test_deliveries_outage.py and test_chaos.py; here each kind of failure is
raised on purpose under the wrapper every Runtime client goes through."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)

from proactive.errors import StorageUnavailable
from proactive.storage.autocreate import on_demand


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

ANSWERS = {
    "404": ResourceNotFoundError("entity not found"),
    "409": ResourceExistsError("entity exists"),
    "412": ResourceModifiedError("etag changed"),
    "400": status(400),
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
async def test_an_answer_about_the_entity_passes_through(case: str) -> None:
    client = on_demand(Failing(ANSWERS[case]), nothing, "table t1")
    with pytest.raises(type(ANSWERS[case])) as awaited:
        await client.get_entity("p", "r")
    assert awaited.value is ANSWERS[case]
    with pytest.raises(type(ANSWERS[case])):
        [row async for row in client.list_entities()]
