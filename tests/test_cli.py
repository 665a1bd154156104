"""The CLI builds contract messages from its flags and refuses bad ones before
anything reaches the queue."""

from __future__ import annotations

from pathlib import Path

import pytest

from proactive.cli import _parser, build_message, main


def message(*argv: str) -> dict:
    return build_message(_parser().parse_args(list(argv)))


def test_send_to_one_user_with_text_and_summary() -> None:
    built = message("send", "--key", "k", "--to", "u-1", "--text", "hi", "--summary", "s")
    assert built == {"version": 1, "op": "send", "key": "k", "to": {"user": "u-1"},
                     "text": "hi", "summary": "s"}


def test_send_without_a_key_gets_a_fresh_one() -> None:
    first = message("send", "--to", "u", "--text", "x")["key"]
    assert first.startswith("cli-") and first != message("send", "--to", "u", "--text", "x")["key"]


def test_many_users_from_a_list_or_a_file(tmp_path: Path) -> None:
    assert message("send", "--users", "a, b,c", "--text", "x")["to"] == {"users": ["a", "b", "c"]}
    listing = tmp_path / "users.txt"
    listing.write_text("a\nb\n\nc\n")
    assert message("send", "--users", f"@{listing}", "--text", "x")["to"] == \
        {"users": ["a", "b", "c"]}
    assert message("send", "--all-users", "--tenant", "t", "--text", "x")["to"] == \
        {"allUsers": True, "tenant": "t"}


def test_channel_reply_and_edits() -> None:
    assert message("send", "--channel", "19:c", "--reply-to", "5", "--text", "x")["to"] == \
        {"channel": "19:c", "replyTo": "5"}
    assert message("update", "--key", "k", "--text", "y") == \
        {"version": 1, "op": "update", "key": "k", "text": "y"}
    assert message("delete", "--key", "k") == {"version": 1, "op": "delete", "key": "k"}


def test_an_invalid_message_is_refused_before_the_queue(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no local.settings.json; storage is never reached
    assert main(["send", "--to", "u"]) == 2  # no content
    assert "'text' or 'card' is required" in capsys.readouterr().err
    assert main(["send", "--to", "u", "--conversation", "c", "--text", "x"]) == 2
