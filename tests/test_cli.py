"""The CLI builds contract messages from its flags and refuses bad ones before
anything reaches the queue."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from proactive.cli import _parser, build_message, main


def message(*argv: str) -> dict:
    return build_message(_parser().parse_args(list(argv))).to_json()


def test_send_to_one_user_with_text_and_summary() -> None:
    built = message("send", "--key", "k", "--to", "u-1", "--text", "hi", "--summary", "s")
    assert built == {"version": 1, "op": "send", "key": "k", "to": {"user": "u-1"},
                     "text": "hi", "summary": "s"}


def test_send_says_what_to_do_with_an_unknown_outcome() -> None:
    built = message("send", "--key", "k", "--to", "u-1", "--text", "hi", "--on-unknown", "skip")
    assert built["onUnknown"] == "skip"
    assert "onUnknown" not in message("send", "--key", "k", "--to", "u-1", "--text", "hi")
    with pytest.raises(SystemExit) as refused:
        main(["send", "--to", "u", "--text", "x", "--on-unknown", "twice"])
    assert refused.value.code == 2


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


def test_topic_and_notification_file_reach_the_message(tmp_path: Path) -> None:
    facts = {"title": "Build 42 failed", "what": "The main branch is red",
             "severity": "error"}
    (tmp_path / "facts.json").write_text(json.dumps(facts))
    args = _parser().parse_args(["send", "--to", "u", "--topic", "builds",
                                 "--notification", str(tmp_path / "facts.json")])
    message = build_message(args).to_json()
    assert message["topic"] == "builds" and message["notification"] == facts
    assert "text" not in message and "card" not in message


@pytest.mark.parametrize("argv", [["send", "--to", "u", "--text", "x"],
                                  ["install", "--group", "g"], ["progress", "--key", "k"]])
def test_watch_is_the_one_word_and_wait_still_works_unlisted(argv: list[str]) -> None:
    parser = _parser()
    assert parser.parse_args([*argv, "--watch"]).watch
    assert parser.parse_args([*argv, "--wait"]).watch  # the old word, for scripts
    assert not parser.parse_args(argv).watch
    commands = next(a.choices for a in parser._actions if isinstance(a.choices, dict))
    shown = commands[argv[0]].format_help()
    assert "--watch" in shown and "--wait" not in shown


def test_an_invalid_message_is_refused_before_the_queue(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no local.settings.json; storage is never reached
    assert main(["send", "--to", "u"]) == 2  # no content
    assert "--text, --card or --notification is required" in capsys.readouterr().err
    # What the worker would park in the poison queue is refused here, with its detail.
    assert main(["send", "--to", "u", "--text", "x", "--summary", "s" * 1001, "--force"]) == 2
    assert "--summary is longer than 1000 characters" in capsys.readouterr().err
    assert main(["send", "--to", "u", "--conversation", "c", "--text", "x"]) == 2


def test_account_reaches_that_storage_account_as_the_person_signed_in() -> None:
    from proactive.cli.storage import storage_settings
    from proactive.config import Settings

    local = Settings(storage_connection="UseDevelopmentStorage=true", outbox_queue="out")
    settings = storage_settings(local, "proactivest")
    assert settings.storage_by_identity and settings.storage_credential == ""  # az login
    assert settings.storage_url("queue") == "https://proactivest.queue.core.windows.net"
    assert settings.storage_url("table") == "https://proactivest.table.core.windows.net"
    assert settings.outbox_queue == "out"
    assert storage_settings(local, None) is local


@pytest.mark.parametrize(("argv", "env", "says"), [
    (["status", "--key", "k", "--account", "Not_An_Account"], {},
     "must be a storage account name"),
    (["poison"], {"AzureWebJobsStorage": "UseDevelopmentStorage=true",
                  "AzureWebJobsStorage__accountName": "proactivest"},
     "are both set: set one of them"),
])
def test_storage_settings_that_cannot_work_get_one_line_and_exit_2(
        argv: list[str], env: dict[str, str], says: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("AzureWebJobsStorage", "AzureWebJobsStorage__accountName"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and says in err
