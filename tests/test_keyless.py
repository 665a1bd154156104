"""Keyless storage: the app reaches Azurite over https with Entra ID bearer tokens
(`--oauth basic`), with no account key anywhere, as it reaches Azure Storage with
the identity settings infra/ sets.

- the full path (activity -> reference -> queued send -> Connector emulator ->
  delivery record, and a scheduled send fired by the timer tick) runs as the app
  really runs, the built-in host as a child process with only the identity-based
  settings, its tokens from azure-identity's ManagedIdentityCredential through
  the App Service protocol served by the fake Azure AD; Azurite's own record
  shows every request authorized by a token, and the operations it saw are the
  ones the code declares (each mapped to a role in tests/test_infra.py);
- the process's one credential is shared by every client (one token request for
  a burst of work), and the REST client's token is refreshed before it expires
  (checked by Azurite), by one caller, and survives a failed refresh.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from azure.core.exceptions import ClientAuthenticationError

from proactive.config import DEV_KEY, Settings, load_settings
from proactive.contract import Op, OutboxMessage, parse_message
from proactive.runtime import DELIVERIES_TABLE, Runtime
from proactive.storage import credentials
from proactive.storage.autocreate import unwrap
from proactive.storage.credentials import OPERATIONS, STORAGE_SCOPE, StorageTokens
from proactive.storage.deliveries import DeliveryStore
from proactive.storage.table_rest import RestTableClient
from proactive_devtools.fake_aad import STORAGE_RESOURCE, FakeAAD
from proactive_devtools.processes import (
    REPO_ROOT,
    Azurite,
    free_port,
    start_azurite,
    start_emulator,
    stop_process,
    tls_certificate,
    wait_for_port,
)
from proactive_devtools.provision import provision
from tests.activities_data import install
from tests.keyless_support import MintedCredential, recorded, rest_operations, trust
from tests.polling import eventually

CLIENT_ID = "5c1d7c3e-0b1a-4c1f-9d55-7a1e0c0ffee1"  # the user-assigned identity's client id
USER = "00000000-0000-4000-8000-00000000beef"
CONVERSATION = "a:keyless-chat"
# Settings a developer's environment may hold that must not reach the app.
_FOREIGN = ("MicrosoftApp", "PROACTIVE_", "AzureWebJobs", "OUTBOX_QUEUE", "FUNCTIONS_",
            "IDENTITY_", "MSI_", "AZURE_", "SSL_CERT_", "REQUESTS_CA_BUNDLE", "WEBSITE_")


@pytest.fixture(scope="module")
def oauth_azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """Azurite over https (a certificate made here) accepting bearer tokens, with
    its debug log: a record of every request, its operation and its auth."""
    folder = tmp_path_factory.mktemp("oauth-azurite")
    server = start_azurite(oauth=tls_certificate(folder), debug_log=folder / "debug.log")
    assert server.cert is not None
    trust(server.cert)
    try:
        yield server
    finally:
        server.stop()


def debug_log(azurite: Azurite) -> Path:
    assert azurite.cert is not None
    return azurite.cert.parent / "debug.log"


def identity_settings(azurite: Azurite, tag: str, **changes: Any) -> Settings:
    return Settings(storage_connection="", storage_credential="managedidentity",
                    storage_client_id=CLIENT_ID, queue_service_uri=azurite.endpoint("queue"),
                    table_service_uri=azurite.endpoint("table"), outbox_queue=f"out{tag}",
                    table_prefix=f"k{tag}", local_dev=True, **changes)


# --- one credential, one token, refreshed before expiry by one caller ------------------


async def test_every_client_of_a_runtime_shares_one_managed_identity_token(
        oauth_azurite: Azurite, aad: FakeAAD, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in aad.msi_environment().items():
        monkeypatch.setenv(name, value)
    aad.msi_client_ids = {CLIENT_ID}
    settings = identity_settings(oauth_azurite, uuid.uuid4().hex[:8])
    rt = await Runtime.create(settings)  # its own credential, from the settings
    try:
        tokens = rt.storage_tokens
        assert tokens is not None
        assert type(tokens.credential).__name__ == "ManagedIdentityCredential"
        # The SDK clients and the REST clients all hold the one StorageTokens.
        assert rt.table_service.credential is tokens
        assert rt.queue_service.credential is tokens
        rest = unwrap(rt.deliveries.table)
        assert isinstance(rest, RestTableClient) and rest._tokens is tokens
        await provision(settings, tokens)
        # A burst of work on every kind of client at once, from cold.
        await asyncio.gather(
            *(rt.outbox.put(OutboxMessage(Op.CANCEL, f"k-{n}")) for n in range(10)),
            *(rt.references.user(f"u-{n}") for n in range(10)),
            *(rt.deliveries.by_key(f"k-{n}") for n in range(10)),
            rt.schedules_table.create_entity({"PartitionKey": "p", "RowKey": "r"}))
    finally:
        await rt.close()
    assert aad.msi_requests == [{"resource": STORAGE_RESOURCE, "client_id": CLIENT_ID}]
    assert tokens is not None and tokens.refreshes == 1


async def test_the_rest_client_refreshes_before_azurite_sees_an_expired_token(
        oauth_azurite: Azurite, aad: FakeAAD) -> None:
    credential = MintedCredential(aad, lifetime=2)  # refreshed at half-life: every ~1 s
    tokens = StorageTokens(credential)
    table = f"refresh{uuid.uuid4().hex[:8]}"
    settings = identity_settings(oauth_azurite, "x")
    async with credentials.table_service(settings, tokens) as service:
        await service.create_table(table)
    used: set[str] = set()
    async with aiohttp.ClientSession() as session:
        client = RestTableClient.with_token(oauth_azurite.endpoint("table"), table, tokens,
                                            session=session)
        n = 0

        async def five_refreshes() -> bool:
            nonlocal n
            used.add(await tokens.token())
            await asyncio.gather(*(client.upsert_entity({"PartitionKey": "p", "RowKey": str(
                n + i), "n": n + i}) for i in range(5)))
            n += 5
            return credential.calls >= 5

        # Requests without pause across four token lifetimes: Azurite refuses an
        # expired token, so every one succeeding means each was refreshed in time.
        await eventually(five_refreshes, 20, "five token refreshes", interval=0,
                         seen=lambda: credential.calls)
        assert [e["n"] async for e in client.query_entities("PartitionKey eq 'p'")] == \
            sorted(range(n), key=str)
    # Each refresh was one call to the credential, and the token did change.
    assert credential.calls == tokens.refreshes and len(used) >= 3


async def test_one_refresh_at_a_time_while_the_others_keep_the_valid_token(
        aad: FakeAAD) -> None:
    now = [0.0]

    def clock() -> float:
        return time.time() + now[0]

    credential = MintedCredential(aad, lifetime=3600, clock=clock)
    tokens = StorageTokens(credential, clock=clock)
    # Cold: fifty callers, one token request.
    first = set(await asyncio.gather(*(tokens.token() for _ in range(50))))
    assert len(first) == 1 and credential.calls == 1
    # Due (5 minutes before expiry): one caller refreshes; while it waits for the
    # identity endpoint, the others go on with the still-valid token.
    now[0] += 3600 - 299
    credential.gate = asyncio.Event()
    refresher = asyncio.create_task(tokens.token())
    await eventually(lambda: credential.calls == 2, what="the refresh started")
    others = asyncio.gather(*(tokens.token() for _ in range(50)))
    assert set(await asyncio.wait_for(others, 5)) == first  # not held by the refresh
    credential.gate.set()
    second = await refresher
    assert second not in first and credential.calls == 2
    assert await tokens.token() == second and credential.calls == 2
    # Expired: callers wait for the one refresh rather than use the dead token.
    now[0] += 3600
    credential.gate = asyncio.Event()
    waiting = [asyncio.create_task(tokens.token()) for _ in range(20)]
    await eventually(lambda: credential.calls == 3, what="the refresh started")
    assert not any(task.done() for task in waiting)
    credential.gate.set()
    third = set(await asyncio.gather(*waiting))
    assert len(third) == 1 and third.isdisjoint(first | {second}) and credential.calls == 3


async def test_a_failed_refresh_keeps_the_valid_token_then_fails_without_a_storm(
        aad: FakeAAD, caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]

    def clock() -> float:
        return time.time() + now[0]

    credential = MintedCredential(aad, lifetime=600, clock=clock)
    tokens = StorageTokens(credential, clock=clock, retry_interval=5)
    good = await tokens.token()
    credential.fail = ClientAuthenticationError("identity endpoint said 500")
    now[0] += 400  # due, still valid: the current token goes on, with a warning
    assert await tokens.token() == good and credential.calls == 2
    assert "could not refresh the storage token" in caplog.text
    now[0] += 300  # expired, the last failure 300 s ago: try again, and fail
    with pytest.raises(ClientAuthenticationError):
        await tokens.token()
    assert credential.calls == 3
    for _ in range(5):  # within the retry interval: the error, no new request
        with pytest.raises(ClientAuthenticationError, match="identity endpoint said 500"):
            await tokens.token()
    assert credential.calls == 3
    credential.fail = None
    now[0] += 5
    assert await tokens.token() != good and credential.calls == 4


async def test_a_hung_identity_endpoint_fails_at_the_deadline_and_is_asked_again(
        aad: FakeAAD, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    from azure.identity.aio import ManagedIdentityCredential

    for name, value in aad.msi_environment().items():
        monkeypatch.setenv(name, value)
    now = [0.0]

    def clock() -> float:
        return time.time() + now[0]

    aad.hang = True  # the identity endpoint takes the request and never answers
    async with StorageTokens(ManagedIdentityCredential(client_id=CLIENT_ID), clock=clock,
                             deadline=0.5) as tokens:
        with pytest.raises(ClientAuthenticationError, match=r"127\.0\.0\.1"):
            await tokens.token()
        assert "no answer from the identity endpoint (127.0.0.1)" in caplog.text
        aad.hang = False
        now[0] += 10  # past the retry interval: a new request, which is answered
        assert await tokens.token()
        assert tokens.refreshes == 2 and aad.hung_requests == 1


async def test_other_scopes_and_claims_challenges_go_to_the_credential(aad: FakeAAD) -> None:
    credential = MintedCredential(aad)
    tokens = StorageTokens(credential)
    a = await tokens.get_token(STORAGE_SCOPE)
    assert (await tokens.get_token(STORAGE_SCOPE)).token == a.token and credential.calls == 1
    await tokens.get_token(STORAGE_SCOPE, claims='{"access_token":{}}')
    await tokens.get_token("https://vault.azure.net/.default")
    assert credential.calls == 3


def test_a_bearer_token_is_never_sent_over_http() -> None:
    with pytest.raises(ValueError, match="only sent over https"):
        RestTableClient.with_token("http://127.0.0.1:10002/devstoreaccount1", "t",
                                   StorageTokens(MintedCredential(FakeAAD())))


# --- the whole app, keyless, as it runs ---------------------------------------------------


class Stack:
    def __init__(self, azurite: Azurite, aad: FakeAAD, emulator_url: str, workdir: Path) -> None:
        self.tag = uuid.uuid4().hex[:8]
        env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN)}
        assert azurite.cert is not None
        env.update(azurite.identity_settings(), **aad.msi_environment(),
                   AzureWebJobsStorage__clientId=CLIENT_ID,
                   SSL_CERT_FILE=str(azurite.cert),  # trust Azurite's certificate
                   OUTBOX_QUEUE=f"out{self.tag}", PROACTIVE_TABLE_PREFIX=f"k{self.tag}",
                   PROACTIVE_LOCAL_DEV="true", PROACTIVE_WELCOME="false",
                   PROACTIVE_LOCAL_CONNECTOR=emulator_url,
                   PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO_ROOT))
        self.env, self.emulator_url, self.workdir = env, emulator_url, workdir
        self.settings_file = workdir / "settings.json"  # empty: no developer settings
        self.settings_file.write_text(json.dumps({"IsEncrypted": False, "Values": {}}))
        self.runs = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    async def start(self) -> None:
        """Start the host and wait for its port, off the event loop: the fake Azure
        AD answering its token requests runs on this loop."""
        self.runs += 1
        self.port = free_port()
        with open(self.workdir / f"host-{self.runs}.log", "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "proactive", "host", "--app-dir", str(REPO_ROOT),
                 "--port", str(self.port), "--settings", str(self.settings_file)],
                cwd=REPO_ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            await asyncio.to_thread(wait_for_port, self.port, proc=self.proc, timeout=60)
        except Exception as exc:
            raise AssertionError(self.logs()) from exc

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:]
                         for p in sorted(self.workdir.glob("host-*.log")))

    async def cli(self, *args: str) -> Any:
        """`python -m proactive ARGS` with the app's (identity) settings."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proactive", *args, cwd=self.workdir, env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, f"{args}: {proc.returncode} {err.decode()}"
        return json.loads(out)


@pytest.fixture
def emulator_url() -> Iterator[str]:
    proc, url = start_emulator()
    try:
        yield url
    finally:
        stop_process(proc)


@pytest.fixture
async def stack(oauth_azurite: Azurite, aad: FakeAAD, emulator_url: str,
                tmp_path: Path) -> AsyncIterator[Stack]:
    aad.msi_client_ids = {CLIENT_ID}  # a wrong __clientId would be refused, as in Azure
    running = Stack(oauth_azurite, aad, emulator_url, tmp_path)
    try:
        yield running
    finally:
        running.stop()


async def delivered(http: httpx.AsyncClient, emulator_url: str, text: str) -> list[Any]:
    state = (await http.get(f"{emulator_url}_admin/state")).json()
    return [d for d in state["deliveries"] if d.get("text") == text]


async def test_the_full_path_runs_keyless_against_azurite_over_https_with_oauth(
        stack: Stack, oauth_azurite: Azurite, aad: FakeAAD) -> None:
    env = stack.env
    # No account key anywhere in the app's environment: only the identity settings.
    assert "AzureWebJobsStorage" not in env
    assert not [k for k, v in env.items() if "AccountKey" in v or DEV_KEY in v]
    settings = load_settings(env)  # what the app itself reads from it
    assert settings.storage_by_identity and settings.storage_client_id == CLIENT_ID

    await stack.start()
    async with httpx.AsyncClient(timeout=30) as http:
        # Teams installs the bot: the host stores the conversation reference.
        reply = await http.post(f"http://127.0.0.1:{stack.port}/api/messages", json=install(
            service_url=stack.emulator_url, aad=USER, conversation=CONVERSATION))
        assert reply.status_code in (200, 201), (reply.status_code, reply.text, stack.logs())
        # A producer (the CLI, same settings) queues a send; the host delivers it.
        queued = await stack.cli("send", "--to", USER, "--text", "keyless hello",
                                 "--key", "k-now")
        assert queued["queued"] == settings.outbox_queue
        await eventually(lambda: delivered(http, stack.emulator_url, "keyless hello"),
                         timeout=30, what="the send reached the Connector")

        # The test's own view of storage is keyless too.
        tokens = StorageTokens(MintedCredential(aad, client_id="the-test"))
        rt = await Runtime.create(settings, storage_tokens=tokens)
        try:
            deliveries = DeliveryStore(rt.sdk_table(DELIVERIES_TABLE))
            rows = await eventually(lambda: _sent(deliveries, "k-now"), timeout=15,
                                    what="the delivery recorded as sent")
            status = await stack.cli("status", "--key", "k-now")
            assert [row["state"] for row in status] == ["sent"] == [r["state"] for r in rows]
            stack.stop()

            # A scheduled send, stored while the app was down and now due: the
            # timer's next tick fires it (each whole minute; not at start-up,
            # which Flex would run on every new instance).
            from proactive.scheduling import store_send as schedule

            at = datetime.now(UTC) + timedelta(seconds=1)
            message = parse_message(json.dumps({
                "version": 1, "op": "send", "key": "k-later", "to": {"user": USER},
                "text": "keyless later", "schedule": {"at": at.isoformat()}}))
            assert await schedule(rt, message, now=at - timedelta(minutes=10)) == "scheduled"
            await stack.start()
            await eventually(lambda: delivered(http, stack.emulator_url, "keyless later"),
                             timeout=75, what="the scheduled send reached the Connector")
            await eventually(lambda: _sent(deliveries, "k-later"), timeout=15,
                             what="the scheduled delivery recorded as sent")
        finally:
            await rt.close()
    stack.stop()
    assert "timer" in stack.logs().lower() or "schedules" in stack.logs()

    # Every token the app and the CLI used came from the managed-identity endpoint,
    # for storage, as the configured identity: per process one credential (the
    # app's, and the local host's own for its queue polling; the CLI's).
    assert aad.msi_requests, stack.logs()
    assert {(r["resource"], r["client_id"]) for r in aad.msi_requests} == {
        (STORAGE_RESOURCE, CLIENT_ID)}
    assert len(aad.msi_requests) == 2 * stack.runs + 2  # two host runs, two CLI runs
    # Azurite's record: every request carried a bearer token it accepted, and
    # every operation is one the code declares (tests/test_infra.py maps those
    # to the identity's roles).
    requests = recorded(debug_log(oauth_azurite))
    assert requests and all(r.by_token and r.authorization == "Bearer"
                            for r in requests.values())
    seen: dict[str, set[str]] = {}
    for service, operation in rest_operations(requests):
        seen.setdefault(service, set()).add(operation)
    assert set(seen) <= set(OPERATIONS), seen
    for service, operations in seen.items():
        assert operations <= set(OPERATIONS[service]), (service, operations)
    # The core of the path, as Azurite saw it.
    assert {"Create Table", "Query Entities", "Insert Entity", "Update Entity",
            "Entity Group Transaction"} <= seen["table"], seen
    assert {"Create Queue", "Put Message", "Get Messages", "Delete Message"} <= seen["queue"]


async def _sent(deliveries: DeliveryStore, key: str) -> list[dict[str, Any]]:
    rows = [row.to_entity() for row, _ in await deliveries.by_key(key)]
    return rows if rows and all(r.get("state") == "sent" for r in rows) else []


async def test_the_cli_says_in_one_line_when_it_cannot_get_a_storage_token(
        oauth_azurite: Azurite, aad: FakeAAD, tmp_path: Path) -> None:
    aad.msi_client_ids = {"another-identity"}  # this __clientId is not attached to the app
    stack = Stack(oauth_azurite, aad, "http://127.0.0.1:9/", tmp_path)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proactive", "send", "--to", USER, "--text", "x",
        cwd=tmp_path, env=stack.env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    text = err.decode()
    assert proc.returncode == 2, text
    assert text.startswith("error: could not sign in to https://127.0.0.1:") and \
        text.count("\n") == 1 and "Traceback" not in text, text


async def test_doctor_checks_storage_with_a_token_and_only_declared_operations(
        oauth_azurite: Azurite, aad: FakeAAD, tmp_path: Path) -> None:
    """doctor's storage check over bearer tokens (the deployment's way; `--account`
    takes the user's sign-in the same way): it passes, and Azurite saw only
    token-authorized operations the app's code declares, which the roles grant."""
    stack = Stack(oauth_azurite, aad, "http://127.0.0.1:9/", tmp_path)
    tokens = StorageTokens(MintedCredential(aad, client_id="the-test"))
    log = debug_log(oauth_azurite)
    count = len(recorded(log))
    await provision(identity_settings(oauth_azurite, stack.tag), tokens)
    # Azurite writes its log behind: provision's 7 tables and 2 queues first.
    await eventually(lambda: len(recorded(log)) >= count + 9, what="provision logged")
    before = set(recorded(log))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proactive", "doctor", "--skip", "endpoint", "--skip", "config",
        "--skip", "package", "--skip", "timer", cwd=tmp_path, env=stack.env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode() + err.decode()
    assert out.decode().splitlines()[1].startswith("✓ storage: 7 tables and 2 queues exist")

    def doctors() -> dict[str, Any] | None:  # 7 table reads, 2 peeks, a put and its delete
        new = {k: v for k, v in recorded(log).items() if k not in before}
        return new if len(new) >= 11 else None
    requests = await eventually(doctors, what="doctor logged")
    assert requests and all(r.by_token for r in requests.values())
    seen: dict[str, set[str]] = {}
    for service, operation in rest_operations(requests):
        seen.setdefault(service, set()).add(operation)
    assert seen == {"table": {"Query Entities"},
                    "queue": {"Peek Messages", "Put Message", "Delete Message"}}, seen
    assert {(r["resource"], r["client_id"]) for r in aad.msi_requests} == {
        (STORAGE_RESOURCE, CLIENT_ID)}
