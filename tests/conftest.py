"""Shared test fixtures: real Azurite on free ports for the whole session."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from proactive.config import Settings
from proactive_devtools.fake_aad import FakeAAD
from proactive_devtools.processes import Azurite, free_port, start_azurite
from proactive_devtools.provision import provision

if TYPE_CHECKING:
    import httpx
    from azure.data.tables.aio import TableClient

    from proactive.runtime import Runtime
    from proactive_devtools.emulator import ConnectorEmulator
    from tests.api_support import ApiApp


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    server = start_azurite()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def fresh_table(azurite: Azurite) -> AsyncIterator[TableClient]:
    """A new, empty table of the session's Azurite, through the SDK's client."""
    from azure.data.tables.aio import TableServiceClient

    async with TableServiceClient.from_connection_string(azurite.connection_string) as service:
        client = await service.create_table(f"t{uuid.uuid4().hex[:12]}")
        try:
            yield client
        finally:
            await client.close()


@pytest.fixture
def disk_azurite(tmp_path: Path) -> Iterator[Azurite]:
    """An Azurite of the test's own that keeps its data on disk, so it can be
    stopped and started again: a storage outage (the session's is in memory)."""
    server = start_azurite(location=str(tmp_path / "azurite"), log=tmp_path / "azurite.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def aad() -> AsyncIterator[FakeAAD]:
    """A local Azure AD (OpenID metadata, JWKS, token endpoint) with one
    signing key, `key-1`, endorsed for msteams."""
    async with FakeAAD() as server:
        server.add_key("key-1")
        yield server


@pytest.fixture
def connector_port() -> int:
    """The test's local Connector port: the `emulator` fixture listens there
    and the `settings` fixture names it the local Connector."""
    return free_port()


@pytest.fixture
def settings(azurite: Azurite, connector_port: int) -> Settings:
    """Settings for one test: its own tables and queue in the shared Azurite."""
    tag = uuid.uuid4().hex[:10]
    return Settings(
        storage_connection=azurite.connection_string,
        outbox_queue=f"outbox{tag}",
        table_prefix=f"t{tag}",
        local_dev=True,
        local_connectors=(f"http://127.0.0.1:{connector_port}",),
    )


@contextlib.asynccontextmanager
async def _runtime(settings: Settings) -> AsyncIterator[Runtime]:
    """A Runtime on `settings`, closed after the test (the body of both runtime fixtures)."""
    from proactive.runtime import Runtime

    rt = await Runtime.create(settings)
    try:
        yield rt
    finally:
        await rt.close()


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    await provision(settings)  # as the deployment would: the Runtime creates nothing
    async with _runtime(settings) as rt:
        yield rt


@pytest.fixture
def disk_settings(disk_azurite: Azurite, connector_port: int) -> Settings:
    """Settings on the test's own on-disk Azurite (`disk_azurite`)."""
    return Settings(storage_connection=disk_azurite.connection_string,
                    outbox_queue="outboxoutage", table_prefix="outage", local_dev=True,
                    local_connectors=(f"http://127.0.0.1:{connector_port}",))


@pytest.fixture
async def disk_runtime(disk_settings: Settings) -> AsyncIterator[Runtime]:
    """A Runtime on `disk_settings`; nothing provisioned: it creates what it finds missing."""
    async with _runtime(disk_settings) as rt:
        yield rt


@pytest.fixture
async def emulator(connector_port: int) -> AsyncIterator[ConnectorEmulator]:
    """The Connector emulator on the test's local Connector port (no limits, no faults)."""
    from proactive_devtools.emulator import ConnectorEmulator

    emu = ConnectorEmulator()
    await emu.start(port=connector_port)
    try:
        yield emu
    finally:
        await emu.stop()


@pytest.fixture
async def installed(runtime: Runtime, emulator: ConnectorEmulator) -> Runtime:
    """A user who installed the bot; their serviceUrl is the emulator."""
    from proactive.receiving.activities import parse_activity
    from tests.activities_data import install

    await runtime.references.record(parse_activity(install(service_url=emulator.url)))
    return runtime


# The fixtures of the modules that run the app as a child (tests/api_support.py):
# each module has its own module-scoped `app`; these are the same for all.
@pytest.fixture
async def client(app: ApiApp) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the app's API, with its function key."""
    import httpx

    async with httpx.AsyncClient(base_url=app.base, headers={"x-functions-key": app.key},
                                 timeout=20) as c:
        yield c


@pytest.fixture
async def rt(app: ApiApp) -> AsyncIterator[Runtime]:
    """A Runtime on the app's storage (to read what the API wrote)."""
    from proactive.runtime import Runtime

    runtime = await Runtime.create(app.settings)
    try:
        yield runtime
    finally:
        await runtime.close()
