"""Our Connector client beside the SDKs a Python bot would otherwise use, in
the same run, against the same local Connector (the emulator, own process):

- bare aiohttp: the calibration (a request with nothing around it);
- proactive: `ConnectorClient.send` as `Runtime.create` builds it;
- botbuilder-python: `botframework.connector.aio.ConnectorClient`
  `.conversations.send_to_conversation` (Bot Framework SDK v4);
- Teams SDK for Python: `microsoft_teams.api.ApiClient`
  `.conversations.activities(id).create` (package microsoft-teams-apps).

The two SDKs are installed into a venv of their own, cached under
.dev/peers-venv (not the project's requirements; pinned below); the first
run creates it. Each variant runs in a child process of its interpreter:
`--warmup` sends, then `--sends` at concurrency 16, CPU per send from
`time.process_time()`. Rounds are interleaved (every variant once per
round); each figure is the median and range, and a multiple of bare aiohttp.

    .venv/bin/python -m benchmarks.peers [--rounds 3] [--sends 1000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from benchmarks._common import (
    PYTHON,
    REPO,
    emulator_process,
    figure_rounds,
    header,
    machine_line,
    median,
    note,
)

VENV = REPO / ".dev" / "peers-venv"
# Pinned so runs compare; bump deliberately.
# botbuilder's async Connector client runs on aiohttp without depending on it.
PEERS = ("botbuilder-core==4.17.1", "microsoft-teams-apps==2.1.1", "aiohttp==3.14.5")

_DRIVER = r"""
import asyncio, json, sys, time
url, sends, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
CONV = "a:bench-peers"
TEXT = "Build **4711** is green: all 1,234 tests passed"

async def main():
    send, close = await setup(url)
    async def drive(count):
        left = [count]
        async def worker():
            while left[0] > 0:
                left[0] -= 1
                await send()
        await asyncio.gather(*(worker() for _ in range(16)))
    await drive(warmup)
    cpu0 = time.process_time()
    await drive(sends)
    cpu = time.process_time() - cpu0
    await close()
    print(json.dumps({"cpu_us": cpu / sends * 1e6}))
"""

SETUPS = {
    "bare aiohttp (calibration)": (False, r"""
import aiohttp
async def setup(url):
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
    target = url.rstrip("/") + f"/v3/conversations/{CONV}/activities"
    body = json.dumps({"type": "message", "text": TEXT}).encode()
    async def send():
        async with session.post(target, data=body,
                                headers={"Content-Type": "application/json"}) as r:
            json.loads(await r.read())
    return send, session.close
"""),
    "proactive ConnectorClient": (False, r"""
from proactive.config import Settings
from proactive.runtime import connector_session
from proactive.teams.clouds import resolve_cloud
from proactive.teams.connector import ConnectorClient
import httpx
async def setup(url):
    session, http = connector_session(), httpx.AsyncClient()
    client = ConnectorClient(http, None, resolve_cloud(Settings(local_dev=True)),
                             local_dev=True, session=session, local_connectors=[url])
    async def send():
        await client.send(url, CONV, {"type": "message", "text": TEXT})
    async def close():
        await session.close(); await http.aclose()
    return send, close
"""),
    "botbuilder-python": (True, r"""
from botbuilder.schema import Activity
from botframework.connector.aio import ConnectorClient
from botframework.connector.auth import MicrosoftAppCredentials
async def setup(url):
    client = ConnectorClient(MicrosoftAppCredentials("", ""), base_url=url)  # no token: loopback
    async def send():
        await client.conversations.send_to_conversation(
            CONV, Activity(type="message", text=TEXT))
    async def close():
        pass  # the process ends here
    return send, close
"""),
    "Teams SDK for Python": (True, r"""
from microsoft_teams.api import ApiClient, MessageActivityInput
async def setup(url):
    client = ApiClient(url)
    async def send():
        await client.conversations.activities(CONV).create(MessageActivityInput(text=TEXT))
    async def close():
        pass
    return send, close
"""),
}


def peers_python() -> Path:
    """The cached venv's interpreter, made (and the peers installed) if missing."""
    python = VENV / "bin" / "python"
    stamp = VENV / "installed.txt"
    if not python.exists() or not stamp.exists() or stamp.read_text() != "\n".join(PEERS):
        note(f"installing {', '.join(PEERS)} into {VENV} (once) ...")
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PEERS], check=True,
                       timeout=900, stderr=subprocess.DEVNULL)
        stamp.write_text("\n".join(PEERS))
    return python


def measure(python: str, setup: str, url: str, sends: int, warmup: int) -> float:
    code = _DRIVER.replace("async def main", setup + "\nasync def main") + "\nasyncio.run(main())\n"
    out = subprocess.run([python, "-c", code, url, str(sends), str(warmup)], cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return float(json.loads(out.stdout.strip().splitlines()[-1])["cpu_us"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sends", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=100)
    args = parser.parse_args(argv)
    header(f"Peers: CPU per Connector send, {args.sends:,} sends at concurrency 16, "
           f"{args.rounds} interleaved rounds")
    note(machine_line())
    peer_python = str(peers_python())
    results: dict[str, list[float]] = {name: [] for name in SETUPS}
    failed: dict[str, str] = {}
    with emulator_process() as emulator:
        for _ in range(max(1, args.rounds)):
            for name, (peer, setup) in SETUPS.items():
                if name in failed:
                    continue
                try:
                    results[name].append(measure(peer_python if peer else PYTHON, setup,
                                                 emulator.url, args.sends, args.warmup))
                except RuntimeError as exc:
                    failed[name] = str(exc).strip().splitlines()[-1] if str(exc) else "failed"
    cal = median(results["bare aiohttp (calibration)"])
    for name, values in results.items():
        if values:
            figure_rounds(name, values, "µs/send", fmt="{:,.0f}", calibration_us=cal)
        else:
            note(f"{name}: could not run: {failed.get(name)}")
    ours = median(results["proactive ConnectorClient"])
    others = {n: median(v) for n, v in results.items() if v and n in
              ("botbuilder-python", "Teams SDK for Python")}
    if others and ours:
        best = min(others, key=lambda n: others[n])
        note(f"proactive ÷ the best peer ({best}): {ours / others[best]:.2f}  "
             f"(each peer ÷ proactive: " + ", ".join(
                 f"{n} {v / ours:.1f}×" for n, v in others.items()) + ")")
    note(machine_line())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
