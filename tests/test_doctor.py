"""`python -m proactive doctor` against the local stack (Azurite + the built-in
host running the real app), with each of its checks made to fail once; the
health route and the timer's heartbeat it reads."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from proactive.cli import doctor, doctor_checks
from proactive.config import SETTINGS, Settings, named_settings
from proactive_devtools.processes import Azurite, free_port, stop_process, wait_for_port
from tests.api_support import REPO_ROOT, ApiApp, api_app

BOT_ID = "00000000-0000-0000-0000-0000000000b0"
# The app's settings and azd's outputs: none may leak in from the machine.
FOREIGN = ("MicrosoftApp", "PROACTIVE_", "AzureWebJobs", "OUTBOX_QUEUE", "AZURE_", "BOT_",
           "TEAMS_APP_", "LOCAL_HOST_")

Doctor = Callable[..., tuple[int, list[str]]]


@pytest.fixture(scope="module")
def app(azurite: Azurite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiApp]:
    """The app in the built-in host; its timer and queue worker are off, so the
    tests decide when a tick writes the heartbeat."""
    with api_app(azurite, tmp_path_factory.mktemp("doctor")) as running:
        yield running


def _local_env(settings: Settings) -> dict[str, str]:
    """What a developer's shell holds for the local stack, and the app package's values."""
    return {"AzureWebJobsStorage": settings.storage_connection,
            "OUTBOX_QUEUE": settings.outbox_queue, "PROACTIVE_TABLE_PREFIX": settings.table_prefix,
            "BOT_ID": BOT_ID, "TEAMS_APP_WEBSITE_URL": "https://example.com/proactive"}


@pytest.fixture
def run_doctor(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, app: ApiApp) -> Doctor:
    """doctor in this process (sync: it runs its own event loops), from an empty
    folder, with the local stack's settings in the environment."""
    for name in list(os.environ):
        if name.startswith(FOREIGN):
            monkeypatch.delenv(name)
    for name, value in _local_env(app.settings).items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)

    def run(*argv: str, now: datetime | None = None) -> tuple[int, list[str]]:
        args = doctor._parser().parse_args(["--endpoint", app.base.removesuffix("/api/"),
                                            *argv])
        out = io.StringIO()
        code = doctor.run(args, now=(lambda: now) if now else None, out=out)
        return code, out.getvalue().splitlines()
    return run


def _tick(settings: Settings, now: datetime | None = None) -> None:
    """One run of the schedules timer's work, as the trigger runs it."""
    from proactive.runtime import Runtime
    from proactive.scheduling.timer import tick

    async def go() -> None:
        rt = await Runtime.create(settings)
        try:
            await tick(rt, now)
        finally:
            await rt.close()
    asyncio.run(go())


def _line(lines: list[str], check: str) -> str:
    found = [line for line in lines if line.split(" ", 2)[1:2] == [f"{check}:"]]
    assert len(found) == 1, lines
    return found[0]


def _failed(lines: list[str]) -> list[str]:
    return [line.split(" ", 2)[1].rstrip(":") for line in lines if line.startswith("✗")]


# --- all pass ------------------------------------------------------------------------------


def test_doctor_passes_every_check_against_the_local_stack(app: ApiApp, tmp_path: Path) -> None:
    """As a person runs it: a child process, exit code 0, one ✓ line per check,
    and the marker it put on the outbox is gone (nothing delivered, nothing parked)."""
    _tick(app.settings)
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN)}
    env.update(_local_env(app.settings), PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "proactive", "doctor", "--endpoint",
         app.base.removesuffix("/api/")], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=120)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == ""
    assert [line.split(" ", 2)[:2] for line in lines[1:-1]] == [
        ["✓", f"{check}:"] for check in doctor.CHECKS], lines
    assert lines[-1] == "all checks passed"
    assert "401 without a token" in _line(lines, "endpoint")
    assert f"bot {BOT_ID}" in _line(lines, "package")

    async def messages() -> tuple[int | None, int | None]:
        from azure.storage.queue.aio import QueueClient

        conn, out = app.settings.storage_connection, app.settings.outbox_queue
        async with QueueClient.from_connection_string(conn, out) as q, \
                QueueClient.from_connection_string(conn, f"{out}-poison") as p:
            return ((await q.get_queue_properties()).approximate_message_count,
                    (await p.get_queue_properties()).approximate_message_count)
    assert asyncio.run(messages()) == (0, 0)  # the hidden marker was deleted


def test_the_azd_postdeploy_hook_runs_doctor(app: ApiApp, tmp_path: Path) -> None:
    """azure.yaml's posix hook, run by sh as azd runs it: in the project folder,
    the clone's .venv interpreter, azd's values exported (AZURE_ENV_NAME)."""
    text = (REPO_ROOT / "azure.yaml").read_text()
    hook = text[text.index("  postdeploy:"):]
    posix = re.search(r"posix:\n\s+shell: sh\n\s+run: '([^']*)'", hook)
    assert posix is not None, hook
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    venv_python = tmp_path / ".venv" / "bin" / "python"  # this venv's, by another path
    venv_python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    venv_python.chmod(0o755)
    port = app.base.removesuffix("/api/").rsplit(":", 1)[1]
    (tmp_path / "local.settings.json").write_text(json.dumps({"Host": {
        "LocalHttpPort": int(port)}}))
    _tick(app.settings)
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN)}
    env.update(_local_env(app.settings), PYTHONPATH=str(REPO_ROOT), AZURE_ENV_NAME="dev")
    proc = subprocess.run(["sh", "-c", posix.group(1)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1] == "all checks passed"


# --- each check made to fail -----------------------------------------------------------------


def test_a_missing_queue_fails_the_storage_check(app: ApiApp, run_doctor: Doctor) -> None:
    from azure.storage.queue import QueueClient

    _tick(app.settings)
    poison = app.settings.poison_queue
    QueueClient.from_connection_string(app.settings.storage_connection, poison).delete_queue()
    try:
        code, lines = run_doctor()
    finally:
        QueueClient.from_connection_string(app.settings.storage_connection,
                                           poison).create_queue()
    assert code == 1
    assert _failed(lines) == ["storage"], lines
    assert f"missing queue {poison}" in _line(lines, "storage")
    assert "azd provision" in _line(lines, "storage")


def test_storage_that_is_not_there_fails_storage_and_timer(app: ApiApp, run_doctor: Doctor,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    port = free_port()  # nothing listens there
    monkeypatch.setenv("AzureWebJobsStorage", "DefaultEndpointsProtocol=http;AccountName="
                       "devstoreaccount1;AccountKey=a2V5;"
                       f"QueueEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
                       f"TableEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")
    code, lines = run_doctor("--skip", "package")
    assert code == 1
    assert _failed(lines) == ["storage", "timer"], lines
    assert f"cannot reach local storage (Azurite) at 127.0.0.1:{port}" in _line(lines, "storage")


def test_an_endpoint_where_the_app_is_not_fails_the_endpoint_check(
        app: ApiApp, run_doctor: Doctor) -> None:
    _tick(app.settings)
    code, lines = run_doctor("--endpoint", app.base.removesuffix("/api/") + "/elsewhere")
    assert code == 1
    assert "answered 404: the app is not deployed there" in _line(lines, "endpoint")
    assert "azd deploy" in _line(lines, "endpoint")
    assert _failed(lines) == ["endpoint", "config"], lines  # the health route isn't there either


def test_an_app_without_a_website_url_fails_the_package_check(
        app: ApiApp, run_doctor: Doctor, monkeypatch: pytest.MonkeyPatch) -> None:
    _tick(app.settings)
    monkeypatch.delenv("TEAMS_APP_WEBSITE_URL")
    code, lines = run_doctor()
    assert code == 1
    assert _failed(lines) == ["package"], lines
    assert "TEAMS_APP_WEBSITE_URL" in _line(lines, "package")


def test_without_the_package_tools_the_package_check_says_how_to_get_them(
        app: ApiApp, run_doctor: Doctor, monkeypatch: pytest.MonkeyPatch) -> None:
    _tick(app.settings)
    monkeypatch.setitem(sys.modules, "proactive_devtools.app_package", None)  # not importable
    code, lines = run_doctor()
    assert code == 1
    assert _failed(lines) == ["package"], lines
    assert "can't be loaded" in _line(lines, "package")
    assert "clone of the repository" in _line(lines, "package")


def test_a_timer_that_never_ran_or_stopped_fails_the_timer_check(
        app: ApiApp, run_doctor: Doctor) -> None:
    from azure.data.tables import TableClient

    from proactive.scheduling.timer import HEARTBEAT

    table = TableClient.from_connection_string(app.settings.storage_connection,
                                               app.settings.table_name("schedules"))
    table.delete_entity(*HEARTBEAT)
    code, lines = run_doctor()
    assert (code, _failed(lines)) == (1, ["timer"]), lines
    assert "has not run yet" in _line(lines, "timer")

    ran = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    _tick(app.settings, ran)
    code, lines = run_doctor(now=ran + timedelta(minutes=4))
    assert (code, _failed(lines)) == (0, []), lines
    code, lines = run_doctor(now=ran + timedelta(minutes=10))
    assert (code, _failed(lines)) == (1, ["timer"]), lines
    assert "last ran 10 min 0 s ago (2026-12-01T08:00:00.000Z)" in _line(lines, "timer")


def test_wait_retries_until_the_timer_has_run(app: ApiApp, run_doctor: Doctor,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh deployment: the timer's first run comes while doctor waits for it."""
    from azure.data.tables import TableClient

    from proactive.scheduling.timer import HEARTBEAT

    TableClient.from_connection_string(app.settings.storage_connection,
                                       app.settings.table_name("schedules")
                                       ).delete_entity(*HEARTBEAT)
    looks: list[bool] = []
    real = doctor_checks.check_timer

    def check_timer(target: doctor.Target) -> doctor.Result:
        try:
            result = real(target)
        except doctor.Failed:
            looks.append(False)
            if len(looks) == 2:
                _tick(app.settings)  # the timer runs between two looks
            raise
        looks.append(True)
        return result
    monkeypatch.setattr(doctor, "check_timer", check_timer)
    monkeypatch.setattr(doctor, "POLL", 0.05)
    code, lines = run_doctor("--wait", "60", "--skip", "package")
    assert (code, _failed(lines)) == (0, []), lines
    assert looks == [False, False, True]


def test_the_tick_writes_its_heartbeat(app: ApiApp) -> None:
    from azure.data.tables import TableClient

    from proactive.scheduling.timer import HEARTBEAT

    ran = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    _tick(app.settings, ran)
    table = TableClient.from_connection_string(app.settings.storage_connection,
                                               app.settings.table_name("schedules"))
    assert table.get_entity(*HEARTBEAT)["at"] == "2026-12-01T09:30:00.000Z"


# --- the app with a configuration error: as in Azure, it keeps serving ----------------------

SERVE_ANYWAY = """
import asyncio, sys
from proactive_devtools.localhost import LocalHost, load_app

async def main():
    host = LocalHost(load_app(sys.argv[1]), host_json=sys.argv[1] + "/host.json",
                     port=int(sys.argv[2]))
    await host.start()
    await asyncio.Event().wait()

asyncio.run(main())
"""


def test_a_configuration_error_fails_endpoint_and_config_naming_settings_not_values(
        azurite: Azurite, run_doctor: Doctor, tmp_path: Path) -> None:
    """The built-in host stops at start on a configuration error; the Functions
    host in Azure can't, and the app answers 503. This runs it the Azure way."""
    secret = f"secret-{uuid.uuid4().hex}"
    tag = uuid.uuid4().hex[:8]
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN)}
    env.update({"AzureWebJobsStorage": azurite.connection_string, "OUTBOX_QUEUE": f"c{tag}",
                "PROACTIVE_TABLE_PREFIX": f"c{tag}", "MicrosoftAppId": str(uuid.uuid4()),
                "MicrosoftAppPassword": secret, "PROACTIVE_LOCAL_DEV": "true",
                "PROACTIVE_MAX_ATTEMPTS": "eight", "AzureWebJobs.outbox.Disabled": "true",
                "AzureWebJobs.schedules.Disabled": "true", "PYTHONPATH": str(REPO_ROOT)})
    port = free_port()
    host = subprocess.Popen([sys.executable, "-c", SERVE_ANYWAY, str(REPO_ROOT), str(port)],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        wait_for_port(port, proc=host)
        health = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=30)
        code, lines = run_doctor("--endpoint", f"http://127.0.0.1:{port}", "--skip", "storage",
                                 "--skip", "timer", "--skip", "package")
    finally:
        stop_process(host, sig=signal.SIGTERM)
        _, errors = host.communicate()
    assert health.status_code == 503
    assert health.json()["settings"] == ["PROACTIVE_MAX_ATTEMPTS", "PROACTIVE_LOCAL_DEV"]
    assert health.json()["reason"] == "config-error"
    assert "eight" not in health.text and secret not in health.text
    assert code == 1
    assert _failed(lines) == ["endpoint", "config"], lines
    assert "answered 503: the app's configuration is invalid (PROACTIVE_MAX_ATTEMPTS, " \
           "PROACTIVE_LOCAL_DEV)" in _line(lines, "endpoint")
    assert "invalid: PROACTIVE_MAX_ATTEMPTS, PROACTIVE_LOCAL_DEV" in _line(lines, "config")
    assert secret not in "\n".join(lines) + errors.decode()


def test_named_settings_are_only_setting_names() -> None:
    problems = ("AzureWebJobsStorage__accountName must be a storage account name, got "
                "'Bad Name'", "PROACTIVE_GRAPH_RPS must be 1 to 30", "MicrosoftAppId is not "
                "set (or set PROACTIVE_LOCAL_DEV=true for local development)",
                "something about 'AzureWebJobsStorageX' and AzureWebJobsStorage")
    names = named_settings(problems)
    assert names == ["AzureWebJobsStorage__accountName", "PROACTIVE_GRAPH_RPS",
                     "MicrosoftAppId", "PROACTIVE_LOCAL_DEV", "AzureWebJobsStorage"]
    assert set(names) <= set(SETTINGS)


# --- the marker: harmless if a worker ever takes it ----------------------------------------


async def test_a_worker_that_takes_the_marker_drops_it_without_a_trace(runtime) -> None:
    from proactive.storage.queues import dumps
    from proactive.worker import process

    outcome = await process(runtime, dumps(doctor.marker()), message_id="m1")
    assert (str(outcome.state), outcome.reason) == ("done", "unknown-key")
    assert await runtime.outbox.poison_queue.peek_messages() == []
    assert [row async for row in runtime.campaigns.table.list_entities()] == []


# --- where it looks: flags, then azd's environment, then the local settings --------------


def _resolve(*argv: str) -> doctor.Target:
    return doctor.resolve(doctor._parser().parse_args(list(argv)), lambda: datetime.now(UTC))


@pytest.fixture
def project(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A clone with a developer's local settings, and none of azd's values yet."""
    for name in list(os.environ):
        if name.startswith(FOREIGN):
            monkeypatch.delenv(name)
    (tmp_path / "local.settings.json").write_text(json.dumps({
        "Values": {"AzureWebJobsStorage": "UseDevelopmentStorage=true",
                   "OUTBOX_QUEUE": "devqueue", "PROACTIVE_TABLE_PREFIX": "dev"},
        "Host": {"LocalHttpPort": 7199}}))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_in_an_azd_hook_it_checks_the_deployment_not_the_local_settings(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"AZURE_ENV_NAME": "dev", "AZURE_STORAGE_ACCOUNT_NAME": "stabc123",
                        "OUTBOX_QUEUE": "outbox", "BOT_MESSAGING_ENDPOINT":
                        "https://func-api-x.azurewebsites.net/api/messages"}.items():
        monkeypatch.setenv(name, value)  # what azd exports to a hook
    target = _resolve()
    assert target.settings.storage_by_identity  # your sign-in, not a connection string
    assert target.settings.storage_url("queue") == "https://stabc123.queue.core.windows.net"
    assert target.settings.outbox_queue == "outbox"
    assert target.settings.table_prefix == ""  # the deployment's, not the local one
    assert target.endpoint == "https://func-api-x.azurewebsites.net"
    target = _resolve("--account", "other456", "--endpoint", "https://app.example.net/")
    assert target.settings.storage_url("table") == "https://other456.table.core.windows.net"
    assert target.endpoint == "https://app.example.net"


def test_by_hand_it_reads_azd_env_get_values(project: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """`azd env get-values` prints the environment as dotenv lines (KEY="value");
    a stand-in azd on PATH prints what it would."""
    bin_dir = project / "bin"
    bin_dir.mkdir()
    azd = bin_dir / "azd"
    azd.write_text('#!/bin/sh\n[ "$1 $2" = "env get-values" ] || exit 1\n'
                   'echo \'AZURE_STORAGE_ACCOUNT_NAME="stfromazd1"\'\n'
                   'echo \'BOT_MESSAGING_ENDPOINT="https://func-y.azurewebsites.net/api/messages"\'\n')
    azd.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    target = _resolve()
    assert target.settings.storage_url("queue") == "https://stfromazd1.queue.core.windows.net"
    assert target.endpoint == "https://func-y.azurewebsites.net"
    assert target.values["AZURE_STORAGE_ACCOUNT_NAME"] == "stfromazd1"  # for the package


def test_without_azd_it_checks_the_local_stack(project: Path) -> None:
    target = _resolve()
    assert target.settings.storage_connection == "UseDevelopmentStorage=true"
    assert (target.settings.outbox_queue, target.settings.table_prefix) == ("devqueue", "dev")
    assert target.endpoint == "http://127.0.0.1:7199"


# --- usage mistakes ---------------------------------------------------------------------------


@pytest.mark.parametrize(("argv", "says"), [
    (["--endpoint", "ftp://app"], "error: --endpoint 'ftp://app' is not an http(s) URL"),
    (["--endpoint", "http://app.example.com"], "an app in Azure is reached over https"),
    (["--wait", "-1"], "error: --wait must be 0 or more seconds"),
    (["--skip", "nothing"], "invalid choice: 'nothing'"),
])
def test_a_usage_mistake_is_one_line_and_exit_2(argv: list[str], says: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from proactive.cli import main

    try:
        code = main(["doctor", *argv])
    except SystemExit as exc:  # argparse's own mistakes
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert code == 2
    assert says in err
    assert "Traceback" not in err


def test_help_lists_doctor(capsys: pytest.CaptureFixture[str]) -> None:
    from proactive.cli import main

    with pytest.raises(SystemExit):
        main(["--help"])
    assert "doctor" in capsys.readouterr().out
