"""A small stand-in for the Azure Functions host (`func start`, which can't be
installed here): runs the HTTP, queue and timer triggers of a Python v2 model
`function_app.py` with the host semantics the project relies on. Dev and tests only.

Auth keys: `func start` checks none locally. This host checks them like the
Functions host in Azure once keys are configured (`keys=`, or the setting
LOCAL_HOST_FUNCTION_KEYS: comma-separated, as `--function-key` on the command
line): a `function`- or `admin`-level route then answers 401 unless the
`x-functions-key` header or the `code` query parameter holds one of them
(admin: `master_key` only, as in Azure); `anonymous` routes are never checked.

Left out: bindings other than
the trigger and the HTTP `$return`, `context` parameters, the timer's schedule
monitor (occurrences missed while stopped aren't replayed) and time zones (UTC,
the host's default).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import functools
import hmac
import importlib
import inspect
import json
import logging
import os
import re
import signal
import sys
import time
import uuid
import weakref
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import azure.functions as func
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse
from azure.core.exceptions import ResourceExistsError
from azure.functions.decorators.function_app import FunctionRegister
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest
from azure.storage.queue import QueueMessage as StorageMessage
from azure.storage.queue.aio import QueueClient
from multidict import CIMultiDict

from proactive.api.problems import problem
from proactive.config import Settings
from proactive.contract.schedule.cron import (
    Schedule,
    next_occurrence,
    parse_schedule,
    parse_timespan,
)
from proactive.errors import Conflict
from proactive.storage import credentials
from proactive.storage.credentials import StorageTokens
from proactive.telemetry import quiet_libraries
from proactive_devtools.processes import connection_string

log = logging.getLogger(__name__)
_INDEXED: weakref.WeakKeyDictionary[FunctionRegister, list[Any]] = weakref.WeakKeyDictionary()
MIN_POLL = 0.1  # seconds: the host's first back-off step when a queue is idle
# Messages are received invisible for this long (seconds) and the lease is
# renewed at half of it while the function runs, as the host does: the queue
# listener of the WebJobs SDK's storage extension (which the Functions host,
# Flex Consumption included, runs for queue triggers) dequeues with a fixed
# `_visibilityTimeout = TimeSpan.FromMinutes(10)` and renews it "when it is
# halfway to expiring" (QueueListener.CreateUpdateMessageVisibilityTimer,
# github.com/Azure/azure-webjobs-sdk, src/Microsoft.Azure.WebJobs.Extensions.
# Storage/Queues/Listeners/QueueListener.cs). No host.json setting changes it
# (its maintainers: the 10 minutes only matter "if the host dies",
# Azure/azure-webjobs-sdk#1040). So a dead instance's messages come back after
# at most ten minutes: the bound README "Exactly once, as far as Teams allows"
# designs for. `--lease` shortens it for tests only.
DEFAULT_LEASE = 600
MAX_REQUEST_BODY = 100 * 1024 * 1024  # the Functions host's limit
KEYS_SETTING = "LOCAL_HOST_FUNCTION_KEYS"  # keys the HTTP routes accept (none: unchecked)
EXIT_CONFIG_ERROR = 2  # the app's settings can't be used (the one line on stderr says why)

# --- settings and app loading ------------------------------------------------


def resolve_setting(value: str, env: Mapping[str, str]) -> str:
    """Replace `%NAME%` with app setting NAME, as the host does in binding values."""
    def sub(m: re.Match[str]) -> str:
        if m.group(1) not in env:
            raise ValueError(f"app setting {m.group(1)!r} (used as %{m.group(1)}%) is not set")
        return env[m.group(1)]
    return re.sub(r"%([^%]+)%", sub, value)


def storage_connection(value: str) -> str:
    """A binding's connection string; `UseDevelopmentStorage=true` means Azurite's default ports."""
    if value.replace(" ", "").lower().rstrip(";") == "usedevelopmentstorage=true":
        return connection_string(10001, 10002, 10000)
    return value


def identity_storage(setting: str, env: Mapping[str, str]) -> Settings | None:
    """The identity-based connection `setting` (`<setting>__queueServiceUri` or
    `__accountName`, `__credential`, `__clientId`), as the host reads one when
    `<setting>` itself is not set; None when there is none."""
    def get(name: str) -> str:
        return (env.get(f"{setting}__{name}") or "").strip()
    if not (get("queueServiceUri") or get("accountName")):
        return None
    return Settings(storage_connection="", storage_credential=get("credential"),
                    storage_client_id=get("clientId"), storage_account=get("accountName"),
                    queue_service_uri=get("queueServiceUri"))


def load_settings(path: str | Path) -> dict[str, Any]:
    """local.settings.json, with every "Values" entry as a string."""
    data = dict(json.loads(Path(path).read_text(encoding="utf-8")))
    data["Values"] = {k: v if isinstance(v, str) else json.dumps(v)
                      for k, v in (data.get("Values") or {}).items()}
    return data


def load_app(app_dir: str | Path) -> FunctionRegister:
    """Import `function_app` from app_dir and find its FunctionApp, as the Python worker does."""
    sys.path.insert(0, str(Path(app_dir).resolve()))
    module = importlib.import_module("function_app")
    for value in vars(module).values():
        if isinstance(value, FunctionRegister):
            return value
    raise RuntimeError(f"{module.__file__} defines no azure.functions.FunctionApp")


@dataclass(frozen=True)
class QueueOptions:
    """host.json extensions.queues, with the host's defaults. visibilityTimeout
    is not the lease: it is how long a message whose invocation *failed* stays
    invisible before its next try (QueueProcessor.CompleteProcessingMessageAsync
    releases it with QueuesOptions.VisibilityTimeout, "the default message
    visibility timeout that will be used for messages that fail processing");
    a message older than maxDequeueCount is poisoned before it runs
    (BeginProcessingMessageAsync), a dead instance's receives counting too."""

    batch_size: int = 16
    new_batch_threshold: int = 8
    max_polling_interval: float = 60.0
    visibility_timeout: float = 0.0
    max_dequeue_count: int = 5
    message_encoding: str = "base64"

    @classmethod
    def from_host_json(cls, config: Mapping[str, Any]) -> QueueOptions:
        q = (config.get("extensions") or {}).get("queues") or {}
        batch = min(max(int(q.get("batchSize", 16)), 1), 32)  # 32: the service's limit
        encoding = str(q.get("messageEncoding", "base64")).lower()
        if encoding not in ("base64", "none"):
            raise ValueError(f"messageEncoding must be base64 or none, got {encoding!r}")
        poll = parse_timespan(q.get("maxPollingInterval", "00:01:00")).total_seconds()
        return cls(batch, int(q.get("newBatchThreshold", batch // 2)), max(poll, MIN_POLL),
                   parse_timespan(q.get("visibilityTimeout", 0)).total_seconds(),
                   int(q.get("maxDequeueCount", 5)), encoding)


@dataclass(frozen=True)
class _Fn:
    name: str
    trigger: dict[str, Any]
    fn: Callable[..., Any]


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    """Wait up to `seconds` for `event`; whether it is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), max(seconds, 0))
    return event.is_set()


async def _settle(tasks: Iterable[asyncio.Task[Any]], timeout: float) -> None:
    """Let tasks finish within `timeout`, then cancel the rest."""
    if tasks := set(tasks):
        _, pending = await asyncio.wait(tasks, timeout=max(timeout, 0))
        for task in pending:
            log.warning("Cancelling %s: still running at shutdown", task.get_name())
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

# --- the host ----------------------------------------------------------------


class LocalHost:
    """Runs one function app's triggers on the running event loop.

    `app`: a FunctionApp, or the folder holding function_app.py (and host.json).
    `host_json`: a path or the parsed mapping. `env`: where app settings are
    looked up (default os.environ, which function code reads). Port 0 picks a
    free port, in `.port` after start(); `.lines` then describes each function."""

    def __init__(self, app: FunctionRegister | str | Path, *,
                 host_json: str | Path | Mapping[str, Any] | None = None,
                 env: Mapping[str, str] | None = None, port: int = 0, bind: str = "127.0.0.1",
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 drain_timeout: float = 30.0, lease: int = DEFAULT_LEASE,
                 keys: Iterable[str] | None = None, master_key: str = "",
                 max_body: int = MAX_REQUEST_BODY) -> None:
        if not isinstance(app, FunctionRegister):
            host_json = Path(app) / "host.json" if host_json is None else host_json
            app = load_app(app)
        if isinstance(host_json, str | Path):
            path = Path(host_json)
            host_json = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        self.app, self.config = app, host_json or {}
        self.env = os.environ if env is None else env
        self.port = port
        self.lines: list[str] = []  # one per function, printed at start like func's
        self._bind, self._clock, self._drain, self._lease = bind, clock, drain_timeout, lease
        self._max_body = max_body
        self._queues = QueueOptions.from_host_json(self.config)
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._pollers: set[asyncio.Task[None]] = set()
        self._inflight: set[asyncio.Task[Any]] = set()
        self._clients: list[QueueClient] = []
        self._tokens: list[StorageTokens] = []  # identity-based connections' token sources
        self._created: set[str] = set()
        if keys is None:
            keys = self.env.get(KEYS_SETTING, "").split(",")
        self._master = master_key
        self._keys = [k.strip() for k in keys if k.strip()] + ([master_key] if master_key else [])

    def _functions(self) -> list[_Fn]:
        # get_functions() fails when called twice (it takes its own names for
        # duplicates), so index each app once per process, as the worker does.
        if self.app not in _INDEXED:
            _INDEXED[self.app] = self.app.get_functions()
        out = []
        for f in _INDEXED[self.app]:
            name, trigger = str(f.get_function_name()), f.get_trigger()
            if self.env.get(f"AzureWebJobs.{name}.Disabled", "").lower() in ("1", "true"):
                self.lines.append(f"{name}: disabled")
            elif trigger is not None:
                known = ("$return", trigger.name)
                if extra := [b.name for b in f.get_bindings() if b.name not in known]:
                    log.warning("%s: bindings %s are not supported by the local host", name, extra)
                out.append(_Fn(name, trigger.get_dict_repr(), f.get_user_function()))
        return out

    async def start(self) -> None:
        # The Functions host takes bodies up to 100 MB; aiohttp's default (1 MiB)
        # would answer a larger one itself, unlike Azure, before the app's own
        # limit. `max_body` (the app's own limit, for `python -m proactive host`)
        # bounds what is read: a longer Content-Length gets 413 unread (_http_handler),
        # a longer chunked body 413 once the limit is read.
        http = web.Application(client_max_size=self._max_body)
        prefix = ((self.config.get("extensions") or {}).get("http") or {}).get("routePrefix", "api")
        pollers: list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]] = []
        for f in self._functions():
            kind = f.trigger["type"]
            try:
                if kind == "httpTrigger":
                    methods = [str(getattr(m, "value", m)).upper()
                               for m in f.trigger.get("methods") or []]
                    paths = _aiohttp_paths(prefix, f.trigger.get("route") or f.name)
                    for path in paths:
                        for method in methods or ["*"]:
                            http.router.add_route(method, path, self._http_handler(f))
                    shown = ",".join(methods) or "ALL"
                    self.lines.append(f"{f.name}: [{shown}] http://localhost:{{port}}{paths[0]}")
                elif kind == "queueTrigger":
                    pollers.append((f.name, self._queue_poller(f)))
                elif kind == "timerTrigger":
                    sched = parse_schedule(resolve_setting(f.trigger["schedule"], self.env))
                    self.lines.append(f"{f.name}: timerTrigger [{sched.text}]")
                    pollers.append((f.name, functools.partial(self._run_timer, f, sched)))
                else:
                    self.lines.append(f"{f.name}: {kind} (not supported by the local host)")
            except (ValueError, KeyError) as exc:  # like the host: this one function is in error
                log.error("The '%s' function is in error: %s", f.name, exc)
                self.lines.append(f"{f.name}: in error ({exc})")
        self._runner = web.AppRunner(http, shutdown_timeout=self._drain,
                                     access_log_class=_AccessLogger)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._bind, self.port).start()
        self.port = int(self._runner.addresses[0][1])
        self.lines = [line.replace("{port}", str(self.port)) for line in self.lines]
        for name, run in pollers:
            self._pollers.add(asyncio.create_task(run(), name=f"{name} trigger"))

    async def stop(self) -> None:
        """Stop serving and polling, let in-flight invocations finish (bounded), clean up."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        deadline = time.monotonic() + self._drain
        if self._runner is not None:
            await self._runner.cleanup()  # waits for running HTTP invocations
        # Pollers only fetch: a short grace lets a receive in progress hand over
        # its messages, without waiting out the SDK's retries when storage is down.
        await _settle(self._pollers, 2.0)
        await _settle(self._inflight, deadline - time.monotonic())
        for client in self._clients:
            await client.close()
        for tokens in self._tokens:
            await tokens.close()

    def _track(self, f: _Fn, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=f"Functions.{f.name}")
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        return task

    async def _invoke(self, f: _Fn, value: Any, reason: str) -> Any:
        invocation, started = uuid.uuid4(), time.monotonic()
        log.info("Executing 'Functions.%s' (Reason='%s', Id=%s)", f.name, reason, invocation)
        try:
            if inspect.iscoroutinefunction(f.fn):
                result = await f.fn(**{f.trigger["name"]: value})
            else:  # like the Python worker: sync functions run in a thread pool
                result = await asyncio.to_thread(f.fn, **{f.trigger["name"]: value})
        except Exception:
            log.exception("Executed 'Functions.%s' (Failed, Id=%s, Duration=%dms)", f.name,
                          invocation, (time.monotonic() - started) * 1000)
            raise
        log.info("Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%dms)", f.name, invocation,
                 (time.monotonic() - started) * 1000)
        return result

    def _http_handler(self, f: _Fn) -> Callable[[web.Request], Coroutine[Any, Any, web.Response]]:
        level = str(getattr(f.trigger.get("authLevel"), "value", f.trigger.get("authLevel"))
                    or "function").lower()

        async def handle(request: web.Request) -> web.Response:
            if (request.content_length or 0) > self._max_body:
                # Refused before a byte of the body is read (anonymous routes too),
                # in the words the app itself uses for a body over its limit.
                too_large = problem(413, "too-large", f"the body is over {self._max_body} "
                                    f"bytes, this app's limit")
                return web.Response(status=413, body=too_large.body,
                                    content_type=too_large.content_type)
            if not self._authorized(level, request):
                # As the host: 401 with no body, before the function runs.
                return web.Response(status=401)
            req = func.HttpRequest(
                request.method, str(request.url),
                headers={k: ", ".join(request.headers.getall(k)) for k in request.headers},
                params=dict(request.query), route_params=dict(request.match_info),
                body=await request.read())
            try:
                return _to_response(await self._invoke(f, req, "HTTP request"))
            except Exception:  # the traceback is logged by _invoke or _to_response
                return web.Response(status=500, text="500 Internal Server Error: the function "
                                                     "failed; see the host's log.")
        return handle

    def _authorized(self, level: str, request: web.Request) -> bool:
        if level == "anonymous" or not self._keys:  # no keys configured: as `func start`
            return True
        given = request.headers.get("x-functions-key") or request.query.get("code") or ""
        allowed = [self._master] if level == "admin" else self._keys
        # Compared in constant time; every key is checked, so timing says nothing.
        return bool(given) and sum(hmac.compare_digest(given.encode(), k.encode())
                                   for k in allowed if k) > 0

    # --- queues ---

    def _queue_poller(self, f: _Fn) -> Callable[[], Coroutine[Any, Any, None]]:
        name = resolve_setting(f.trigger["queueName"], self.env).lower()
        setting = f.trigger.get("connection") or "AzureWebJobsStorage"
        conn = self.env.get(setting) or self.env.get(f"AzureWebJobs{setting}")
        if conn:
            client = QueueClient.from_connection_string(storage_connection(conn), name)
            poison = QueueClient.from_connection_string(storage_connection(conn), f"{name}-poison")
        elif identity := identity_storage(setting, self.env) or \
                identity_storage(f"AzureWebJobs{setting}", self.env):
            # As the host does: a token from the connection's credential, no key.
            tokens = StorageTokens(credentials.new_credential(identity))
            self._tokens.append(tokens)
            client = credentials.queue_client(identity, name, tokens)
            poison = credentials.queue_client(identity, f"{name}-poison", tokens)
        else:
            raise ValueError(f"app setting {setting!r} (the queue's connection) is not set, nor "
                             f"{setting}__queueServiceUri / {setting}__accountName")
        self._clients += [client, poison]
        self.lines.append(f"{f.name}: queueTrigger [{name}]")
        return functools.partial(self._poll_queue, f, client, poison)

    async def _ensure_queue(self, client: QueueClient) -> None:
        if client.queue_name not in self._created:
            # Conflict: the identity case's client (storage.credentials) translates.
            with contextlib.suppress(ResourceExistsError, Conflict):
                await client.create_queue()
            self._created.add(client.queue_name)

    async def _poll_queue(self, f: _Fn, client: QueueClient, poison: QueueClient) -> None:
        opts, delay, busy = self._queues, MIN_POLL, set[asyncio.Task[Any]]()
        while not self._stopping.is_set():
            # As the host: the next batch is fetched once in-flight drops to
            # newBatchThreshold, so up to batchSize + newBatchThreshold run at once.
            if len(busy) > opts.new_batch_threshold:
                await asyncio.wait(busy, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                await self._ensure_queue(client)
                batch = [m async for m in client.receive_messages(
                    messages_per_page=opts.batch_size, max_messages=opts.batch_size,
                    visibility_timeout=self._lease)]
            except Exception as exc:  # storage down: keep backing off, like the host
                log.warning("%s: polling queue %s failed: %s", f.name, client.queue_name, exc)
                batch = []
            for message in batch:
                busy.add(task := self._track(f, self._process(f, client, poison, message)))
                task.add_done_callback(busy.discard)
            if batch:
                delay = MIN_POLL
            elif not await _wait(self._stopping, delay):
                delay = min(delay * 2, opts.max_polling_interval)

    async def _process(self, f: _Fn, client: QueueClient, poison: QueueClient,
                       m: StorageMessage) -> None:
        opts, count = self._queues, m.dequeue_count or 0
        try:
            if count > opts.max_dequeue_count:  # it failed too often before: poison, as the host
                return await self._to_poison(f, client, poison, m)
            try:
                body = (base64.b64decode(m.content or "", validate=True)
                        if opts.message_encoding == "base64" else (m.content or "").encode())
            except (binascii.Error, ValueError):
                log.error("%s: message %s is not valid base64", f.name, m.id)
                return await self._to_poison(f, client, poison, m)
            msg = QueueMessage(id=m.id, body=body, dequeue_count=count,
                               insertion_time=m.inserted_on, expiration_time=m.expires_on,
                               time_next_visible=m.next_visible_on, pop_receipt=m.pop_receipt)
            done = asyncio.Event()
            keeper = asyncio.create_task(self._keep_lease(client, m, done))
            try:
                await self._invoke(f, msg, f"New queue message detected on '{client.queue_name}'.")
                ok = True
            except Exception:  # logged by _invoke
                ok = False
            finally:
                done.set()
                await keeper  # not cancelled: it may be mid-update, changing the pop receipt
            if ok:
                await client.delete_message(m.id, m.pop_receipt)
            elif count >= opts.max_dequeue_count:
                await self._to_poison(f, client, poison, m)
            else:  # visible again after visibilityTimeout, for the next try
                await client.update_message(m.id, m.pop_receipt,
                                            visibility_timeout=round(opts.visibility_timeout))
        except Exception:
            log.exception("%s: could not settle queue message %s", f.name, m.id)

    async def _keep_lease(self, client: QueueClient, m: StorageMessage,
                          done: asyncio.Event) -> None:
        while not await _wait(done, self._lease / 2):
            try:
                renewed = await client.update_message(m.id, m.pop_receipt,
                                                      visibility_timeout=self._lease)
                m.pop_receipt = renewed.pop_receipt
                log.debug("Renewed the lease of queue message %s", m.id)
            except Exception as exc:
                log.warning("Could not renew the lease of queue message %s: %s", m.id, exc)

    async def _to_poison(self, f: _Fn, client: QueueClient, poison: QueueClient,
                         m: StorageMessage) -> None:
        log.warning("%s: moving message %s (dequeue count %s) to %s", f.name, m.id,
                    m.dequeue_count, poison.queue_name)
        await self._ensure_queue(poison)
        await poison.send_message(m.content)  # the raw text: same body, same encoding
        await client.delete_message(m.id, m.pop_receipt)

    # --- timers ---

    async def _run_timer(self, f: _Fn, sched: Schedule) -> None:
        last = None
        if f.trigger.get("runOnStartup"):
            last = await self._fire(f, sched, self._clock(), None)
        while True:
            due = next_occurrence(sched, self._clock())
            if await _wait(self._stopping, (due - self._clock()).total_seconds()):
                return
            # Awaiting the invocation before computing the next occurrence runs one
            # invocation at a time; occurrences missed meanwhile are skipped.
            last = await self._fire(f, sched, due, last)

    async def _fire(self, f: _Fn, sched: Schedule, due: datetime, last: datetime | None
                    ) -> datetime:
        now = self._clock()
        status = {"Last": last and last.isoformat(), "LastUpdated": now.isoformat(),
                  "Next": next_occurrence(sched, now).isoformat()}
        timer = TimerRequest(past_due=now - due > timedelta(seconds=1), schedule_status=status,
                             schedule={"AdjustForDST": True})
        task = self._track(f, self._invoke(f, timer, f"Timer fired at {now.isoformat()}"))
        # Shielded: stop() cancels this loop early but lets the invocation drain.
        with contextlib.suppress(Exception):  # logged by _invoke; the schedule goes on
            await asyncio.shield(task)
        return due


_ROUTE_PARAM = re.compile(r"\{(\*?)([A-Za-z_]\w*)(?::[^}?=]*)?(\??)(?:=[^}]*)?\}")


def _aiohttp_paths(prefix: str, route: str) -> list[str]:
    """Host route template → aiohttp paths: constraints and defaults are dropped,
    `{*rest}` takes the rest, and an optional `{x?}` adds the path without it."""
    path = "/" + "/".join(p for p in (prefix.strip("/"), route.strip("/")) if p)
    optional = any(m.group(3) for m in _ROUTE_PARAM.finditer(path))
    path = _ROUTE_PARAM.sub(lambda m: f"{{{m.group(2)}{':.*' if m.group(1) else ''}}}", path)
    return [path, path.rsplit("/", 1)[0] or "/"] if optional else [path]


def _to_response(result: Any) -> web.Response:
    if result is None:
        return web.Response(status=204)
    if isinstance(result, str | bytes):
        result = func.HttpResponse(result)
    if not isinstance(result, func.HttpResponse):
        log.error("An HTTP function returned %s, not func.HttpResponse", type(result).__name__)
        raise TypeError(type(result).__name__)
    headers = CIMultiDict(result.headers.items())
    if "Content-Type" not in headers:  # the worker adds the charset to text and JSON only
        text = result.mimetype.startswith("text/") or result.mimetype == "application/json"
        headers["Content-Type"] = result.mimetype + (f"; charset={result.charset}" if text else "")
    return web.Response(status=result.status_code, body=result.get_body(), headers=headers)


class StartFailed(Exception):
    """The app can't run; the message says why, in one line."""


async def _prepare_proactive() -> None:
    """For this project's app (function_app.py registers proactive.triggers):
    build its Runtime now, so that a configuration error stops the host at start
    with one line (in Azure the worker can't stop the host: the app answers 503
    and logs why instead), and create its tables and queues, as the deployment
    does in Azure."""
    if "proactive.triggers" not in sys.modules:
        return
    from proactive.errors import ConfigError
    from proactive.runtime import get_runtime
    from proactive_devtools.provision import provision

    try:
        rt = await get_runtime()
    except ConfigError as exc:
        raise StartFailed(f"configuration error: {exc}") from None
    await provision(rt.settings, rt.storage_tokens)


async def _serve(host: LocalHost) -> int:
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    try:
        await _prepare_proactive()
    except StartFailed as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_CONFIG_ERROR
    await host.start()
    print("\nFunctions:\n\n" + "\n".join(f"\t{line}" for line in host.lines) + "\n", flush=True)
    await stop.wait()
    log.info("Stopping the host")
    await host.stop()
    # Like the worker's process exit, minus the warnings about open sessions:
    # close proactive's shared clients if the app made them.
    runtime = sys.modules.get("proactive.runtime")
    if runtime is not None:
        await runtime.close_runtime()
    return 0


class _AccessLogger(AbstractAccessLogger):
    """aiohttp's access log line without the query string, which carries the
    function key (`?code=`) and ids: method, path, status, size, duration."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info('%s "%s %s" %s %s %.1fms', request.remote, request.method,
                         request.path, response.status, response.body_length, time * 1000)


def app_body_limit() -> int:
    """The largest body this project's app takes on any route (activities, API)."""
    from proactive.api.notifications import MAX_BODY
    from proactive.receiving.activities import MAX_ACTIVITY_BODY

    return max(MAX_BODY, MAX_ACTIVITY_BODY)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m proactive host",
                                     description="Run function_app.py like `func start`.")
    parser.add_argument("--app-dir", type=Path, default=Path.cwd(),
                        help="folder holding function_app.py and host.json (default: cwd)")
    parser.add_argument("--port", type=int, default=None, help="HTTP port (default 7071)")
    parser.add_argument("--settings", type=Path, default=None,
                        help="settings file (default: <app-dir>/local.settings.json, optional)")
    parser.add_argument("--lease", type=int, default=DEFAULT_LEASE,
                        help="seconds a received queue message stays invisible, renewed "
                             f"while its function runs (default {DEFAULT_LEASE}); a crashed "
                             "host's messages come back after this")
    parser.add_argument("--function-key", action="append", default=None, metavar="KEY",
                        help="a key the function-level HTTP routes accept (repeatable; default: "
                             f"the setting {KEYS_SETTING}; none: keys are not checked, as with "
                             "`func start`)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="[%(asctime)s] %(levelname)s %(name)s: %(message)s")
    # Libraries at WARNING (else a line per storage or HTTP request, with ids);
    # the access log is this host's own (_AccessLogger: no query string).
    logging.getLogger("aiohttp.access").setLevel(logging.INFO)
    quiet_libraries()
    path = args.settings or args.app_dir / "local.settings.json"
    if args.settings is not None and not path.exists():
        parser.error(f"{path} does not exist")
    settings = load_settings(path) if path.exists() else {}
    # As func does: settings reach the environment before function_app is
    # imported, and never override what the environment already has.
    for key, value in settings["Values"].items() if settings else ():
        os.environ.setdefault(key, value)
    port = args.port if args.port is not None else int(
        (settings.get("Host") or {}).get("LocalHttpPort", 7071))
    host = LocalHost(load_app(args.app_dir), host_json=args.app_dir / "host.json", port=port,
                     lease=args.lease, keys=args.function_key, max_body=app_body_limit())
    return asyncio.run(_serve(host))


if __name__ == "__main__":
    sys.exit(main())
