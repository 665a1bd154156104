"""The Microsoft 365 Agents Playground without a browser: start it, and a small
client for the HTTP and websocket API its web page uses. Dev and tests only.

- `GET /_internal/v1/config`: tenant, bot, current user, personal chat id,
  group chats, teams and channels.
- `POST /_debug/conversation/{id}/installation`: what the page does once per
  conversation when it opens (installationUpdate add + conversationUpdate).
- `ws://…/_ws/log/stream`: one JSON entry per activity in either direction.
  Entries for what the bot sent have `"from": "User Application"`, the request
  body (`request.body`) and the Connector's answer (`response.statusCode`,
  `response.body`); the HTTP method is not in them (an update is a body with
  the activity's `id`, answered 200; a delete an empty body, answered 501).

Quirks of @microsoft/m365agentsplayground 0.2.28 handled here:

- The log stream does not replay the log: entries appended while no client is
  connected are buffered and handed to the next client only, then dropped; with
  a client connected they are only broadcast. So connect one `LogStream` before
  acting and keep it open.
- `-p PORT` silently falls back to a random port when PORT is taken (only
  "Listening on N" says so), and a port check would then find the other
  process: `start` reads the announced port and refuses a mismatch.
- It tries to open a browser (dies without `xdg-open`) and sends telemetry
  unless `--disable-telemetry`; its own log goes to `./devTools/` of its cwd.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from proactive_devtools.processes import no_browser_path, node_tool, stop_process

BOT = "User Application"  # the Playground's name for the bot in its log
_LISTENING = re.compile(rb"Listening on (\d+)")


def start(*, endpoint: str, port: int, workdir: Path, log: Path | None = None,
          timeout: float = 60.0) -> subprocess.Popen[bytes]:
    """Start the Playground wired to `endpoint` (the bot's /api/messages) on
    `port`, without a browser or telemetry. Output goes to `log` (default
    workdir/playground.log). Raises if it does not listen on `port` itself."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = log or workdir / "playground.log"
    offset = log.stat().st_size if log.exists() else 0
    env = dict(os.environ, PATH=no_browser_path(workdir), TEAMSAPPTESTER_BROWSER="none",
               M365_AGENTS_PLAYGROUND_LOGFILE=str(workdir / "m365agentsplayground.log"))
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [node_tool("agentsplayground"), "-e", endpoint, "-c", "msteams", "-p", str(port),
             "--disable-telemetry"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            cwd=workdir, start_new_session=True,
        )
    try:
        actual = _announced_port(proc, log, offset, timeout)
        if actual != port:
            raise RuntimeError(f"port {port} is taken: the Playground moved to {actual}")
    except BaseException:  # Ctrl-C included: don't leave it running
        stop_process(proc)
        raise
    return proc


def _announced_port(proc: subprocess.Popen[bytes], log: Path, offset: int,
                    timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(log, "rb") as f:
            f.seek(offset)
            found = _LISTENING.search(f.read())
        if found:
            return int(found.group(1))
        if proc.poll() is not None:
            raise RuntimeError(f"the Playground exited with {proc.returncode}; see {log}")
        time.sleep(0.05)
    raise TimeoutError(f"the Playground did not start within {timeout}s; see {log}")


class Playground:
    """The Playground's HTTP API on 127.0.0.1:`port`."""

    def __init__(self, port: int, session: aiohttp.ClientSession) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.port = port
        self.session = session

    async def config(self) -> dict[str, Any]:
        """The simulated tenant: `tenantId`, `bot`, `currentUser`, `personalChat`, …"""
        async with self.session.get(f"{self.base}/_internal/v1/config") as resp:
            resp.raise_for_status()
            data: dict[str, Any] = (await resp.json())["config"]
            return data

    async def install(self, conversation_id: str) -> None:
        """Install the bot in a conversation, as opening the page does."""
        async with self.session.post(
                f"{self.base}/_debug/conversation/{conversation_id}/installation",
                json={}) as resp:
            resp.raise_for_status()

    async def say(self, conversation_id: str, user_id: str, text: str) -> None:
        """The user types `text` in the conversation (what the page's compose box does)."""
        async with self.session.post(
                f"{self.base}/_conversation/v1/conversations/{conversation_id}/messages",
                json={"from": {"id": user_id}, "text": text, "textFormat": "plain"}) as resp:
            resp.raise_for_status()

    async def card_action(self, conversation_id: str, user_id: str, message_id: str,
                          action: dict[str, Any]) -> dict[str, Any]:
        """The user presses an Action.Execute button on the bot's message
        `message_id`: the Playground sends an `adaptiveCard/action` invoke to the
        bot, puts the card of its answer in place of the message's, and returns
        the answer."""
        async with self.session.post(f"{self.base}/_conversation/v1/invoke", json={
                "name": "adaptiveCard/action", "value": {"action": action},
                "from": {"id": user_id}, "conversation": {"id": conversation_id},
                "replyToId": message_id}) as resp:
            resp.raise_for_status()
            answer: dict[str, Any] = await resp.json()
            return answer

    def log_stream(self) -> LogStream:
        return LogStream(f"ws://127.0.0.1:{self.port}/_ws/log/stream", self.session)


class LogStream:
    """Collects the Playground's log entries (the `log` objects) from the moment
    it connects, in the background: `async with playground.log_stream() as log:`."""

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self.session = session
        self.entries: list[dict[str, Any]] = []
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LogStream:
        self._ws = await self.session.ws_connect(self.url, heartbeat=20)
        self._reader = asyncio.create_task(self._read(self._ws), name="playground log")
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            with contextlib.suppress(ValueError):
                data = json.loads(message.data)
                if isinstance(data, dict) and isinstance(data.get("log"), dict):
                    self.entries.append(data["log"])

    @property
    def connected(self) -> bool:
        return self._reader is not None and not self._reader.done()

    def from_bot(self) -> list[dict[str, Any]]:
        """The calls the bot made to the Playground's Connector."""
        return [e for e in self.entries if e.get("from") == BOT]

    async def wait_for(self, match: Callable[[dict[str, Any]], Any], *,
                       timeout: float = 15.0) -> dict[str, Any]:
        """The first entry from the bot for which `match` is true, waiting for it."""
        deadline = time.monotonic() + timeout
        while True:
            for entry in self.from_bot():
                if match(entry):
                    return entry
            if not self.connected:
                raise ConnectionError("the Playground's log stream closed")
            if time.monotonic() > deadline:
                seen = [_brief(e) for e in self.from_bot()]
                raise TimeoutError(f"no matching entry within {timeout}s; from the bot: {seen}")
            await asyncio.sleep(0.05)


def body(entry: dict[str, Any]) -> dict[str, Any]:
    """The activity the bot sent (the request body) of a log entry."""
    value = (entry.get("request") or {}).get("body")
    return value if isinstance(value, dict) else {}


def status(entry: dict[str, Any]) -> int:
    """The status the Playground's Connector answered."""
    return int((entry.get("response") or {}).get("statusCode") or 0)


def _brief(entry: dict[str, Any]) -> str:
    text = body(entry).get("text") or entry.get("displayText") or ""
    return f"{status(entry)} {text!s:.40}"
