"""Benchmark 2: the whole outbox path through ONE local worker process.

queue (Azurite) → delivery claim → reference lookup → pacing → Connector send
(the emulator, in its own process) → delivery row `sent` → queue message deleted.

1. Start Azurite (in memory, free loopback ports) and the Connector emulator
   (its own process, no limits).
2. Seed the references table: `ReferenceStore.record` of a synthetic personal
   install per user, whose serviceUrl is the emulator's loopback URL
   (`PROACTIVE_LOCAL_DEV=true`, so no token). Users are spread over
   `--tenants` tenants: Teams allows 50 requests/s per tenant and the worker
   paces itself to that (`PROACTIVE_TENANT_RPS`), so a single-tenant run
   measures the pacer, not the worker.
3. Enqueue `--warmup` + `--messages` sends (`{"to": {"user": ...}}`, no tenant,
   as in the README's examples).
4. Start the worker: `python -m proactive host` (the built-in Functions host
   running the project's function_app.py with host.json's queue semantics) in
   a child process, and poll the emulator's delivered counter. The window
   opens when the warm-up messages are delivered and closes when every
   message is delivered and the queue is empty (all deleted). The worker's CPU
   over the window comes from /proc/<pid>/stat.
5. Check the delivery rows (all `sent`), then measure each storage/HTTP
   operation alone with the Runtime's clients against the same Azurite (CPU per
   operation in this process) and compose them into a per-message estimate:
   the breakdown table ops vs queue ops vs Connector call vs the rest.

    .venv/bin/python -m benchmarks.whole_path [--messages 2000] [--tenants 50]
        [--profile worker.prof]   # run the worker under cProfile, print where CPU goes
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks._common import (
    CALIBRATION,
    PYTHON,
    REPO,
    Emulator,
    calibrate,
    emulator_process,
    figure,
    figure_rounds,
    header,
    machine_cpu,
    machine_line,
    machine_load_note,
    median,
    note,
    proc_cpu_seconds,
    stop,
    tree_cpu_seconds,
)

TARGET_PER_S = 250.0
BOT = "28:00000000-0000-4000-8000-0000000b0700"
TEXT = "Build **4711** is green: all 1,234 tests passed"


def aad_id(i: int) -> str:
    return f"00000000-0000-4000-8000-{i:012d}"


def tenant_id(t: int) -> str:
    return f"7e000000-0000-4000-8000-{t:012d}"


def install_activity(i: int, tenants: int, service_url: str) -> dict[str, Any]:
    tenant = tenant_id(i % tenants)
    return {
        "type": "installationUpdate", "action": "add", "id": str(uuid.uuid4()),
        "channelId": "msteams", "serviceUrl": service_url,
        "from": {"id": f"29:bench-user-{i}", "aadObjectId": aad_id(i), "name": f"User {i}"},
        "recipient": {"id": BOT, "name": "Proactive"},
        "conversation": {"id": f"a:bench-personal-{i}", "conversationType": "personal",
                         "tenantId": tenant},
        "channelData": {"tenant": {"id": tenant}},
        "locale": "en-GB",
    }


def send_message(key: str, user: int) -> str:
    return json.dumps({"version": 1, "op": "send", "key": key, "to": {"user": aad_id(user)},
                       "text": TEXT, "summary": "CI"}, separators=(",", ":"))


async def bounded(items: list[Callable[[], Awaitable[Any]]], concurrency: int) -> None:
    it = iter(items)

    async def worker() -> None:
        for make in it:
            await make()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


# --- set-up ----------------------------------------------------------------------

async def seed(settings: Any, emulator: Emulator, users: int, tenants: int,
               bodies: list[str]) -> None:
    from proactive.receiving.activities import parse_activity
    from proactive.runtime import Runtime
    from proactive_devtools.provision import provision

    await provision(settings)  # as the deployment (or ./scripts/dev) does
    rt = await Runtime.create(settings)
    try:
        async def installed(i: int) -> None:
            await rt.references.record(parse_activity(install_activity(i, tenants, emulator.url)))

        async def queued(body: str) -> None:
            await rt.outbox.queue.send_message(body)

        await bounded([partial(installed, i) for i in range(users)], 32)
        await bounded([partial(queued, body) for body in bodies], 32)
    finally:
        await rt.close()


def app_settings(connection: str, tag: str, tenant_rps: float,
                 connector: str = "") -> dict[str, str]:
    """The app settings of the run: the worker gets them as environment, the
    benchmark reads them with Settings.from_env, as the app does. `connector`:
    the emulator's URL, the one local Connector the worker may send to."""
    return {
        **({"PROACTIVE_LOCAL_CONNECTOR": connector} if connector else {}),
        "AzureWebJobsStorage": connection,
        "OUTBOX_QUEUE": f"bench-{tag}",
        "PROACTIVE_TABLE_PREFIX": f"b{tag}",
        "PROACTIVE_LOCAL_DEV": "true",  # loopback serviceUrl, no token
        "PROACTIVE_WELCOME": "false",
        "PROACTIVE_TENANT_RPS": str(int(tenant_rps)),
        "MicrosoftAppId": "", "MicrosoftAppPassword": "", "MicrosoftAppCertificatePath": "",
        "MicrosoftAppType": "SingleTenant",
    }


def app_dir(workdir: Path, batch_size: int) -> Path:
    """The project itself, or (diagnosis) a copy of function_app.py with
    host.json's batchSize/newBatchThreshold changed."""
    if not batch_size:
        return REPO
    app = workdir / "app"
    app.mkdir()
    (app / "function_app.py").write_text((REPO / "function_app.py").read_text())
    host = json.loads((REPO / "host.json").read_text())
    queues = host.setdefault("extensions", {}).setdefault("queues", {})
    queues.update(batchSize=batch_size, newBatchThreshold=batch_size // 2)
    (app / "host.json").write_text(json.dumps(host))
    return app


def start_worker(values: dict[str, str], workdir: Path, profile: str | None,
                 no_tenant_pacer: bool = False, batch_size: int = 0
                 ) -> tuple[subprocess.Popen[bytes], Path, Path]:
    settings_file = workdir / "local.settings.json"
    settings_file.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    env = {**os.environ, **values, "PYTHONUNBUFFERED": "1"}
    log, counts = workdir / "worker.log", workdir / "counts.json"
    # `python -m proactive host`, with its requests counted (benchmarks/_worker.py)
    cmd = [PYTHON, "-m", "benchmarks._worker", str(counts),
           *(["--profile", profile] if profile else []),
           *(["--no-tenant-pacer"] if no_tenant_pacer else []),
           "--app-dir", str(app_dir(workdir, batch_size)), "--port", "0",
           "--settings", str(settings_file)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    return proc, log, counts


async def queue_count(queue: Any) -> int:
    props = await queue.get_queue_properties()
    return int(props.approximate_message_count or 0)


async def delivery_states(table: Any) -> Counter[str]:
    states: Counter[str] = Counter()
    async for entity in table.list_entities(select=["state"]):
        states[str(entity.get("state"))] += 1
    return states


# --- the breakdown: each operation alone ---------------------------------------------

SERVER_US: dict[str, float] = {}  # server-side CPU µs per request, by label


async def per_op_cpu(make: Callable[[int], Awaitable[Any]], count: int,
                     concurrency: int = 16, *, server_pid: int = 0, label: str = "") -> float:
    """CPU µs per call of `make(i)` in this process: `count` calls after a
    warm-up. With `server_pid`, the server's CPU per call goes to SERVER_US."""
    await bounded([partial(make, i) for i in range(min(50, count))], concurrency)
    server0 = tree_cpu_seconds(server_pid) if server_pid else 0.0
    cpu0 = time.process_time()
    await bounded([partial(make, i + 50) for i in range(count)], concurrency)
    ours = (time.process_time() - cpu0) / count * 1e6
    if server_pid and label:
        SERVER_US[label] = (tree_cpu_seconds(server_pid) - server0) / count * 1e6
    return ours


async def op_costs(settings: Any, emulator: Emulator, azurite_pid: int, ops: int
                   ) -> dict[str, float]:
    """CPU µs per request of each kind the worker makes, with the clients
    `Runtime.create` builds (RestTableClient for the hot-path tables, the async
    SDK for queues) against the same Azurite and emulator.
    Keys match benchmarks._worker's request labels."""
    from azure.core import MatchConditions
    from azure.data.tables import UpdateMode

    from proactive.runtime import Runtime
    from proactive.storage.reference_keys import user_pk
    from proactive.storage.tables import safe_key

    rt = await Runtime.create(settings)
    tag = uuid.uuid4().hex[:8]
    table, refs = rt.deliveries.table, rt.references.table
    queue = rt.queue_service.get_queue_client(f"bench-ops-{tag}")
    await queue.create_queue()
    out: dict[str, float] = {}
    etags: dict[int, str] = {}

    def row(i: int, **extra: Any) -> dict[str, Any]:
        return {"PartitionKey": f"ops{tag}-{i}", "RowKey": safe_key(f"user:{aad_id(i)}"),
                "key": f"ops{tag}-{i}", "recipient": f"user:{aad_id(i)}", "attempts": 1,
                "createdAt": "2026-01-01T00:00:00.000Z", **extra}

    async def insert(i: int) -> None:
        etags[i] = (await table.create_entity(row(i, state="sending")))["etag"]

    async def replace(i: int) -> None:
        await table.update_entity(row(i, state="sent", activityId="1", conversationId="a:x",
                                      serviceUrl=emulator.url),
                                  mode=UpdateMode.REPLACE, etag=etags[i],
                                  match_condition=MatchConditions.IfNotModified)

    async def merge(i: int) -> None:
        await table.upsert_entity(row(i, lastSeen="now"), mode=UpdateMode.MERGE)

    async def query(i: int) -> None:
        async for _ in refs.query_entities("PartitionKey eq @pk", results_per_page=2,
                                           parameters={"pk": user_pk(aad_id(i % ops))}):
            break

    async def point_read(i: int) -> None:
        await table.get_entity(f"ops{tag}-{i}", safe_key(f"user:{aad_id(i)}"))

    async def send(i: int) -> None:
        await queue.send_message(send_message(f"ops-{i}", 0))

    received: list[Any] = []

    async def receive(i: int) -> None:
        received.extend([m async for m in queue.receive_messages(
            messages_per_page=16, max_messages=16, visibility_timeout=600)])

    async def delete(i: int) -> None:
        m = received[i]
        await queue.delete_message(m.id, m.pop_receipt)

    async def connector(i: int) -> None:
        await rt.connector.send(emulator.url, "a:bench-ops", {"type": "message",
                                                              "text": TEXT, "summary": "CI"})

    def measure(label: str, make: Callable[[int], Awaitable[Any]], count: int,
                concurrency: int = 16) -> Awaitable[float]:
        return per_op_cpu(make, count, concurrency, server_pid=azurite_pid, label=label)

    try:
        out["table insert"] = await measure("table insert", insert, ops)
        out["table replace/upsert"] = await measure("table replace/upsert", replace, ops)
        out["table merge"] = await measure("table merge", merge, ops)
        out["table query"] = await measure("table query", query, ops)
        out["table point read"] = await measure("table point read", point_read, ops)
        out["queue send"] = await measure("queue send", send, ops + 16 * 8)
        out["queue receive"] = await measure("queue receive", receive, max(1, ops // 16), 1)
        out["queue delete"] = await measure("queue delete", delete, len(received) - 50)
        out["connector POST"] = await per_op_cpu(connector, ops, server_pid=emulator.proc.pid,
                                                label="connector POST")
        out["queue receive, per message of 16"] = out["queue receive"] * (
            max(1, ops // 16) + min(50, max(1, ops // 16))) / max(1, len(received))
        await table.create_entity({"PartitionKey": f"ops{tag}-floor", "RowKey": "r",
                                   "state": "sent", "attempts": 1})
        sdk = rt.table_service.get_table_client(table.table_name)
        out["reference: the same point read through the async SDK"] = await per_op_cpu(
            lambda i: sdk.get_entity(f"ops{tag}-{i}", safe_key(f"user:{aad_id(i)}")), ops)
        floor = await point_read_floor(settings, table.table_name, f"ops{tag}-floor", "r", ops)
        if floor:
            out["floor: raw aiohttp point read (reference)"] = floor
    finally:
        await queue.delete_queue()
        await rt.close()
    return out


async def point_read_floor(settings: Any, table_name: str, pk: str, rk: str,
                           count: int) -> float | None:
    """CPU µs of the same point read signed by hand (SharedKeyLite) over a bare
    aiohttp session: what a table request costs without azure-core's pipeline
    and serializers. A reference figure; None if Azurite refuses it."""
    import base64
    import hashlib
    import hmac
    from email.utils import formatdate
    from urllib.parse import quote

    import aiohttp

    from proactive.config import DEV_ACCOUNT, DEV_KEY

    parts = dict(p.split("=", 1) for p in settings.storage_connection.split(";") if "=" in p)
    endpoint = parts.get("TableEndpoint", "").rstrip("/")
    if not endpoint.startswith("http://127.0.0.1:"):
        return None
    key = base64.b64decode(DEV_KEY)
    path = f"/{table_name}(PartitionKey='{quote(pk)}',RowKey='{quote(rk)}')"

    async with aiohttp.ClientSession() as session:
        async def read(i: int) -> None:
            date = formatdate(usegmt=True)
            signed = f"{date}\n/{DEV_ACCOUNT}/{DEV_ACCOUNT}{path}"
            mac = hmac.new(key, signed.encode(), hashlib.sha256).digest()
            headers = {"x-ms-date": date, "x-ms-version": "2019-02-02",
                       "Accept": "application/json;odata=nometadata", "DataServiceVersion": "3.0",
                       "Authorization": f"SharedKeyLite {DEV_ACCOUNT}:"
                                        f"{base64.b64encode(mac).decode()}"}
            async with session.get(endpoint + path, headers=headers) as response:
                body = await response.read()
                if response.status != 200:
                    raise RuntimeError(f"{response.status}")
                json.loads(body)

        try:
            return await per_op_cpu(read, count)
        except RuntimeError:
            return None


def print_breakdown(costs: dict[str, float], counts: dict[str, int], messages: int,
                    measured_ms: float, azurite_ms: float) -> None:
    """Requests per message (counted in the worker) × CPU per request (measured
    alone): table ops vs queue ops vs Connector calls vs the rest."""
    print("  CPU per request, clients as Runtime.create builds them "
          "(measured alone, concurrency 16; server = Azurite or the emulator):")
    for name, us in costs.items():
        server = SERVER_US.get(name)
        figure(name, us, "µs" + (f"   server {server:,.0f} µs" if server is not None else ""),
               fmt="{:,.0f}", indent=4)
    print(f"  requests the worker made per message ({messages:,} messages, "
          "incl. warm-up and start-up):")
    groups: dict[str, float] = {}
    for name, count in sorted(counts.items()):
        per = count / messages
        cost = costs.get(name)
        extra = f"× {cost:,.0f} µs = {per * cost:,.0f} µs" if cost is not None else ""
        figure(name, per, extra, fmt="{:,.3f}", indent=4)
        if cost is not None:
            group = name.split(" ", 1)[0]
            groups[group] = groups.get(group, 0.0) + per * cost
    total = measured_ms * 1000
    groups["rest"] = total - sum(groups.values())
    azurite = sum(count / messages * SERVER_US.get(name, 0.0) for name, count in counts.items()
                  if not name.startswith("connector"))
    note(f"  Azurite CPU per message from these counts: {azurite / 1000:.2f} ms "
         f"(measured over the window: {azurite_ms:.2f} ms)")
    print("  worker CPU per message, by kind:")
    for name, label in (("table", "table ops"), ("queue", "queue ops (receive/delete)"),
                        ("connector", "Connector call"),
                        ("rest", "rest (host, outbox, logging, loop)")):
        us = groups.get(name, 0.0)
        figure(label, us, f"µs  ({us / total * 100:3.0f} % of the measured "
               f"{measured_ms:.2f} ms)", fmt="{:,.0f}", indent=4)
    without_queue = total - groups.get("queue", 0.0)
    note(f"  without the queue ops (under `func start` or in Azure the .NET host receives and "
         f"deletes, not the Python worker): {without_queue / 1000:.2f} ms per message, "
         f"ceiling {1e6 / without_queue:,.0f}/s per core")


# --- profile summary ----------------------------------------------------------------

def summarize_profile(path: str, messages: int) -> None:
    """Self CPU time by package from the worker's cProfile output (profiling
    inflates everything, so read the shares, not the absolute figures)."""
    import pstats

    stats = pstats.Stats(path)
    by_area: Counter[str] = Counter()
    total = 0.0
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for (filename, _, name), (_, _, tottime, _, _) in raw.items():
        total += tottime
        by_area[_area(filename, name)] += tottime
    print(f"  worker self CPU time by area under cProfile ({total:.2f} s, whole run "
          f"incl. start-up; {messages:,} messages):")
    for area, seconds in by_area.most_common(16):
        print(f"    {area:<44} {seconds / total * 100:5.1f} %")
    print("  worker CPU by step of the path (cumulative, so nested steps overlap):")
    steps = (("message handled (triggers.outbox)", "proactive/triggers.py", "outbox"),
             ("parse + validate (contract.parse_message)", "proactive/contract/parse.py",
              "parse_message"),
             ("delivery claim (deliveries.claim)", "proactive/deliveries.py", "claim"),
             ("reference lookup (outbox._reference)", "proactive/outbox.py", "_reference"),
             ("tenant pacing (TenantPacer.acquire)", "proactive/pacing.py", "acquire"),
             ("Connector send (ConnectorClient._call)", "proactive/connector.py", "_call"),
             ("delivery finish (deliveries.finish)", "proactive/deliveries.py", "finish"),
             ("host: receive (LocalHost._poll_queue)", "devtools/localhost.py", "_poll_queue"),
             ("host: delete (QueueClient.delete_message)", "queue/aio/_queue_client_async.py",
              "delete_message"),
             ("logging (Logger.callHandlers)", "logging/__init__.py", "callHandlers"))
    for label, file_end, func_name in steps:
        cum = sum(v[3] for (f, _, n), v in raw.items() if f.endswith(file_end) and n == func_name)
        print(f"    {label:<44} {cum / total * 100:5.1f} %")
    print("  top functions by cumulative time:")
    stats.sort_stats("cumulative")
    listed = 0
    for func, (_, _, _, cumtime, _) in sorted(raw.items(), key=lambda kv: -kv[1][3]):
        filename, line, name = func
        if "site-packages" not in filename and "proactive" not in filename:
            continue
        print(f"    {cumtime / total * 100:5.1f} %  {_short(filename)}:{line} {name}")
        listed += 1
        if listed >= 30:
            break


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def _area(filename: str, name: str) -> str:
    if filename == "~":  # "<method 'poll' of 'select.epoll' objects>", "<built-in ...>"
        parts = name.split("'")
        if len(parts) >= 4:
            return f"C: {parts[3]}.{parts[1]}"
        return f"C: {name.strip('<>')[:40]}"
    short = _short(filename)
    if "site-packages/" in filename:
        parts = short.split("/")
        return "/".join(parts[:2]) if parts[0] == "azure" else parts[0]
    if "proactive/" in filename:
        return "proactive/" + short.split("proactive/", 1)[1]
    return "stdlib " + short.split("/")[-1] if "python3" in filename else short


# --- the run ------------------------------------------------------------------------

async def _poll_until_done(emulator: Emulator, queue: Any, proc: subprocess.Popen[bytes],
                           azurite_pid: int, warmup: int, total: int, timeout: float
                           ) -> dict[str, float]:
    """Poll the emulator (and the queue at the end) until every message is
    delivered and deleted. Returns the window's timings and CPU readings."""
    pid = proc.pid
    start = time.monotonic()
    deadline = start + timeout
    marks: dict[str, float] = {}
    delivered = 0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited with {proc.returncode}")
        delivered = (await asyncio.to_thread(emulator.counters)).get("delivered", 0)
        now = time.monotonic()
        if "t0" not in marks and delivered >= warmup:
            machine = machine_cpu()
            marks.update(t0=now, cpu0=proc_cpu_seconds(pid), d0=delivered,
                         emu0=emulator.cpu_seconds(), startup=now - start,
                         az0=tree_cpu_seconds(azurite_pid), self0=time.process_time(),
                         m_busy0=machine[0], m_total0=machine[1])
        if delivered >= total and await queue_count(queue) == 0:
            machine = machine_cpu()
            marks.update(t1=time.monotonic(), cpu1=proc_cpu_seconds(pid), d1=delivered,
                         emu1=emulator.cpu_seconds(), az1=tree_cpu_seconds(azurite_pid),
                         self1=time.process_time(), m_busy1=machine[0], m_total1=machine[1])
            return marks
        await asyncio.sleep(0.05)
    raise TimeoutError(f"only {delivered} of {total} delivered after {timeout:.0f} s")


async def one_round(args: argparse.Namespace, azurite: Any, emulator: Emulator,
                    tmp: Path) -> dict[str, Any]:
    """Seed, run a fresh worker over the messages, and read its figures."""
    from azure.data.tables.aio import TableClient
    from azure.storage.queue.aio import QueueClient

    from proactive.config import Settings

    n, warmup, tenants = args.messages, args.warmup, max(1, args.tenants)
    users = n + warmup
    values = app_settings(azurite.connection_string, uuid.uuid4().hex[:8], args.tenant_rps,
                          emulator.url)
    settings = Settings.from_env(values)
    bodies = [send_message(f"warm-{i}", i) for i in range(warmup)]
    bodies += [send_message(f"bench-{i}", warmup + i) for i in range(n)]
    t = time.perf_counter()
    await seed(settings, emulator, users, tenants, bodies)
    note(f"seeded {users:,} references and enqueued {len(bodies):,} messages in "
         f"{time.perf_counter() - t:.1f} s")
    await asyncio.to_thread(emulator.reset)
    workdir = tmp / uuid.uuid4().hex[:8]
    workdir.mkdir()
    proc, log, counts_file = start_worker(values, workdir, args.profile,
                                          args.no_tenant_pacer, args.batch_size)
    queue = QueueClient.from_connection_string(settings.storage_connection,
                                               settings.outbox_queue)
    try:
        marks = await _poll_until_done(emulator, queue, proc, azurite.proc.pid,
                                       max(1, warmup), len(bodies), args.timeout)
    except Exception:
        print(log.read_text(errors="replace")[-3000:])
        raise
    finally:
        stop(proc, timeout=30)
        await queue.close()
        if args.keep_log:
            Path(args.keep_log).write_bytes(log.read_bytes())
    counters = await asyncio.to_thread(emulator.counters)
    async with TableClient.from_connection_string(
            settings.storage_connection, settings.table_name("deliveries")) as table:
        states = await delivery_states(table)
    window = marks["t1"] - marks["t0"]
    done = marks["d1"] - marks["d0"]
    cpu = marks["cpu1"] - marks["cpu0"]
    emu_cpu, az_cpu = marks["emu1"] - marks["emu0"], marks["az1"] - marks["az0"]
    ours = cpu + emu_cpu + az_cpu + marks["self1"] - marks["self0"]
    note(machine_load_note((marks["m_busy0"], marks["m_total0"]),
                           (marks["m_busy1"], marks["m_total1"]), ours))
    sent = states.get("sent", 0)
    if sent != len(bodies) or counters.get("delivered", 0) != len(bodies):
        note(f"WARNING: delivery rows {dict(states)}; emulator delivered "
             f"{counters.get('delivered', 0):,} of {len(bodies):,}")
    return {"rate": done / window, "cpu_ms": cpu / done * 1000,
            "core_share": cpu / window * 100, "window": window, "startup": marks["startup"],
            "azurite_ms": az_cpu / done * 1000, "emulator_ms": emu_cpu / done * 1000,
            "settings": settings, "counts_file": counts_file, "messages": len(bodies),
            "counts": json.loads(counts_file.read_text()) if counts_file.exists() else {}}


async def run(args: argparse.Namespace) -> None:
    from proactive_devtools.processes import start_azurite

    # The seeding Runtime warns about local-dev mode on stderr; the worker logs it too.
    logging.getLogger("proactive").setLevel(logging.ERROR)
    n, warmup, tenants = args.messages, args.warmup, max(1, args.tenants)
    pacing = "OFF (diagnosis, not the product path)" if args.no_tenant_pacer \
        else f"{args.tenant_rps:g}/s"
    header(f"Whole path: {n:,} outbox messages through one worker process "
           f"({n + warmup:,} users in {tenants} tenants, tenant pacing {pacing}), "
           f"{args.rounds} interleaved round(s)")
    note(machine_line())
    azurite = start_azurite()
    try:
        with emulator_process() as emulator, tempfile.TemporaryDirectory() as tmp:
            note(f"Azurite {azurite.queue_port}/{azurite.table_port}, emulator {emulator.url}")
            rounds: list[dict[str, Any]] = []
            calibration: list[float] = []
            for _ in range(args.rounds):  # calibration and the path, alternately
                calibration.append(await calibrate(emulator.url))
                rounds.append(await one_round(args, azurite, emulator, Path(tmp)))
            cal = median(calibration)

            def col(name: str) -> list[float]:
                return [float(r[name]) for r in rounds]

            figure_rounds(f"calibration: {CALIBRATION}", calibration, "µs", fmt="{:,.0f}")
            figure_rounds("messages/s (steady window)", col("rate"), "/s",
                          target=TARGET_PER_S, lower_is_better=False, fmt="{:,.0f}")
            figure_rounds("worker CPU per message", col("cpu_ms"), "ms", fmt="{:,.2f}",
                          calibration_us=cal, per_us=1000)
            figure_rounds("worker CPU-bound ceiling (1 core / CPU per msg)",
                          [1000 / c for c in col("cpu_ms")], "/s", target=TARGET_PER_S,
                          lower_is_better=False, fmt="{:,.0f}")
            figure_rounds("worker CPU use during the window", col("core_share"),
                          "% of a core", fmt="{:,.0f}")
            figure_rounds("Azurite CPU per message (its share)", col("azurite_ms"), "ms",
                          fmt="{:,.2f}", calibration_us=cal, per_us=1000)
            figure_rounds("emulator CPU per message", col("emulator_ms"), "ms",
                          fmt="{:,.2f}")
            figure_rounds("worker start to warm-up done", col("startup"), "s", fmt="{:,.1f}")
            note(machine_line())
            last = rounds[-1]
            if args.profile:
                summarize_profile(args.profile, last["messages"])
            if args.breakdown_ops > 0:
                costs = await op_costs(last["settings"], emulator, azurite.proc.pid,
                                       args.breakdown_ops)
                print_breakdown(costs, last["counts"], last["messages"], last["cpu_ms"],
                                last["azurite_ms"])
                note(f"(breakdown from the last round; calibration {cal:,.0f} µs)")
    finally:
        azurite.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.whole_path", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds (each with its own calibration)")
    parser.add_argument("--warmup", type=int, default=100,
                        help="messages processed before the window opens")
    parser.add_argument("--tenants", type=int, default=50)
    parser.add_argument("--tenant-rps", type=float, default=50.0,
                        help="PROACTIVE_TENANT_RPS for the worker (Teams' limit: 50)")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--breakdown-ops", type=int, default=1000,
                        help="calls per operation in the breakdown (0: skip it)")
    parser.add_argument("--profile", metavar="FILE", default=None,
                        help="run the worker under cProfile (CPU time); write FILE, summarize it")
    parser.add_argument("--no-tenant-pacer", action="store_true",
                        help="diagnosis: the worker skips the tenant pacer's storage "
                             "reservations (not the product path)")
    parser.add_argument("--batch-size", type=int, default=0,
                        help="diagnosis: run a copy of the app whose host.json has this "
                             "batchSize (newBatchThreshold half of it); default: host.json")
    parser.add_argument("--keep-log", metavar="FILE", default=None,
                        help="copy the worker's log (one line per invocation) to FILE")
    args = parser.parse_args(argv)
    if args.profile:
        args.profile = str(Path(args.profile).resolve())
    args.messages = max(1, args.messages)
    args.warmup = max(0, args.warmup)
    args.rounds = 1 if args.profile else max(1, args.rounds)
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
