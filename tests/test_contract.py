"""The outbox contract: the validator accepts and refuses exactly what the
published JSON Schema does, and each refusal names its reason."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from proactive.contract import InvalidMessage, parse_message
from proactive.delivering.render import activity, activity_size, checked

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
    # Audiences (README "Audiences").
    {"version": 1, "op": "send", "key": "k", "to": {"users": ["a@contoso.com", "b"]}, "text": "x"},
    {"version": 1, "op": "send", "key": "k", "to": {"teamMembers": "19:t@thread.tacv2"},
     "text": "x"},
    {"version": 1, "op": "send", "key": "k", "part": True,
     "to": {"teamMembers": "19:t@thread.tacv2", "tenant": "t", "continuation": "NTA="},
     "text": "x", "signature": "0a1b2c3d.mac"},  # app-only fields: valid shape, the seal decides
    {"version": 1, "op": "send", "key": "k", "to": {"group": "g-1", "tenant": "t"}, "text": "x"},
    # Scheduling (README "Scheduling").
    {"version": 1, "op": "send", "key": "k", "to": {"user": "u"}, "text": "x",
     "schedule": {"at": "2026-12-01T09:00:00Z"}},
    {"version": 1, "op": "send", "key": "k", "to": {"user": "u"}, "text": "x",
     "schedule": {"at": "2026-12-01T09:00:00.250+01:00"}},
    {"version": 1, "op": "send", "key": "k", "to": {"user": "u"}, "text": "x",
     "schedule": {"local": "2026-12-01T09:00"}},
    {"version": 1, "op": "send", "key": "k", "to": {"allUsers": True}, "text": "x",
     "schedule": {"local": "2028-02-29T09:00:00", "timezone": "Europe/Berlin"}},
    {"version": 1, "op": "send", "key": "standup", "to": {"user": "u"}, "text": "x",
     "schedule": {"rrule": "FREQ=WEEKLY;BYDAY=MO;BYHOUR=9;BYMINUTE=0"}},
    {"version": 1, "op": "send", "key": "k", "to": {"conversation": "c"}, "text": "x",
     "schedule": {"rrule": "RRULE:FREQ=DAILY;COUNT=3", "start": "2026-12-01T09:00",
                  "timezone": "America/New_York"}},
    {"version": 1, "op": "send", "key": "k", "to": {"user": "u"}, "text": "x",
     "schedule": {"rrule": "FREQ=MONTHLY;BYMONTHDAY=-1", "until": "2027-06-30"}},
    {"version": 1, "op": "send", "key": "k", "to": {"user": "u"}, "text": "x",
     "schedule": {"cron": "0 9 * * 1-5", "timezone": "Europe/Berlin", "count": 10}},
    {"version": 1, "op": "send", "key": "k", "to": {"user": "u"}, "text": "x",
     "schedule": {"cron": "30 0 9 * * *", "until": "2027-01-01T00:00:00Z"}},
    {"version": 1, "op": "send", "key": "k" * 179, "to": {"user": "u"}, "text": "x",
     "schedule": {"cron": "0 9 * * *"}},
    {"version": 1, "op": "send", "key": "k" * 200, "to": {"user": "u"}, "text": "x",
     "schedule": {"at": "2026-12-01T09:00:00Z"}},
    {"version": 1, "op": "update", "key": "k", "schedule": {"at": "2026-12-02T09:00:00Z"}},
    {"version": 1, "op": "update", "key": "k", "text": "y",
     "schedule": {"local": "2026-12-02T09:00", "timezone": "UTC"}},
    {"version": 1, "op": "install", "key": "pre-1", "to": {"group": "g-1"}},
    {"version": 1, "op": "install", "key": "pre-2", "to": {"users": ["a", "b"], "tenant": "t"}},
    {"version": 1, "op": "send", "key": "k", "to": {"user": "u"}, "text": "x",
     "onUnknown": "skip"},
    {"version": 1, "op": "send", "key": "k", "to": {"allUsers": True}, "text": "x",
     "onUnknown": "skip", "schedule": {"cron": "0 9 * * *"}},
]

INVALID = [
    ({"version": 1, "op": "send", "to": {"user": "u"}, "text": "x", "onUnknown": "maybe"},
     "schema"),
    ({"version": 1, "op": "update", "key": "k", "text": "x", "onUnknown": "skip"}, "schema"),
    ({"version": 1, "op": "delete", "key": "k", "onUnknown": "skip"}, "schema"),
    ({"version": 1, "op": "install", "key": "k", "to": {"group": "g"}, "onUnknown": "skip"},
     "schema"),
    ({"version": 1, "op": "install", "to": {"group": "g"}}, "schema"),  # no key
    ({"version": 1, "op": "install", "key": "k", "to": {"user": "u"}}, "schema"),  # one user
    ({"version": 1, "op": "install", "key": "k", "to": {"group": "g"}, "text": "x"}, "schema"),
    ({"version": 1, "op": "install", "key": "k"}, "schema"),
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
    ({"version": 1, "op": "send", "to": {"teamMembers": ""}, "text": "x"}, "schema"),
    ({"version": 1, "op": "send", "to": {"group": "g", "team": "t"}, "text": "x"}, "schema"),
    ({"version": 1, "op": "send", "to": {"group": "g", "teamMembers": "t"}, "text": "x"},
     "schema"),
    ({"version": 1, "op": "send", "to": {"group": "g", "continuation": ""}, "text": "x"},
     "schema"),
    ({"version": 1, "op": "send", "to": {"user": "u", "continuation": "x"}, "text": "x"},
     "schema"),
    ({"version": 1, "op": "cancel", "key": "k", "text": "x"}, "schema"),
    ({"version": 1, "op": "cancel", "key": "k", "signature": ""}, "schema"),
    ({"version": 1, "op": "cancel", "key": "k", "signature": 7}, "schema"),
    # Scheduling: the wrong shape is refused by both.
    *[({"version": 1, "op": "send", "key": "k", "to": {"user": "u"}, "text": "x",
        "schedule": schedule}, "schema") for schedule in [
        "2026-12-01T09:00:00Z",
        {},
        {"at": "2026-12-01T09:00:00Z", "local": "2026-12-01T09:00"},
        {"at": "2026-12-01T09:00:00"},  # an instant needs its offset
        {"at": "tomorrow"},
        {"local": "2026-12-01T09:00Z"},  # a wall time has none
        {"local": "2026-12-01"},
        {"local": "2026-12-01T09:00", "timezone": ""},
        {"local": "2026-12-01T09:00", "count": 2},
        {"at": "2026-12-01T09:00:00Z", "timezone": "UTC"},
        {"rrule": ""},
        {"rrule": "FREQ=DAILY", "count": 0},
        {"rrule": "FREQ=DAILY", "count": True},
        {"rrule": "FREQ=DAILY", "count": "3"},
        {"rrule": "FREQ=DAILY", "start": "2026-12-01T09:00:00Z"},
        {"cron": "0 9 * * *", "until": "next week"},
        {"cron": "0 9 * * *", "every": "day"},
        {"cron": 5},
    ]],
    ({"version": 1, "op": "send", "key": "k" * 180, "to": {"user": "u"}, "text": "x",
      "schedule": {"rrule": "FREQ=DAILY"}}, "schema"),
    ({"version": 1, "op": "update", "key": "k", "summary": "s"}, "schema"),
    ({"version": 1, "op": "delete", "key": "k", "schedule": {"at": "2026-12-01T09:00:00Z"}},
     "schema"),
    ({"version": 1, "op": "cancel", "key": "k", "schedule": {"at": "2026-12-01T09:00:00Z"}},
     "schema"),
]

# Well-formed (the JSON Schema can't tell) but unusable: refused when the
# message is read, with a reason, never at the time it would fire.
UNWORKABLE = [
    ({"at": "2026-02-30T09:00:00Z"}, "not a real date-time"),
    ({"local": "2027-02-29T09:00"}, "not a real date-time"),  # not a leap year
    ({"local": "2026-12-01T09:00", "timezone": "Mars/Olympus_Mons"}, "unknown time zone"),
    ({"local": "2026-12-01T09:00", "timezone": "../../etc/passwd"}, "unknown time zone"),
    ({"rrule": "FREQ=SOMETIMES"}, "invalid RRULE"),
    ({"rrule": "BYDAY=MO"}, "FREQ is required"),
    ({"rrule": "FREQ=DAILY;BYHOUR=25"}, "invalid RRULE"),
    ({"rrule": "FREQ=DAILY;BYDAY=XX"}, "invalid RRULE"),
    ({"rrule": "FREQ=SECONDLY"}, "more than once a minute"),
    ({"rrule": "FREQ=MINUTELY;BYSECOND=0,30"}, "more than once a minute"),
    ({"rrule": "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30"}, "never fires"),
    ({"rrule": "FREQ=DAILY;COUNT=2;UNTIL=20270101"}, "not both"),
    ({"rrule": "FREQ=DAILY;COUNT=2", "count": 3}, "not both"),
    ({"rrule": "DTSTART:20260101T090000\nRRULE:FREQ=DAILY"}, "give the first time as 'start'"),
    ({"rrule": "FREQ=DAILY", "until": "2026-12-01", "count": 2}, "not both"),
    ({"cron": "0 9 * *"}, "5 fields"),
    ({"cron": "61 9 * * *"}, "invalid cron"),
    ({"cron": "0 9 30 2 *"}, "never fires"),
    ({"cron": "0 9 * * MON"}, "invalid cron"),
    ({"cron": "*/10 * * * * *"}, "more than once a minute"),
    ({"cron": "00:05:00"}, "5 fields"),
    ({"cron": "0 9 * * *", "timezone": "Europe/Nowhere"}, "unknown time zone"),
    ({"cron": "0 9 * * *", "until": "2026-13-01"}, "not a real date"),
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


@pytest.mark.parametrize(("schedule", "says"), UNWORKABLE)
def test_unworkable_schedules_are_refused_when_read_with_a_reason(schedule: dict,
                                                                  says: str) -> None:
    message = {"version": 1, "op": "send", "key": "k", "to": {"user": "u"}, "text": "x",
               "schedule": schedule}
    jsonschema.validate(message, SCHEMA)
    with pytest.raises(InvalidMessage) as caught:
        parse_message(json.dumps(message))
    assert caught.value.reason == "invalid-schedule"
    assert says in caught.value.detail


def test_a_schedule_is_parsed_into_the_message() -> None:
    message = {"version": 1, "op": "send", "key": "k", "to": {"user": "u"}, "text": "x",
               "schedule": {"rrule": "FREQ=DAILY;UNTIL=20270101T000000Z", "timezone": "UTC"}}
    parsed = parse_message(json.dumps(message))
    assert parsed.schedule is not None and parsed.schedule.recurring
    # UNTIL moves out of the rule, in the contract's own form.
    assert parsed.schedule.to_json() == {"rrule": "FREQ=DAILY", "until": "2027-01-01T00:00:00Z",
                                         "timezone": "UTC"}
    jsonschema.validate({**message, "schedule": parsed.schedule.to_json()}, SCHEMA)
    reschedule = parse_message(json.dumps(
        {"version": 1, "op": "update", "key": "k", "schedule": {"at": "2026-12-01T09:00:00Z"}}))
    assert reschedule.content is None and reschedule.schedule is not None
    assert parse_message(json.dumps(VALID[0])).schedule is None


def test_not_json_is_refused_as_such() -> None:
    with pytest.raises(InvalidMessage) as caught:
        parse_message("{not json")
    assert caught.value.reason == "not-json"


def test_content_over_the_teams_limit_is_refused_before_any_send() -> None:
    # 60,000 CJK characters are 120,000 bytes in UTF-16: over 100 KB, though
    # only 60,000 characters long.
    message = {"version": 1, "op": "send", "to": {"user": "u"}, "text": "界" * 60_000}
    with pytest.raises(InvalidMessage) as caught:
        checked(parse_message(json.dumps(message), default_key="k"))
    assert caught.value.reason == "too-large"
    ok = {**message, "text": "界" * 50_000}
    assert checked(parse_message(json.dumps(ok), default_key="k")).content is not None


def test_activity_shape_for_text_card_and_summary() -> None:
    parsed = parse_message(json.dumps(VALID[2]))
    assert parsed.content is not None
    assert activity(parsed.content) == {"type": "message", "text": "**hi**",
                                        "textFormat": "markdown", "summary": "s"}
    carded = parse_message(json.dumps(VALID[1]), default_key="k").content
    assert carded is not None
    attachment = activity(carded)["attachments"][0]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    # The producer's card, plus the way out (README "Opt-out, opt-in, help").
    content = attachment["content"]
    assert {k: v for k, v in content.items() if k not in ("actions", "version")} == \
        {k: v for k, v in CARD.items() if k != "version"}
    assert content["actions"][-1] == {"type": "Action.Execute", "title": "Stop all notifications",
                                      "verb": "proactive.optout", "data": {"topic": "*"}}
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


def test_lone_surrogates_are_refused() -> None:
    body = '{"version": 1, "op": "send", "key": "\\udc00", "to": {"user": "u"}, "text": "x"}'
    with pytest.raises(InvalidMessage, match="unicode"):
        parse_message(body)


def test_long_ids_make_safe_table_keys() -> None:
    from proactive.storage.tables import MAX_KEY_CHARS, safe_key

    long_id = "19:" + "x/" * 600
    key = safe_key(long_id)
    assert len(key) <= MAX_KEY_CHARS
    assert key != safe_key(long_id + "y")
    assert "/" not in key


def test_deeply_nested_json_is_refused_as_not_json() -> None:
    with pytest.raises(InvalidMessage) as caught:
        parse_message("[" * 100_000)
    assert caught.value.reason == "not-json"


@pytest.mark.parametrize("message", VALID)
def test_a_parsed_message_writes_itself_back_as_the_same_v1_message(message: dict) -> None:
    parsed = parse_message(json.dumps(message), default_key="msg:q1")
    written = parsed.to_json()
    jsonschema.validate(written, SCHEMA)
    assert written["key"] == message.get("key", "msg:q1")  # pinned: the same delivery
    again = parse_message(json.dumps(written))
    assert again == parsed
    # Exactly the fields given (duplicate users dropped, a schedule in its canonical form).
    expected = {**message, "key": written["key"]}
    if "users" in message.get("to", {}):
        expected["to"] = {**message["to"], "users": list(dict.fromkeys(message["to"]["users"]))}
    if "schedule" in message:
        expected["schedule"] = written["schedule"]
    expected.pop("signature", None)  # the outbox signs each copy it puts (storage/seal.py)
    assert written == expected


def test_retries_and_parts_are_made_from_the_message() -> None:
    message = parse_message(json.dumps(
        {"version": 1, "op": "send", "key": "k", "to": {"users": ["a", "b", "c"], "tenant": "t"},
         "text": "x", "summary": "s", "attempt": 2}))
    retry = message.retry(attempt=3).to_json()
    assert retry["attempt"] == 3 and retry["to"] == {"users": ["a", "b", "c"], "tenant": "t"}
    part = message.for_users(["b"]).to_json()
    assert part == {"version": 1, "op": "send", "key": "k", "to": {"users": ["b"], "tenant": "t"},
                    "text": "x", "summary": "s", "attempt": 2, "part": True}
    jsonschema.validate(part, SCHEMA)
    assert "attempt" not in message.for_users(["a"]).retry(attempt=1).to_json()


def test_only_the_contract_writes_a_message_version() -> None:
    """OutboxMessage (proactive/contract/) is the one way the app makes a queue
    message: a `"version": 1` written anywhere else is a message built by hand."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "proactive"
    by_hand = re.compile(r"""["']version["']\s*:\s*(?:1|VERSION)\b""")
    found = [f"{path.relative_to(root)}:{n}" for path in root.rglob("*.py")
             if "contract" not in path.relative_to(root).parts
             for n, line in enumerate(path.read_text().splitlines(), 1) if by_hand.search(line)]
    assert found == []


def test_the_contract_imports_only_what_is_below_it() -> None:
    """The message's shapes sit under every layer that makes or reads one: the
    contract imports errors.py, app_only.py and itself, nothing that renders,
    stores or schedules (rendering is delivering/render.py's)."""
    from tests.test_architecture import _graph

    below = ("proactive.contract", "proactive.errors", "proactive.app_only")
    upward = {f"{name} -> {dep}" for name, deps in _graph().items()
              if name == "proactive.contract" or name.startswith("proactive.contract.")
              for dep in deps if not any(dep == b or dep.startswith(b + ".") for b in below)}
    assert upward == set()
