"""Acknowledgements (issue 21, README "Read, acknowledged, reminded"): the
`ack` button on a send, the click as Teams posts it (an `invoke` named
`adaptiveCard/action`) through POST /api/messages, the refreshed card, the
counts; against real Table Storage (Azurite) and the Connector emulator."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from proactive.api.sends import status
from proactive.contract import InvalidMessage, parse_message
from proactive.delivering.ack import ACK_VERB, ack_action
from proactive.delivering.render import activity as rendered
from proactive.receiving.activities import parse_activity
from proactive.receiving.endpoint import handle_activity
from proactive.reporting.reports import send_report
from proactive.runtime import Runtime
from proactive.worker import process
from proactive_devtools.emulator import ConnectorEmulator
from tests.activities_data import activity, install
from tests.test_read_receipts import drain, rows_of

USERS = [f"6f3a8c1e-0000-4000-8000-{n:012d}" for n in range(200)]
CARD = "application/vnd.microsoft.card.adaptive"


def click(aad: str, conversation: str, key: str, *, service_url: str,
          data: dict[str, Any] | None = None) -> bytes:
    # An Action.Execute press as Teams posts it (Microsoft Learn, Universal
    # Actions for Adaptive Cards: the adaptiveCard/action invoke request):
    # value.action {type, verb, data} with the button's data, value.trigger
    # "manual"; the client's zone in localTimezone and a clientInfo entity.
    body = activity("invoke", aad=aad, conversation=conversation, service_url=service_url,
                    name="adaptiveCard/action", localTimezone="Europe/Paris",
                    entities=[{"type": "clientInfo", "timezone": "Europe/Paris"}],
                    value={"action": {"type": "Action.Execute", "verb": ACK_VERB,
                                      "data": ack_action(key, "")["data"] if data is None
                                      else data}, "trigger": "manual"})
    return json.dumps(body).encode()


def texts(card: dict[str, Any]) -> list[str]:
    return [block.get("text", "") for block in card.get("body", [])]


def ack_buttons(card: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for a in card.get("actions", []) if a.get("verb") == ACK_VERB]


def test_the_contract_takes_true_or_a_label_and_refuses_anything_else() -> None:
    base = {"version": 1, "op": "send", "key": "k", "to": {"user": USERS[0]}, "text": "hi"}
    assert parse_message(json.dumps({**base, "ack": True})).content.ack == "Got it"  # type: ignore[union-attr]
    labelled = parse_message(json.dumps({**base, "ack": {"label": "Confirm"}}))
    assert labelled.content is not None and labelled.content.ack == "Confirm"
    assert parse_message(json.dumps(labelled.to_json())).content == labelled.content
    activity_ = rendered(labelled.content, "k")
    assert "text" not in activity_  # plain text + ack: a card carrying the text
    card = activity_["attachments"][0]["content"]
    # Not `key`: the Agents Playground's renderer can't press a button whose data has
    # a field of that name (README "Trying it locally: playing the user").
    assert texts(card) == ["hi"] and ack_buttons(card)[0]["data"] == {"sendKey": "k"}
    assert ack_buttons(card)[0]["title"] == "Confirm"
    assert rendered(parse_message(json.dumps(base)).content, "k")["text"] == "hi"  # type: ignore[arg-type]
    for bad in ("yes", 1, {"label": ""}, {"label": "x" * 41}, {"text": "x"}, None):
        with pytest.raises(InvalidMessage):
            parse_message(json.dumps({**base, "ack": bad}))
    with pytest.raises(InvalidMessage):
        parse_message(json.dumps({"version": 1, "op": "cancel", "key": "k", "ack": True}))


async def test_clicks_count_once_for_their_own_recipient_and_forgeries_change_nothing(
        runtime: Runtime, emulator: ConnectorEmulator) -> None:
    url = emulator.url
    for n, aad in enumerate(USERS):
        await runtime.references.record(parse_activity(install(
            service_url=url, aad=aad, conversation=f"a:1conv{n}")))
    await process(runtime, json.dumps({"version": 1, "op": "send", "key": "drill",
                                       "to": {"users": USERS}, "text": "Fire drill at 3",
                                       "ack": True}), message_id="m")
    await drain(runtime)
    assert len(emulator.deliveries) == 200
    sent = emulator.deliveries[0].attachments[0]["content"]
    assert ack_buttons(sent) and texts(sent) == ["Fire drill at 3"]

    async def press(body: bytes) -> dict[str, Any]:
        reply = await handle_activity(runtime, {}, body)
        assert reply.status == 200 and reply.content_type == "application/json"
        answer = json.loads(reply.body)
        assert answer["statusCode"] == 200 and answer["type"] == CARD
        return answer["value"]

    before = datetime.now(ZoneInfo("Europe/Paris")).strftime("%H:%M")
    for n in range(40):
        card = await press(click(USERS[n], f"a:1conv{n}", "drill", service_url=url))
        assert not ack_buttons(card)
        assert "Fire drill at 3" in texts(card)
        after = datetime.now(ZoneInfo("Europe/Paris")).strftime("%H:%M")
        assert texts(card)[-1] in (f"✅ Acknowledged at {before}", f"✅ Acknowledged at {after}")
    first = {row["conversationId"]: row["ackedAt"]
             for row in await rows_of(send_report(runtime, "drill", "csv"))}
    # A repeat is answered with the same card, not recounted or re-timed.
    again = await press(click(USERS[0], "a:1conv0", "drill", service_url=url))
    assert not ack_buttons(again)
    # Forged: someone else's chat, a key never sent to them, a made-up key, no key.
    forged = [click(USERS[50], "a:1conv51", "drill", service_url=url),
              click(USERS[51], "a:1conv50", "drill", service_url=url),
              click(USERS[52], "a:1conv52", "no-such-key", service_url=url)]
    nokey = json.loads(click(USERS[53], "a:1conv53", "drill", service_url=url))
    nokey["value"]["action"]["data"] = {}
    for body in [*forged, json.dumps(nokey).encode()]:
        card = await press(body)
        assert texts(card)[0].startswith("This acknowledgement could not be recorded")
    # A card sent before the button's data field was renamed carries {"key": ...}:
    # its press still counts.
    legacy = await press(click(USERS[40], "a:1conv40", "drill", service_url=url,
                               data={"key": "drill"}))
    assert not ack_buttons(legacy) and "Fire drill at 3" in texts(legacy)

    rows = {row["conversationId"]: row
            for row in await rows_of(send_report(runtime, "drill", "csv"))}
    assert {c for c, row in rows.items() if row["ackedAt"]} == {f"a:1conv{n}" for n in range(41)}
    assert rows["a:1conv0"]["ackedAt"] == first["a:1conv0"]
    view = json.loads((await status(runtime, "drill", base_url="http://x/")).body)
    assert view["counts"]["acked"] == 41 and view["counts"]["sent"] == 200

    # An update keeps each recipient's state: the button, or when they acknowledged.
    await process(runtime, json.dumps({"version": 1, "op": "update", "key": "drill",
                                       "text": "Fire drill moved to 4"}), message_id="u")
    shown = {d.conversation_id: d.attachments[0]["content"] for d in emulator.deliveries}
    assert texts(shown["a:1conv0"])[0] == "Fire drill moved to 4"
    assert not ack_buttons(shown["a:1conv0"])
    assert texts(shown["a:1conv0"])[-1].startswith("✅ Acknowledged at ")
    assert ack_buttons(shown["a:1conv45"]) and len(texts(shown["a:1conv45"])) == 1


def test_the_cli_asks_for_an_acknowledgement_with_ack() -> None:
    from proactive.cli import _parser, build_message

    def built(*argv: str) -> dict[str, Any]:
        return build_message(_parser().parse_args(["send", "--to", USERS[0], "--text", "hi",
                                                   *argv])).to_json()

    assert built("--ack")["ack"] == {"label": "Got it"}  # the default label, written out
    assert built("--ack", "Confirm")["ack"] == {"label": "Confirm"}
    assert "ack" not in built()


def test_a_notification_with_ack_keeps_its_opt_out_and_gets_the_button_first() -> None:
    message = parse_message(json.dumps({
        "version": 1, "op": "send", "key": "n1", "to": {"user": USERS[0]}, "topic": "hr",
        "ack": True, "notification": {"title": "New policy", "what": "Read it by Friday."}}))
    assert message.content is not None
    card = rendered(message.content, "n1")["attachments"][0]["content"]
    verbs = [action.get("verb") for action in card["actions"]]
    assert verbs[0] == ACK_VERB and "proactive.optout" in verbs


async def test_an_update_can_add_the_button_and_its_press_then_counts(
        runtime: Runtime, emulator: ConnectorEmulator) -> None:
    await runtime.references.record(parse_activity(install(
        service_url=emulator.url, aad=USERS[0], conversation="a:1conv0")))
    base = {"version": 1, "key": "late", "text": "Fire drill at 3"}
    await process(runtime, json.dumps({**base, "op": "send", "to": {"user": USERS[0]}}),
                  message_id="s")
    assert emulator.deliveries[0].text == "Fire drill at 3"
    await process(runtime, json.dumps({**base, "op": "update", "ack": True}), message_id="u")
    card = emulator.deliveries[0].attachments[0]["content"]
    assert ack_buttons(card) and texts(card) == ["Fire drill at 3"]
    reply = await handle_activity(runtime, {}, click(USERS[0], "a:1conv0", "late",
                                                     service_url=emulator.url))
    shown = json.loads(reply.body)["value"]
    assert texts(shown)[-1].startswith("✅ Acknowledged at ") and not ack_buttons(shown)
    view = json.loads((await status(runtime, "late", base_url="http://x/")).body)
    assert view["counts"]["acked"] == 1
