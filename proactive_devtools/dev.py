"""`python -m proactive dev`: Azurite + the function app + the Agents Playground.

The function app runs under `func start` where Azure Functions Core Tools are
installed, else under the built-in local host (`python -m proactive host`).
Everything stops on Ctrl-C (also on SIGTERM, or when the terminal closes).
Logs go to .dev/*.log.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import NoReturn

from proactive.config import Settings
from proactive.errors import ConfigError
from proactive_devtools import playground
from proactive_devtools.feed import DeliveryFeed
from proactive_devtools.processes import (
    REPO_ROOT,
    Azurite,
    start_azurite,
    stop_process,
    wait_for_port,
)

AZURITE_PORTS = {"blob": 10000, "queue": 10001, "table": 10002}
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Failed(Exception):
    """Something could not start; the message says what to do."""


def _listening(port: int) -> bool:
    try:
        wait_for_port(port, timeout=0.2)
    except TimeoutError:
        return False
    return True


def _need_free(port: int, what: str) -> None:
    if _listening(port):
        raise Failed(f"port {port} ({what}) is already in use: stop what runs there "
                     f"(an earlier 'dev'? see `ss -ltnp 'sport = :{port}'`) or pick "
                     f"another port")


def _interrupt(signum: int, frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C while a helper that owns a child process starts it, so the
    child is never left running; the signal is handled right after."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _ensure_settings() -> None:
    """What scripts/setup does, for `python -m proactive dev` run directly:
    the app and the CLI read local.settings.json (the queue name, local dev mode)."""
    settings = REPO_ROOT / "local.settings.json"
    if not settings.exists():
        shutil.copyfile(REPO_ROOT / "local.settings.example.json", settings)
        print("settings:   created local.settings.json from local.settings.example.json",
              flush=True)


def _provision() -> None:
    """Create the app's tables and queues in Azurite (in Azure the deployment does)."""
    from proactive_devtools.provision import provision

    values = json.loads((REPO_ROOT / "local.settings.json").read_text()).get("Values") or {}
    try:  # as the app reads them: the environment wins over local.settings.json
        settings = Settings.from_env({**values, **os.environ})
        asyncio.run(provision(settings))
    except ConfigError as exc:
        raise Failed(f"configuration error: {exc}") from exc
    except Exception as exc:
        raise Failed(f"could not create the tables and queues in Azurite ({exc})") from exc


def _last_error(log: Path, offset: int) -> str:
    """The app's own one-line reason (`error: ...`) if it wrote one since `offset`."""
    with contextlib.suppress(OSError):
        with open(log, "rb") as f:
            f.seek(offset)
            lines = f.read().decode("utf-8", "replace").splitlines()
        for line in reversed(lines):
            if line.startswith("error: "):
                return line.removeprefix("error: ")
    return ""


def _start_app(port: int, log: Path, use_func: bool,
               children: list[tuple[str, subprocess.Popen[bytes], Path]],
               connector: str = "") -> None:
    if use_func:
        args = ["func", "start", "--port", str(port)]
    else:
        args = [sys.executable, "-m", "proactive", "host", "--port", str(port)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if connector:  # the one local Connector the worker may send to: this Playground's
        env.setdefault("PROACTIVE_LOCAL_CONNECTOR", connector)
    offset = log.stat().st_size if log.exists() else 0
    with open(log, "ab") as out:
        proc = subprocess.Popen(args, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    children.append(("the app", proc, log))
    try:
        wait_for_port(port, proc=proc, timeout=120 if use_func else 30)
    except (RuntimeError, TimeoutError) as exc:
        reason = _last_error(log, offset) or str(exc)
        raise Failed(f"the app did not start ({reason}); see {_rel(log)}") from exc


def _playground_user(port: int) -> dict[str, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_internal/v1/config",
                                    timeout=5) as response:
            config = json.load(response)["config"]
        return {"aad": config["currentUser"]["aadObjectId"], "tenant": config["tenantId"],
                "name": config["currentUser"]["name"], "chat": config["personalChat"]["id"]}
    except (OSError, KeyError, ValueError):
        return {}


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _instructions(port: int, user: dict[str, str], key: str = "") -> str:
    """The demo commands, with a fresh key each run (a key already delivered in
    an earlier run would be a duplicate, and nothing would arrive)."""
    import uuid

    key = key or f"hello-{uuid.uuid4().hex[:6]}"
    py = ".venv/bin/python -m proactive"
    return (
        f"\nOpen http://localhost:{port} first: that installs the app in the personal "
        f"chat with {user['name']},\nand the first install brings a welcome card. "
        f"(No browser? The same install:\n"
        f"  curl -X POST http://localhost:{port}/_debug/conversation/{user['chat']}"
        f"/installation )\n"
        f"\nThen, in another terminal, in {REPO_ROOT}:\n"
        f"  {py} send --key {key} --to {user['aad']} --text 'Hello from **proactive**'\n"
        f"  {py} update --key {key} --text 'Edited in place'\n"
        f"  {py} delete --key {key}\n"
        f"  {py} status --key {key}\n"
        f"  {py} send --all-users --text 'To everyone who installed the app' --watch\n"
        f"Tenant: {user['tenant']} (the Playground's; the CLI's default for --all-users "
        f"here,\nrecorded in .dev/playground.json).\n"
        f"The Playground does not implement delete (it answers 501): status then shows\n"
        f'"deleteState": "failed", "deleteReason": "not-supported".'
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m proactive dev", description=__doc__)
    parser.add_argument("--port", type=int, default=7071, help="function app port")
    parser.add_argument("--playground-port", type=int, default=56150)
    parser.add_argument("--no-playground", action="store_true")
    parser.add_argument("--host", choices=("auto", "func", "builtin"), default="auto",
                        help="run the app under func (Core Tools) or the built-in host")
    args = parser.parse_args(argv)

    # Set explicitly: a shell that starts us in the background makes SIGINT
    # ignored, and the children live in their own sessions (a Ctrl-C at the
    # terminal reaches only us), so we must stop them ourselves.
    for sig in _STOP_SIGNALS:
        signal.signal(sig, _interrupt)
    logs = REPO_ROOT / ".dev"
    logs.mkdir(exist_ok=True)
    children: list[tuple[str, subprocess.Popen[bytes], Path]] = []
    azurite: Azurite | None = None
    azurite_log, azurite_log_from = logs / "azurite.log", 0
    try:
        _ensure_settings()
        _need_free(args.port, "the app")
        if not args.no_playground:
            _need_free(args.playground_port, "the Agents Playground")
        if all(_listening(AZURITE_PORTS[p]) for p in ("queue", "table")):
            print("azurite:    already running on 10001/10002, using it", flush=True)
        else:
            for name, port in AZURITE_PORTS.items():
                _need_free(port, f"Azurite {name}")
            azurite_log_from = azurite_log.stat().st_size if azurite_log.exists() else 0
            try:
                with _signals_deferred():
                    azurite = start_azurite(queue_port=AZURITE_PORTS["queue"],
                                            table_port=AZURITE_PORTS["table"],
                                            blob_port=AZURITE_PORTS["blob"],
                                            location=str(REPO_ROOT / ".azurite"),
                                            log=azurite_log)
            except (RuntimeError, TimeoutError) as exc:
                raise Failed(f"Azurite did not start ({exc}); see .dev/azurite.log") from exc
            children.append(("Azurite", azurite.proc, azurite_log))
            print("azurite:    queue 127.0.0.1:10001, table 127.0.0.1:10002 "
                  "(data in .azurite/; log .dev/azurite.log)", flush=True)
        _provision()
        use_func = args.host == "func" or (args.host == "auto" and bool(shutil.which("func")))
        _start_app(args.port, logs / "app.log", use_func, children,
                   "" if args.no_playground else f"http://localhost:{args.playground_port}")
        endpoint = f"http://127.0.0.1:{args.port}/api/messages"
        print(f"app:        {endpoint} ({'func start' if use_func else 'built-in host'}; "
              f"log .dev/app.log)", flush=True)
        print(f"page:       http://127.0.0.1:{args.port}/api/ui/ (sends, reach)", flush=True)
        if not args.no_playground:
            try:
                proc = playground.start(endpoint=endpoint, port=args.playground_port,
                                        workdir=logs, log=logs / "playground.log")
            except (RuntimeError, TimeoutError) as exc:
                raise Failed(f"the Agents Playground did not start ({exc})") from exc
            children.append(("the Agents Playground", proc, logs / "playground.log"))
            print(f"playground: http://localhost:{args.playground_port} "
                  f"(log .dev/playground.log)", flush=True)
            user = _playground_user(args.playground_port)
            if user:
                from proactive.cli.localdev import record

                # The CLI's default tenant for a local --all-users send.
                record(user, logs / "playground.json")
                print(_instructions(args.playground_port, user), flush=True)
        print("\nLogs in .dev/: azurite.log, app.log, playground.log. "
              "Ctrl-C stops everything. Deliveries as they happen:", flush=True)
        return _supervise(children, _feed())
    except Failed as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        # A second Ctrl-C must not cut the cleanup short.
        for sig in _STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        if children:
            _say("\nstopping ...")
        for _, child, _ in reversed(children):
            if azurite is None or child is not azurite.proc:
                stop_process(child)
        if azurite is not None:
            _stop_azurite(azurite, azurite_log, azurite_log_from)
        if children:
            _say("stopped.")


def _supervise(children: list[tuple[str, subprocess.Popen[bytes], Path]],
               feed: DeliveryFeed | None, *, interval: float = 0.5) -> int:
    """Print the deliveries as they happen until a child exits; then say which
    and where its log is, and return 1 (the caller stops the rest). The
    children are looked at before the feed reads storage: with Azurite gone,
    that read can only fail (and the feed keeps quiet about it)."""
    while True:
        for name, child, log in children:
            if child.poll() is not None:
                print(f"\n{name} exited ({child.returncode}); see {_rel(log)}",
                      file=sys.stderr, flush=True)
                return 1
        for text in feed.poll() if feed is not None else ():
            print(text, flush=True)
        time.sleep(interval)


def _feed() -> DeliveryFeed | None:
    """The live delivery lines, from the local deliveries table."""
    from azure.data.tables import TableClient

    from proactive.runtime import DELIVERIES_TABLE

    try:
        values = json.loads((REPO_ROOT / "local.settings.json").read_text()).get("Values") or {}
        settings = Settings.from_env({**values, **os.environ})
        # No retries: a look that fails is skipped (the next one is 0.5 s
        # later), and Azurite gone is said at once instead of after retrying.
        table = TableClient.from_connection_string(
            settings.storage_connection, settings.table_name(DELIVERIES_TABLE), retry_total=0)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"(no live delivery lines: {exc})", file=sys.stderr, flush=True)
        return None
    return DeliveryFeed(table)


def _stop_azurite(azurite: Azurite, log: Path, offset: int) -> None:
    """SIGINT makes Azurite close its three services (writing its data) and say
    so; with telemetry on (its default) the process then lingers for seconds.
    Once all three say closed, the next signal ends it without loss."""
    proc = azurite.proc
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            with open(log, "rb") as f:
                f.seek(offset)
                if f.read().count(b"service successfully closed") >= len(AZURITE_PORTS):
                    break
            time.sleep(0.05)
    azurite.stop()


def _say(text: str) -> None:
    """Print while stopping, when the terminal may be gone (SIGHUP)."""
    with contextlib.suppress(OSError, ValueError):
        print(text, file=sys.stderr, flush=True)
