"""Play the Teams user against the app's /api/messages: make a recipient
"read" their chat up to a message, or press a card's acknowledgement button,
by posting the activity Teams would post. Dev and tests only.

    python -m proactive_devtools user read  --message ACTIVITY_ID [options]
    python -m proactive_devtools user click --key KEY [options]

The shapes follow Microsoft's documents:

- read receipt (Microsoft Learn, "Messages in bot conversations" -> "Read
  receipts"; botbuilder-dotnet `OnTeamsReadReceiptAsync`): an `event` named
  `application/vnd.microsoft.readReceipt`, `value.lastReadMessageId`, in the
  user's personal conversation;
- button press (Microsoft Learn, "Universal Actions for Adaptive Cards": the
  `adaptiveCard/action` invoke): an `invoke` named `adaptiveCard/action` with
  `value.action` {type `Action.Execute`, verb, data} and `value.trigger`
  `manual`; the client's zone in `localTimezone` and a `clientInfo` entity.

Authentication: with a fake AAD (proactive_devtools/fake_aad.py) the activity
carries a Bot Connector-style token signed by it, as the app verifies every
activity; without one it is posted tokenless, which only an app in local
development mode accepts, and only from a loopback serviceUrl (as under
`./scripts/dev`). Defaults (user, tenant, chat, bot, serviceUrl) come from the
running Agents Playground's configuration, as `./scripts/dev` starts it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aiohttp

from proactive.delivering.ack import ACK_VERB, ack_action
from proactive.storage.reads import RECEIPT_EVENT

if TYPE_CHECKING:
    from proactive_devtools.fake_aad import FakeAAD


@dataclass(frozen=True)
class User:
    """Who plays, and in which personal chat with which bot."""

    aad_id: str
    tenant_id: str
    conversation_id: str
    bot_id: str
    service_url: str
    user_id: str = ""
    timezone: str = ""

    def _activity(self, kind: str, **fields: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": kind, "id": f"f:{uuid.uuid4().hex}", "channelId": "msteams",
            "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "serviceUrl": self.service_url,
            "from": {"id": self.user_id or f"29:{self.aad_id}", "aadObjectId": self.aad_id},
            "recipient": {"id": self.bot_id},
            "conversation": {"id": self.conversation_id, "conversationType": "personal",
                             "tenantId": self.tenant_id},
            "channelData": {"tenant": {"id": self.tenant_id}},
        }
        if self.timezone:
            body["localTimezone"] = self.timezone
            body["entities"] = [{"type": "clientInfo", "timezone": self.timezone}]
        body.update(fields)
        return body

    def read_receipt(self, last_read_message_id: str) -> dict[str, Any]:
        return self._activity("event", name=RECEIPT_EVENT,
                              value={"lastReadMessageId": last_read_message_id})

    def ack_press(self, key: str) -> dict[str, Any]:
        return self._activity("invoke", name="adaptiveCard/action",
                              value={"action": {"type": "Action.Execute", "verb": ACK_VERB,
                                                "data": ack_action(key, "")["data"]},
                                     "trigger": "manual"})


async def post(endpoint: str, activity: dict[str, Any], *, aad: FakeAAD | None = None,
               app_id: str = "") -> tuple[int, str]:
    """POST the activity to the app's /api/messages; (status, body)."""
    headers = {"Content-Type": "application/json"}
    if aad is not None:
        token = aad.mint(aad.claims(app_id=app_id, service_url=activity["serviceUrl"]))
        headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as session, session.post(
            endpoint, data=json.dumps(activity), headers=headers) as resp:
        return resp.status, await resp.text()


def _playground_defaults(port: int) -> dict[str, str]:
    """The Playground's user, tenant, personal chat and bot, and the serviceUrl
    its activities carry; {} when none is running there."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_internal/v1/config",
                                    timeout=5) as response:
            config = json.load(response)["config"]
        return {"aad": config["currentUser"]["aadObjectId"], "tenant": config["tenantId"],
                "chat": config["personalChat"]["id"], "bot": config["bot"]["id"],
                "user_id": config["currentUser"]["id"],
                "service_url": f"http://localhost:{port}/_connector"}
    except (OSError, KeyError, ValueError, TypeError):
        return {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m proactive_devtools user",
                                     description="play the Teams user against /api/messages")
    parser.add_argument("action", choices=("read", "click"))
    parser.add_argument("--message", help="read: the last message read (its activity id)")
    parser.add_argument("--key", help="click: the key of the send whose button is pressed")
    parser.add_argument("--endpoint", default="http://localhost:7071/api/messages")
    parser.add_argument("--playground-port", type=int, default=56150,
                        help="read the defaults below from this running Playground")
    for name in ("user", "tenant", "conversation", "bot", "service-url", "timezone"):
        parser.add_argument(f"--{name}", default="")
    args = parser.parse_args(argv)
    if (args.action == "read") != bool(args.message) or (args.action == "click") != bool(args.key):
        print("read needs --message, click needs --key", file=sys.stderr)
        return 2
    found = _playground_defaults(args.playground_port)
    user = User(aad_id=args.user or found.get("aad", ""),
                tenant_id=args.tenant or found.get("tenant", ""),
                conversation_id=args.conversation or found.get("chat", ""),
                bot_id=args.bot or found.get("bot", ""),
                service_url=args.service_url or found.get("service_url", ""),
                user_id=found.get("user_id", ""), timezone=args.timezone)
    missing = [name for name in ("aad_id", "tenant_id", "conversation_id", "bot_id",
                                 "service_url") if not getattr(user, name)]
    if missing:
        print(f"no running Playground to read them from: give --{missing[0].split('_')[0]} "
              f"and the others ({', '.join(missing)})", file=sys.stderr)
        return 2
    activity = user.read_receipt(args.message) if args.action == "read" \
        else user.ack_press(args.key)
    try:
        status, body = asyncio.run(post(args.endpoint, activity))
    except aiohttp.ClientError as exc:
        print(f"could not reach {args.endpoint}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"status": status, "answer": body}, ensure_ascii=False))
    return 0 if status == 200 else 1
