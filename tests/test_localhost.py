"""The local Functions host stand-in, against the fixture app in tests/fixtures/hostapp."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import pytest
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue.aio import QueueClient

from proactive_devtools.localhost import (
    LocalHost,
    next_occurrence,
    parse_schedule,
    parse_timespan,
    resolve_setting,
    storage_connection,
)
from proactive_devtools.processes import REPO_ROOT, Azurite, free_port, wait_for_port
from tests.polling import eventually

APP_DIR = Path(__file__).parent / "fixtures" / "hostapp"
YEARLY = "0 0 0 1 1 *"


@pytest.fixture(scope="module")
def fixture_app() -> ModuleType:
    # A unique module name: the project's own function_app must not be shadowed.
    spec = importlib.util.spec_from_file_location("hostapp_function_app",
                                                  APP_DIR / "function_app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


HostFactory = Callable[..., Awaitable[tuple[LocalHost, str]]]


@pytest.fixture
async def start_host(azurite: Azurite, fixture_app: ModuleType) -> AsyncIterator[HostFactory]:
    hosts: list[LocalHost] = []

    async def start(queues: dict[str, Any] | None = None, http: dict[str, Any] | None = None,
                    env: dict[str, str] | None = None, **kwargs: Any) -> tuple[LocalHost, str]:
        config = json.loads((APP_DIR / "host.json").read_text())
        config = copy.deepcopy(config)
        config["extensions"]["queues"].update(queues or {})
        if http is not None:
            config["extensions"]["http"] = http
        queue = f"Q{uuid.uuid4().hex[:12]}"  # mixed case: the host lower-cases queue names
        settings = {"FixtureStorage": azurite.connection_string, "FIXTURE_QUEUE": queue,
                    "FIXTURE_SCHEDULE": YEARLY, **(env or {})}
        host = LocalHost(fixture_app.app, host_json=config, env=settings, **kwargs)
        await host.start()
        hosts.append(host)
        return host, queue.lower()

    yield start
    for host in hosts:
        await host.stop()


QueueFactory = Callable[..., Awaitable[QueueClient]]


@pytest.fixture
async def queues(azurite: Azurite) -> AsyncIterator[QueueFactory]:
    clients: list[QueueClient] = []

    async def open_queue(name: str, create: bool = True) -> QueueClient:
        clients.append(QueueClient.from_connection_string(azurite.connection_string, name))
        if create:  # the host creates it too; whoever is first wins
            with contextlib.suppress(ResourceExistsError):
                await clients[-1].create_queue()
        return clients[-1]

    yield open_queue
    for c in clients:
        await c.close()


async def count(client: QueueClient) -> int:
    try:
        return (await client.get_queue_properties()).approximate_message_count or 0
    except Exception:  # queue not created yet
        return -1


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# --- HTTP ---

async def test_http_route_gets_request_and_maps_response(start_host: HostFactory) -> None:
    host, _ = await start_host()
    async with aiohttp.ClientSession() as session, session.post(
            f"http://127.0.0.1:{host.port}/api/echo/bob?q=1", data=b"hello",
            headers={"X-Test": "yes"}) as resp:
        assert resp.status == 201
        assert resp.headers["X-Echo"] == "yes"
        assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
        payload = await resp.json()
    assert payload["name"] == "bob"
    assert payload["q"] == "1"
    assert payload["header"] == "yes"
    assert payload["body"] == "hello"
    assert payload["method"] == "POST"
    assert f"echo: [POST] http://localhost:{host.port}/api/echo/{{name}}" in host.lines


async def test_http_unknown_route_wrong_method_and_failure(
        start_host: HostFactory, caplog: pytest.LogCaptureFixture) -> None:
    host, _ = await start_host()
    base = f"http://127.0.0.1:{host.port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/api/nope") as resp:
            assert resp.status == 404
        async with session.get(f"{base}/api/echo/bob") as resp:
            assert resp.status == 405  # the trigger only takes POST
        async with session.get(f"{base}/api/boom") as resp:
            assert resp.status == 500
            assert len(await resp.text()) < 200
    assert "RuntimeError: boom" in caplog.text  # the traceback is logged


async def test_http_route_prefix_from_host_json(start_host: HostFactory) -> None:
    host, _ = await start_host(http={"routePrefix": ""})
    async with aiohttp.ClientSession() as session, session.post(
            f"http://127.0.0.1:{host.port}/echo/ann", data=b"") as resp:
        assert resp.status == 201
        assert (await resp.json())["name"] == "ann"


# --- queues ---

async def test_queue_message_processed_and_deleted(start_host: HostFactory, queues: QueueFactory,
                                                   fixture_app: ModuleType) -> None:
    host, name = await start_host()
    assert f"work: queueTrigger [{name}]" in host.lines
    q = await queues(name)
    body = f"ok {uuid.uuid4()}".encode()
    sent = await q.send_message(base64.b64encode(body).decode())
    seen = await eventually(lambda: [s for s in fixture_app.SEEN if s[1] == body])
    assert seen == [(sent.id, body, 1)]
    await eventually(lambda: _is_zero(count(q)))


async def _is_zero(n: Awaitable[int]) -> bool:
    return await n == 0


async def test_failing_message_goes_to_poison_unchanged(
        start_host: HostFactory, queues: QueueFactory, fixture_app: ModuleType) -> None:
    _, name = await start_host()
    q, poison = await queues(name), await queues(f"{name}-poison", create=False)
    body = f"fail {uuid.uuid4()}".encode()
    raw = base64.b64encode(body).decode()
    await q.send_message(raw)
    moved = await eventually(lambda: poison_contents(poison))
    assert moved == [raw]  # same text, so same (base64) encoding
    assert [s[2] for s in fixture_app.SEEN if s[1] == body] == [1, 2, 3]  # maxDequeueCount 3
    assert await count(q) == 0


async def poison_contents(client: QueueClient) -> list[str]:
    try:
        return [m.content for m in await client.peek_messages(max_messages=32)]
    except Exception:  # not created yet
        return []


async def test_invalid_base64_goes_to_poison_without_invocation(
        start_host: HostFactory, queues: QueueFactory, fixture_app: ModuleType) -> None:
    _, name = await start_host()
    q, poison = await queues(name), await queues(f"{name}-poison", create=False)
    raw = f"not base64! {uuid.uuid4()}"
    await q.send_message(raw)
    assert await eventually(lambda: poison_contents(poison)) == [raw]
    assert not [s for s in fixture_app.SEEN if raw.encode() in s[1]]


async def test_message_encoding_none(start_host: HostFactory, queues: QueueFactory,
                                     fixture_app: ModuleType) -> None:
    _, name = await start_host(queues={"messageEncoding": "none"})
    q = await queues(name)
    body = f"plain {uuid.uuid4()} ü"
    await q.send_message(body)
    await eventually(lambda: [s for s in fixture_app.SEEN if s[1] == body.encode()])
    await eventually(lambda: _is_zero(count(q)))


async def test_batch_runs_concurrently_and_lease_is_renewed(
        start_host: HostFactory, queues: QueueFactory, fixture_app: ModuleType,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="proactive_devtools.localhost")
    _, name = await start_host(lease=2)
    q = await queues(name)
    tag = uuid.uuid4().hex
    bodies = [f"hold {tag} {i}".encode() for i in range(5)]
    for body in bodies:
        await q.send_message(base64.b64encode(body).decode())

    def held() -> list[bytes]:
        return [s[1] for s in fixture_app.SEEN if tag.encode() in s[1]]

    # batchSize 4: four async invocations run at once; the fifth waits for room.
    await eventually(lambda: len(held()) >= 4)
    # They outlive the 2 s lease, which the host renews instead of letting them reappear.
    await eventually(lambda: "Renewed the lease" in caplog.text)
    fixture_app.RELEASE.update(bodies)
    await eventually(lambda: _is_zero(count(q)))
    assert sorted(held()) == sorted(bodies)  # each ran once: renewed receipts deleted them


async def test_stop_lets_in_flight_invocations_finish(
        start_host: HostFactory, queues: QueueFactory, fixture_app: ModuleType) -> None:
    host, name = await start_host()
    q = await queues(name)
    body = f"hold {uuid.uuid4()}".encode()
    await q.send_message(base64.b64encode(body).decode())
    await eventually(lambda: [s for s in fixture_app.SEEN if s[1] == body])
    stopping = asyncio.create_task(host.stop())
    await eventually(lambda: host._stopping.is_set())
    assert not stopping.done()  # waiting for the held invocation
    fixture_app.RELEASE.add(body)
    await asyncio.wait_for(stopping, 10)
    assert await count(q) == 0  # it finished and its message was deleted


def test_resolve_setting() -> None:
    assert resolve_setting("%A%-%B%", {"A": "x", "B": "y"}) == "x-y"
    assert resolve_setting("plain", {}) == "plain"
    with pytest.raises(ValueError, match="MISSING"):
        resolve_setting("%MISSING%", {})


def test_storage_connection_maps_development_storage_to_azurite() -> None:
    conn = storage_connection("UseDevelopmentStorage=true")
    assert "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1" in conn
    assert storage_connection("AccountName=x") == "AccountName=x"


async def test_missing_queue_setting_puts_function_in_error(start_host: HostFactory) -> None:
    host, _ = await start_host(env={"FixtureStorage": ""})
    assert any(line.startswith("work: in error") for line in host.lines)


# --- timers ---

@pytest.mark.parametrize(("schedule", "after", "expected"), [
    ("0 */1 * * * *", "2024-05-01T10:15:30", "2024-05-01T10:16:00"),
    ("0 */1 * * * *", "2024-05-01T10:15:00", "2024-05-01T10:16:00"),
    ("0 */1 * * * *", "2024-12-31T23:59:59", "2025-01-01T00:00:00"),
    ("*/15 * * * * *", "2024-05-01T10:15:14.9", "2024-05-01T10:15:15"),
    ("*/15 * * * * *", "2024-05-01T10:15:45", "2024-05-01T10:16:00"),
    ("0 30 9 * * 1-5", "2024-05-03T09:30:00", "2024-05-06T09:30:00"),  # Fri → Mon
    ("0 30 9 * * 1-5", "2024-05-04T08:00:00", "2024-05-06T09:30:00"),  # Sat → Mon
    ("0 30 9 * * 1-5", "2024-05-06T09:29:59", "2024-05-06T09:30:00"),
    ("0 0 12 1,15 * *", "2024-02-15T12:00:00", "2024-03-01T12:00:00"),
    ("30 5 0-6/3 * * *", "2024-01-01T01:00:00", "2024-01-01T03:05:30"),
    ("0 0 0 29 2 *", "2024-03-01T00:00:00", "2028-02-29T00:00:00"),
    ("0 0 0 * * 0", "2024-05-01T00:00:00", "2024-05-05T00:00:00"),  # Sunday as 0
    ("0 0 0 * * 7", "2024-05-01T00:00:00", "2024-05-05T00:00:00"),  # and as 7
    ("5 * * * *", "2024-05-01T10:15:00", "2024-05-01T11:05:00"),  # five fields: seconds 0
    ("00:05:00", "2024-05-01T10:15:00", "2024-05-01T10:20:00"),  # TimeSpan interval
])
def test_next_occurrence(schedule: str, after: str, expected: str) -> None:
    start = datetime.fromisoformat(after).replace(tzinfo=UTC)
    assert next_occurrence(schedule, start) == datetime.fromisoformat(expected).replace(tzinfo=UTC)


def test_next_occurrence_sequence() -> None:
    sched = parse_schedule("*/15 * * * * *")
    t = datetime(2024, 1, 1, tzinfo=UTC)
    seen = []
    for _ in range(5):
        t = next_occurrence(sched, t)
        seen.append(t.second)
    assert seen == [15, 30, 45, 0, 15]


@pytest.mark.parametrize("bad", ["* * * * *  * *", "60 * * * * *", "* * 24 * * *",
                                 "0 0 0 0 * *", "*/0 * * * * *", "a * * * * *", "0 0 0 30 2 *",
                                 "00:00:00"])
def test_bad_schedules(bad: str) -> None:
    with pytest.raises(ValueError):
        next_occurrence(bad, datetime(2024, 1, 1, tzinfo=UTC))


def test_parse_timespan() -> None:
    assert parse_timespan("00:00:02") == timedelta(seconds=2)
    assert parse_timespan("1.02:03:04.5") == timedelta(days=1, hours=2, minutes=3, seconds=4.5)
    assert parse_timespan(3) == timedelta(seconds=3)


async def test_timer_runs_on_startup(start_host: HostFactory, fixture_app: ModuleType) -> None:
    before = len(fixture_app.TIMER_RUNS)
    host, _ = await start_host()
    assert f"tick: timerTrigger [{YEARLY}]" in host.lines
    await eventually(lambda: len(fixture_app.TIMER_RUNS) > before)
    assert fixture_app.TIMER_RUNS[before] is False  # not past due


async def test_timer_fires_on_schedule(start_host: HostFactory,
                                                      fixture_app: ModuleType) -> None:
    before = len(fixture_app.TIMER_RUNS)
    await start_host(env={"FIXTURE_SCHEDULE": "* * * * * *"})  # every second
    await eventually(lambda: len(fixture_app.TIMER_RUNS) >= before + 3)


# --- the command line, in a subprocess like `func start` ---

def test_main_loads_settings_serves_and_stops_on_sigint(azurite: Azurite, tmp_path: Path) -> None:
    port = free_port()
    settings = tmp_path / "local.settings.json"
    settings.write_text(json.dumps({"IsEncrypted": False, "Values": {
        "FixtureStorage": azurite.connection_string, "FIXTURE_QUEUE": f"cli{uuid.uuid4().hex[:8]}",
        "FIXTURE_SCHEDULE": YEARLY, "FIXTURE_GREETING": "from settings",
        "FIXTURE_WHO": "from settings"}}))
    env = {**os.environ, "FIXTURE_WHO": "from environment"}
    env.pop("FIXTURE_GREETING", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "proactive_devtools.localhost", "--app-dir", str(APP_DIR),
         "--port", str(port), "--settings", str(settings)],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True)
    try:
        wait_for_port(port, proc=proc)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/echo/cli", data=b"x",
                                         method="POST")
        with urllib.request.urlopen(request, timeout=10) as resp:
            payload = json.load(resp)
        assert payload["greeting"] == "from settings"
        assert payload["who"] == "from environment"  # the environment wins, as with func
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/nope", timeout=10)
        assert err.value.code == 404
        err.value.close()
        proc.send_signal(signal.SIGINT)
        out, errors = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, errors.decode()
    assert f"echo: [POST] http://localhost:{port}/api/echo/{{name}}" in out.decode()
    assert "work: queueTrigger [cli" in out.decode()
    assert "Executed 'Functions.echo' (Succeeded" in errors.decode()


# --- this project's app: settings checked and storage created at start ---

def _project_env() -> dict[str, str]:
    """The environment without any of the app's settings (they come from the file)."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("PROACTIVE_", "Microsoft", "AzureWebJobs", "OUTBOX_"))}


def test_a_configuration_error_stops_the_host_at_start_with_one_line(tmp_path: Path) -> None:
    secret = "client-secret-never-printed"
    settings = tmp_path / "local.settings.json"
    settings.write_text(json.dumps({"Values": {
        "OUTBOX_QUEUE": "outbox", "MicrosoftAppId": "0f3c9a5e-1111-4222-8333-444455556666",
        "MicrosoftAppPassword": secret,
        "MicrosoftAppTenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47",
        "PROACTIVE_LOCAL_DEV": "true",
        "PROACTIVE_MAX_ATTEMPTS": "eight"}}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "proactive", "host", "--app-dir", str(REPO_ROOT),
         "--port", str(free_port()), "--settings", str(settings)],
        cwd=REPO_ROOT, env=_project_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True)
    try:
        out, errors = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # it kept running: the defect
            proc.kill()
            proc.communicate()
    lines = errors.decode().splitlines()
    assert proc.returncode == 2, errors.decode()
    assert lines == [
        "error: configuration error: PROACTIVE_MAX_ATTEMPTS must be a whole number, got "
        "'eight'; PROACTIVE_LOCAL_DEV is on while bot credentials are configured: local "
        "development mode accepts unauthenticated activities and is refused with real "
        "credentials; turn one of them off"], lines
    assert secret not in out.decode() + errors.decode()


def test_the_host_creates_the_apps_tables_and_queues_at_start(azurite: Azurite,
                                                              tmp_path: Path) -> None:
    from proactive.config import Settings
    from proactive.runtime import storage_names

    tag = uuid.uuid4().hex[:8]
    values = {"AzureWebJobsStorage": azurite.connection_string, "OUTBOX_QUEUE": f"out{tag}",
              "PROACTIVE_TABLE_PREFIX": f"h{tag}", "PROACTIVE_LOCAL_DEV": "true"}
    settings = tmp_path / "local.settings.json"
    settings.write_text(json.dumps({"Values": values}))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "proactive", "host", "--app-dir", str(REPO_ROOT),
         "--port", str(port), "--settings", str(settings)],
        cwd=REPO_ROOT, env=_project_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True)
    try:
        wait_for_port(port, proc=proc)  # the port opens after the tables and queues exist
        names = storage_names(Settings.from_env(values))

        async def existing() -> tuple[set[str], set[str]]:
            from azure.data.tables.aio import TableServiceClient
            from azure.storage.queue.aio import QueueServiceClient

            conn = azurite.connection_string
            async with TableServiceClient.from_connection_string(conn) as tables, \
                    QueueServiceClient.from_connection_string(conn) as queues:
                return ({t.name async for t in tables.list_tables()},
                        {q.name async for q in queues.list_queues()})

        tables, queues = asyncio.run(existing())
        assert set(names.tables) <= tables and set(names.queues) <= queues
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
