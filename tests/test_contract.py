"""The outbox contract: the validator accepts and refuses exactly what the
published JSON Schema does, and each refusal names its reason."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from proactive.contract import InvalidMessage, activity_size, parse_message

SCHEMA = json.loads(
    (Path(__file__).parents[1] / "proactive" / "schemas" / "outbox-message.v1.json").read_text())
CARD = {"type": "AdaptiveCard", "version": "1.5", "body": [{"type": "TextBlock", "text": "x"}]}

VALID = [
    {"version": 1, "op": "send", "key": "k1", "to": {"user": "u-1"}, "text": "hi"},
    {"version": 1, "op": "send", "to": {"user": "u-1", "tenant": "t"}, "card": CARD},
    {"version": 1, "op": "send", "key": "k", "to": {"conversation": "19:a@thread.v2"},
     "text": "**hi**", "summary": "s"},
    {"version": 1, "op": "send", "key": "k", "to": {"channel": "19:c@thread.tacv2", "team": "t1"},
     "text": "new thread"},
    {"version": 1, "op": "send", "key": "k",
     "to": {"channel": "19:c@thread.tacv2", "replyTo": "1700000000000"}, "text": "reply"},
    {"version": 1, "op": "update", "key": "k", "text": "edited"},
    {"version": 1, "op": "update", "key": "k", "card": CARD, "summary": "s"},
    {"version": 1, "op": "delete", "key": "k"},
    {"version": 1, "op": "send", "key": "k", "to": {"user": "u"}, "text": "x", "attempt": 3},
    {"version": 1, "op": "send", "key": "k", "to": {"users": ["a", "b", "a"]}, "text": "x"},
    {"version": 1, "op": "send", "key": "k", "to": {"allUsers": True, "tenant": "t"},
     "text": "x"},
    {"version": 1, "op": "cancel", "key": "k"},
]

INVALID = [
    ({"op": "send", "to": {"user": "u"}, "text": "x"}, "unsupported-version"),
    ({"version": 2, "op": "send", "to": {"user": "u"}, "text": "x"}, "unsupported-version"),
    ({"version": True, "op": "send", "to": {"user": "u"}, "text": "x"}, "unsupported-version"),
    ({"version": 1, "op": "post", "to": {"user": "u"}, "text": "x"}, "unknown-op"),
    ({"version": 1, "op": "send", "text": "x"}, "schema"),
    ({"version": 1, "op": "send", "to": {"user": "u"}}, "schema"),
    ({"version": 1, "op": "send", "to": {"user": "u", "conversation": "c"}, "text": "x"},
     "schema"),
    ({"version": 1, "op": "send", "to": {"user": ""}, "text": "x"}, "schema"),
    ({"version": 1, "op": "send", "to": {"user": "u", "nick": "x"}, "text": "x"}, "schema"),
    ({"version": 1, "op": "send", "to": {"user": "u"}, "text": "x", "colour": "red"}, "schema"),
    ({"version": 1, "op": "send", "to": {"user": "u"}, "card": {"type": "HeroCard"}}, "schema"),
    ({"version": 1, "op": "send", "to": {"user": "u"}, "text": "   "}, "schema"),
    ({"version": 1, "op": "update", "text": "x"}, "schema"),
    ({"version": 1, "op": "update", "key": "k"}, "schema"),
    ({"version": 1, "op": "update", "key": "k", "to": {"user": "u"}, "text": "x"}, "schema"),
    ({"version": 1, "op": "delete"}, "schema"),
    ({"version": 1, "op": "delete", "key": "k", "text": "x"}, "schema"),
    ({"version": 1, "op": "send", "key": "k" * 201, "to": {"user": "u"}, "text": "x"}, "schema"),
    ({"version": 1, "op": "send", "to": {"user": "u"}, "text": "x", "attempt": 0}, "schema"),
    (["not", "an", "object"], "schema"),
    ({"version": 1, "op": "send", "to": {"users": []}, "text": "x"}, "schema"),
    ({"version": 1, "op": "send", "to": {"users": ["a", ""]}, "text": "x"}, "schema"),
    ({"version": 1, "op": "send", "to": {"users": "a"}, "text": "x"}, "schema"),
    ({"version": 1, "op": "send", "to": {"allUsers": False}, "text": "x"}, "schema"),
    ({"version": 1, "op": "cancel"}, "schema"),
    ({"version": 1, "op": "cancel", "key": "k", "text": "x"}, "schema"),
]


@pytest.mark.parametrize("message", VALID)
def test_valid_messages_pass_both_validator_and_schema(message: dict) -> None:
    jsonschema.validate(message, SCHEMA)
    parsed = parse_message(json.dumps(message), default_key="fallback")
    assert parsed.op == message["op"]
    assert parsed.key == message.get("key", "fallback")


@pytest.mark.parametrize(("message", "reason"), INVALID)
def test_invalid_messages_fail_both_with_a_reason(message: object, reason: str) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(message, SCHEMA)
    with pytest.raises(InvalidMessage) as caught:
        parse_message(json.dumps(message), default_key="fallback")
    assert caught.value.reason == reason
    assert caught.value.detail


def test_not_json_is_refused_as_such() -> None:
    with pytest.raises(InvalidMessage) as caught:
        parse_message("{not json")
    assert caught.value.reason == "not-json"


def test_content_over_the_teams_limit_is_refused_before_any_send() -> None:
    # 60,000 CJK characters are 120,000 bytes in UTF-16: over 100 KB, though
    # only 60,000 characters long.
    message = {"version": 1, "op": "send", "to": {"user": "u"}, "text": "界" * 60_000}
    with pytest.raises(InvalidMessage) as caught:
        parse_message(json.dumps(message), default_key="k")
    assert caught.value.reason == "too-large"
    ok = {**message, "text": "界" * 50_000}
    assert parse_message(json.dumps(ok), default_key="k").content is not None


def test_activity_shape_for_text_card_and_summary() -> None:
    parsed = parse_message(json.dumps(VALID[2]))
    assert parsed.content is not None
    activity = parsed.content.activity()
    assert activity == {"type": "message", "text": "**hi**", "textFormat": "markdown",
                        "summary": "s"}
    carded = parse_message(json.dumps(VALID[1]), default_key="k").content
    assert carded is not None
    attachment = carded.activity()["attachments"][0]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert attachment["content"] == CARD
    assert activity_size({"a": "b"}) == len('{"a": "b"}') * 2


def test_recipient_names_are_stable_per_target_kind() -> None:
    def recipient(to: dict) -> str:
        msg = {"version": 1, "op": "send", "key": "k", "to": to, "text": "x"}
        target = parse_message(json.dumps(msg)).target
        assert target is not None
        return target.recipient

    assert recipient({"user": "ABC"}) == recipient({"user": "abc", "tenant": "t"}) == "user:abc"
    assert recipient({"conversation": "19:x"}) == "conv:19:x"
    assert recipient({"channel": "19:c"}) == "channel:19:c"
    assert recipient({"channel": "19:c", "replyTo": "5"}) == "thread:19:c;5"
