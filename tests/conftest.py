"""Shared test fixtures: real Azurite on free ports for the whole session."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from proactive.config import Settings
from proactive.devtools.processes import Azurite, start_azurite


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    server = start_azurite()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def settings(azurite: Azurite) -> Settings:
    """Settings for one test: its own tables and queue in the shared Azurite."""
    tag = uuid.uuid4().hex[:10]
    return Settings(
        storage_connection=azurite.connection_string,
        outbox_queue=f"outbox{tag}",
        table_prefix=f"t{tag}",
        local_dev=True,
    )


@pytest.fixture
async def runtime(settings: Settings):  # type: ignore[no-untyped-def]
    from proactive.runtime import Runtime

    rt = await Runtime.create(settings)
    try:
        yield rt
    finally:
        await rt.close()
