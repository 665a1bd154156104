"""`python -m proactive dev`: Azurite + the function app + the Agents Playground.

The function app runs under `func start` where Azure Functions Core Tools are
installed, else under the built-in local host (`python -m proactive host`).
Everything stops on Ctrl-C. Logs go to .dev/*.log.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from .processes import (
    REPO_ROOT,
    Azurite,
    start_azurite,
    start_playground,
    stop_process,
    wait_for_port,
)

AZURITE_PORTS = {"blob": 10000, "queue": 10001, "table": 10002}


def _listening(port: int) -> bool:
    try:
        wait_for_port(port, timeout=0.2)
    except TimeoutError:
        return False
    return True


def _start_app(port: int, log: Path, use_func: bool) -> subprocess.Popen[bytes]:
    if use_func:
        args = ["func", "start", "--port", str(port)]
    else:
        args = [sys.executable, "-m", "proactive", "host", "--port", str(port)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    out = open(log, "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(args, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
                            env=env, start_new_session=True)
    wait_for_port(port, proc=proc, timeout=120 if use_func else 30)
    return proc


def _playground_user(port: int) -> dict[str, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_internal/v1/config",
                                    timeout=5) as response:
            config = json.load(response)["config"]
        return {"aad": config["currentUser"]["aadObjectId"], "tenant": config["tenantId"],
                "name": config["currentUser"]["name"]}
    except (OSError, KeyError, ValueError):
        return {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m proactive dev", description=__doc__)
    parser.add_argument("--port", type=int, default=7071, help="function app port")
    parser.add_argument("--playground-port", type=int, default=56150)
    parser.add_argument("--no-playground", action="store_true")
    parser.add_argument("--host", choices=("auto", "func", "builtin"), default="auto",
                        help="run the app under func (Core Tools) or the built-in host")
    args = parser.parse_args(argv)

    logs = REPO_ROOT / ".dev"
    logs.mkdir(exist_ok=True)
    children: list[subprocess.Popen[bytes]] = []
    azurite: Azurite | None = None
    try:
        if all(_listening(p) for p in (AZURITE_PORTS["queue"], AZURITE_PORTS["table"])):
            print("azurite:    already running on 10001/10002, using it")
        else:
            azurite = start_azurite(queue_port=AZURITE_PORTS["queue"],
                                    table_port=AZURITE_PORTS["table"],
                                    blob_port=AZURITE_PORTS["blob"],
                                    location=str(REPO_ROOT / ".azurite"),
                                    log=logs / "azurite.log")
            print("azurite:    queue 127.0.0.1:10001, table 127.0.0.1:10002 (data in .azurite/)")
        use_func = args.host == "func" or (args.host == "auto" and shutil.which("func"))
        children.append(_start_app(args.port, logs / "app.log", bool(use_func)))
        endpoint = f"http://127.0.0.1:{args.port}/api/messages"
        print(f"app:        {endpoint} ({'func start' if use_func else 'built-in host'}; "
              f"log .dev/app.log)")
        if not args.no_playground:
            children.append(start_playground(endpoint=endpoint, port=args.playground_port,
                                             workdir=logs, log=logs / "playground.log"))
            user = _playground_user(args.playground_port)
            print(f"playground: http://localhost:{args.playground_port}  (open it, the app "
                  f"installs itself in the chat and sends a welcome)")
            if user:
                print(f"\nTry, in another terminal (as {user['name']}):\n"
                      f"  .venv/bin/python -m proactive send --key hello-1 "
                      f"--to {user['aad']} --text 'Hello from **proactive**'\n"
                      f"  .venv/bin/python -m proactive update --key hello-1 --text 'Edited'\n"
                      f"  .venv/bin/python -m proactive delete --key hello-1\n"
                      f"  .venv/bin/python -m proactive status --key hello-1")
        print("\nCtrl-C stops everything.")
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        print("a process exited; see .dev/*.log", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for child in reversed(children):
            stop_process(child)
        if azurite is not None:
            azurite.stop()
