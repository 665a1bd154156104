"""Every way a person can get the CLI wrong, through a real `python -m proactive`
subprocess: one line on stderr that says what to do, exit 2, never a traceback;
and poison management against real Azurite."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from proactive.cli.checks import doubts
from proactive.cli.live import settled

REPO = Path(__file__).resolve().parents[1]
GUID = "00000000-0000-4000-8000-0000000000a1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(tmp_path: Path, *argv: str, env: dict[str, str] | None = None,
        stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run outside the repo (no local.settings.json), with only these settings."""
    base = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(tmp_path)}
    return subprocess.run([sys.executable, "-m", "proactive", *argv], cwd=tmp_path,
                          env={**base, **(env or {})}, input=stdin, capture_output=True,
                          text=True, timeout=60)


def one_line_error(proc: subprocess.CompletedProcess[str], *hints: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for hint in hints:
        assert hint in lines[0], lines[0]
    return lines[0]


def local(port: int) -> dict[str, str]:
    return {"AzureWebJobsStorage":
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey="
            "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
            f"QueueEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
            f"TableEndpoint=http://127.0.0.1:{port}/devstoreaccount1",
            "OUTBOX_QUEUE": "outbox"}


def test_local_storage_not_running_is_said_at_once_with_the_dev_hint(tmp_path: Path) -> None:
    started = time.monotonic()
    proc = cli(tmp_path, "status", "--key", "k", env=local(free_port()))
    one_line_error(proc, "cannot reach local storage (Azurite)", "./scripts/dev")
    assert time.monotonic() - started < 5 + 3  # the 5 s, plus interpreter start-up


def test_an_unreachable_storage_account_is_named(tmp_path: Path) -> None:
    # A name nobody has (no DNS record): the line names the account and the flag.
    proc = cli(tmp_path, "poison", "count", "--account", "proactivenosuch9z")
    one_line_error(proc, "cannot reach storage account 'proactivenosuch9z'", "--account")


@pytest.mark.parametrize(("argv", "hints"), [
    (["send", "--to", GUID, "--card", "missing.json"], ["missing.json", "check the path"]),
    (["send", "--users", "@nope.txt", "--text", "x"], ["--users nope.txt", "check the path"]),
    (["send", "--users-file", "nope.csv", "--text", "x"], ["--users-file nope.csv"]),
    (["send", "--to", GUID], ["--text, --card or --notification is required"]),
    (["send", "--to", GUID, "--text", "x", "--at", "tomorrow"], []),
])
def test_user_mistakes_get_one_line_and_exit_2(tmp_path: Path, argv: list[str],
                                               hints: list[str]) -> None:
    one_line_error(cli(tmp_path, *argv), *hints)


def test_a_card_that_is_not_json_gets_one_line(tmp_path: Path) -> None:
    (tmp_path / "card.json").write_text("{not json")
    one_line_error(cli(tmp_path, "send", "--to", GUID, "--card", "card.json", "--text", "x"),
                   "--card card.json: not JSON")
    (tmp_path / "facts.json").write_text("")
    one_line_error(cli(tmp_path, "send", "--to", GUID, "--notification", "facts.json"),
                   "--notification facts.json: not JSON")


@pytest.mark.parametrize(("argv", "hints"), [
    # argparse's own mistakes: one line naming the command and the flag, no usage block.
    (["send", "--to", GUID, "--text", "x", "--bogus"],
     ["send: unrecognized arguments: --bogus", "python -m proactive send --help"]),
    (["send", "--to", GUID, "--text", "x", "--count", "many"], ["send:", "--count"]),
    (["status"], ["status:", "--key"]),
    (["poison", "frob"], ["poison:", "frob"]),
    ([], ["command"]),
    # The contract's field names told as the flags that set them.
    (["send", "--to", GUID, "--all-users", "--text", "x"],
     ["exactly one recipient", "--to, --all-users"]),
    (["send", "--text", "x"], ["exactly one recipient"]),
    (["send", "--to", GUID, "--text", "x", "--topic", "Not A Topic"], ["--topic must be"]),
    (["send", "--to", GUID, "--text", "x", "--summary", "s" * 1001], ["--summary is longer"]),
])
def test_usage_mistakes_are_one_line_naming_the_flag(tmp_path: Path, argv: list[str],
                                                     hints: list[str]) -> None:
    line = one_line_error(cli(tmp_path, *argv), *hints)
    assert "usage:" not in line and "'to'" not in line and "'topic'" not in line


def test_a_notification_file_with_a_mistake_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "facts.json").write_text(json.dumps({"title": "Build failed"}))
    one_line_error(cli(tmp_path, "send", "--to", GUID, "--notification", "facts.json"),
                   "--notification facts.json:", "what")


def test_status_and_progress_of_an_unknown_key_say_so(tmp_path: Path, azurite: Any) -> None:
    env = {"AzureWebJobsStorage": azurite.connection_string,
           "PROACTIVE_TABLE_PREFIX": f"t{uuid.uuid4().hex[:8]}"}
    one_line_error(cli(tmp_path, "status", "--key", "never-sent", env=env),
                   "nothing is recorded under --key never-sent")
    one_line_error(cli(tmp_path, "progress", "--key", "never-sent", env=env),
                   "--key never-sent")


def test_a_used_key_is_refused_with_what_became_of_it_and_how_to_send_again(
        tmp_path: Path, azurite: Any) -> None:
    from azure.data.tables import TableServiceClient

    prefix, queue = f"t{uuid.uuid4().hex[:8]}", f"o{uuid.uuid4().hex[:10]}"
    env = {"AzureWebJobsStorage": azurite.connection_string, "OUTBOX_QUEUE": queue,
           "PROACTIVE_TABLE_PREFIX": prefix}
    table = TableServiceClient.from_connection_string(
        azurite.connection_string).create_table_if_not_exists(f"{prefix}deliveries")
    # What the worker records when the Playground was restarted: its chat is gone.
    table.create_entity({"PartitionKey": "k-used", "RowKey": GUID, "key": "k-used",
                         "recipient": GUID, "state": "failed",
                         "reason": "conversation-not-found", "attempts": 1})
    argv = ["send", "--key", "k-used", "--to", GUID, "--text", "again"]
    one_line_error(cli(tmp_path, *argv, env=env), "--key k-used was already sent",
                   "failed 1", "conversation-not-found", "Playground", "new --key")
    assert outbox(azurite, queue) == []
    fresh = cli(tmp_path, "send", "--key", "k-fresh", "--to", GUID, "--text", "x", env=env)
    assert fresh.returncode == 0, fresh.stderr


@pytest.mark.parametrize(("argv", "says"), [
    (["send", "--to", "someone@contoso.com", "--text", "x"], "not an Azure AD object id"),
    (["send", "--to", GUID, "--text", "x", "--at", "2020-01-01T09:00:00Z"], "in the past"),
    (["send", "--all-users", "--tenant", "t-nobody", "--text", "x"], "would reach nobody"),
])
def test_probable_mistakes_are_refused_without_force_and_nothing_is_queued(
        tmp_path: Path, azurite: Any, argv: list[str], says: str) -> None:
    queue = f"o{uuid.uuid4().hex[:10]}"
    env = {"AzureWebJobsStorage": azurite.connection_string, "OUTBOX_QUEUE": queue}
    one_line_error(cli(tmp_path, *argv, env=env), says, "--force")
    assert outbox(azurite, queue) == []
    forced = cli(tmp_path, *argv, "--force", env=env)
    assert forced.returncode == 0, forced.stderr
    assert [m["key"] for m in outbox(azurite, queue)] == [json.loads(forced.stdout)["key"]]


def outbox(azurite: Any, queue: str) -> list[dict[str, Any]]:
    from azure.core.exceptions import ResourceNotFoundError
    from azure.storage.queue import QueueClient

    client = QueueClient.from_connection_string(azurite.connection_string, queue)
    try:
        return [json.loads(m.content) for m in client.peek_messages(max_messages=32)]
    except ResourceNotFoundError:
        return []


def test_the_doubts_name_flags() -> None:
    from proactive.cli import _parser, build_message

    args = _parser().parse_args(["send", "--users", f"{GUID},bob", "--text", "x"])
    found = doubts(args, build_message(args), lambda: 1)
    assert len(found) == 1 and "'bob'" in found[0] and "--users" in found[0]


def test_every_command_and_option_has_help() -> None:
    from proactive.cli import _parser

    parser = _parser()
    commands = next(a.choices for a in parser._actions if isinstance(a.choices, dict))
    for name, command in commands.items():
        for action in command._actions:
            if name in ("host", "emulator", "dev", "package"):
                continue  # their own parsers, in the dev tools
            assert action.help, f"{name} {action.option_strings or action.dest}"
            # Flags, not the contract's JSON fields (allUsers, replyTo, ...).
            assert not re.search(r"\b[a-z]+[A-Z][a-zA-Z]*\b", action.help or ""), action.help


def test_watching_a_key_that_never_appears_returns(capsys: pytest.CaptureFixture[str]) -> None:
    from proactive.cli.live import watch

    slept: list[float] = []
    assert watch(lambda: None, "typo", interval=1.0, sleep=slept.append,
                 missing_after=5) == 1
    assert len(slept) == 5  # looked six times, one a second, without sleeping for real
    assert "no send with key 'typo'" in capsys.readouterr().err
    final = {"state": "failed", "counts": {"queued": 1, "failed": 1}}
    assert watch(lambda: final, "k", sleep=slept.append, missing_after=5) == 0


def test_a_send_settles_only_when_its_stored_state_is_final() -> None:
    assert not settled({"state": "running", "counts": {"queued": 3, "sent": 2}})
    # Every queued person has a result, but a later page may still come: the
    # stored state (which a progress read settles) decides, not the counters.
    assert not settled({"state": "running", "counts": {"queued": 3, "sent": 2, "skipped": 1}})
    assert settled({"state": "cancelled", "counts": {"queued": 3}})
    assert settled({"state": "failed", "counts": {"queued": 1, "failed": 1}})
    assert not settled({"state": "running", "counts": {}})


def test_a_send_that_reached_nobody_ends_its_watch_saying_why(
        capsys: pytest.CaptureFixture[str]) -> None:
    from proactive.cli.live import watch

    empty = {"key": "k", "state": "done", "counts": {}, "reason": "no-recipients",
             "detail": "no user of tenant 't' has a stored personal chat with the bot"}
    assert watch(lambda: empty, "k", sleep=lambda _: None) == 0
    last = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert last == {"key": "k", "state": "done", "detail": empty["detail"]}


def _poison(azurite: Any, queue: str, bodies: list[str]) -> None:
    from azure.storage.queue import QueueClient

    client = QueueClient.from_connection_string(azurite.connection_string, f"{queue}-poison")
    client.create_queue()
    for body in bodies:
        client.send_message(body)


def test_poison_pages_past_32_counts_requeues_a_fix_and_purges_with_confirmation(
        tmp_path: Path, azurite: Any) -> None:
    queue = f"o{uuid.uuid4().hex[:10]}"
    env = {"AzureWebJobsStorage": azurite.connection_string, "OUTBOX_QUEUE": queue}
    bad = json.dumps({"version": 1, "op": "send", "key": "k1", "to": {"user": GUID}})
    envelope = {"reason": "schema", "detail": "'text' or 'card' is required", "message": bad}
    _poison(azurite, queue, [json.dumps(envelope)] * 40)

    assert json.loads(cli(tmp_path, "poison", "count", env=env).stdout)["count"] == 40
    listed = json.loads(cli(tmp_path, "poison", "list", "--limit", "100", env=env).stdout)
    assert len(listed) == 40 and listed[0]["parked"]["reason"] == "schema"
    one = listed[0]["id"]
    shown = json.loads(cli(tmp_path, "poison", "show", one, env=env).stdout)
    assert shown["original"] == bad
    # The lookup hid nothing for later: all still counted, another id still found.
    assert json.loads(cli(tmp_path, "poison", "count", env=env).stdout)["count"] == 40
    other = listed[1]["id"]  # in the same batch of 32 as `one`
    assert cli(tmp_path, "poison", "purge", other, "--yes", env=env).returncode == 0
    assert json.loads(cli(tmp_path, "poison", "count", env=env).stdout)["count"] == 39

    # Unfixed, it would only be parked again: refused, still parked.
    one_line_error(cli(tmp_path, "poison", "requeue", one, "--yes", env=env),
                   "still invalid", "--file")
    fixed = tmp_path / "fixed.json"
    fixed.write_text(json.dumps({**json.loads(bad), "text": "now with text"}))
    one_line_error(cli(tmp_path, "poison", "requeue", one, "--file", str(fixed), env=env),
                   "--yes")  # not at a terminal, not confirmed
    done = cli(tmp_path, "poison", "requeue", one, "--file", str(fixed), "--yes", env=env)
    assert done.returncode == 0, done.stderr

    from azure.storage.queue import QueueClient

    outbox = QueueClient.from_connection_string(azurite.connection_string, queue)
    assert [m.content for m in outbox.peek_messages()] == [fixed.read_text()]

    one_line_error(cli(tmp_path, "poison", "purge", env=env), "--yes")
    assert cli(tmp_path, "poison", "purge", "--yes", env=env).returncode == 0
    assert json.loads(cli(tmp_path, "poison", "count", env=env).stdout)["count"] == 0
    one_line_error(cli(tmp_path, "poison", "show", "no-such-id", env=env), "poison list")


def test_a_fixed_message_for_requeue_may_not_carry_what_only_the_app_sets(
        tmp_path: Path, azurite: Any) -> None:
    """Issue 16 §1: an edited message can't carry the app's signature, so
    `part`, `attempt`, `service` or `to.continuation` would only be parked
    again: refused, nothing put on the outbox."""
    queue = f"o{uuid.uuid4().hex[:10]}"
    env = {"AzureWebJobsStorage": azurite.connection_string, "OUTBOX_QUEUE": queue}
    fixed = tmp_path / "fixed.json"
    fixed.write_text(json.dumps({"version": 1, "op": "send", "key": "k", "part": True,
                                 "to": {"users": [GUID]}, "text": "hi"}))
    one_line_error(cli(tmp_path, "poison", "requeue", "some-id", "--file", str(fixed),
                       "--yes", env=env),
                   "app-only-field", "'part' is set by the app only")
    from azure.storage.queue import QueueServiceClient

    service = QueueServiceClient.from_connection_string(azurite.connection_string)
    assert queue not in {q.name for q in service.list_queues()}  # nothing was put back


def test_a_local_all_users_send_defaults_to_the_playgrounds_tenant_and_says_so(
        tmp_path: Path, azurite: Any) -> None:
    from azure.data.tables import TableServiceClient

    prefix, queue = f"t{uuid.uuid4().hex[:8]}", f"o{uuid.uuid4().hex[:10]}"
    env = {"AzureWebJobsStorage": azurite.connection_string, "OUTBOX_QUEUE": queue,
           "PROACTIVE_TABLE_PREFIX": prefix}
    # What ./scripts/dev records once the Playground is up (proactive/cli/localdev.py).
    (tmp_path / ".dev").mkdir()
    (tmp_path / ".dev" / "playground.json").write_text(json.dumps(
        {"tenantId": "t-play", "aadObjectId": GUID, "name": "Alex"}))
    # The Playground's user installed the app: a personal chat in that tenant.
    TableServiceClient.from_connection_string(azurite.connection_string) \
        .create_table_if_not_exists(f"{prefix}references").create_entity(
            {"PartitionKey": f"user:{GUID}", "RowKey": "t-play", "kind": "user",
             "aadObjectId": GUID, "tenantId": "t-play", "conversationId": "a:1"})
    proc = cli(tmp_path, "send", "--all-users", "--text", "hi", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "tenant: t-play (the Agents Playground's" in proc.stderr
    assert [m["to"] for m in outbox(azurite, queue)] == [{"allUsers": True, "tenant": "t-play"}]
    # An explicit --tenant wins; the file is never read for other storage.
    proc = cli(tmp_path, "send", "--all-users", "--tenant", "t-play", "--text", "hi", env=env)
    assert proc.returncode == 0 and "tenant:" not in proc.stderr
