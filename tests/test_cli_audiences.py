"""The CLI's audiences: a team's members, a group, users from a CSV or text file."""

from __future__ import annotations

from pathlib import Path

import pytest

from proactive.cli import main
from tests.test_cli import message


def test_team_alone_means_its_members_and_with_a_channel_still_the_channel() -> None:
    assert message("send", "--team", "19:t", "--text", "x")["to"] == {"teamMembers": "19:t"}
    assert message("send", "--channel", "19:c", "--team", "19:t", "--text", "x")["to"] == \
        {"channel": "19:c", "team": "19:t"}
    assert message("send", "--group", "g-1", "--tenant", "t", "--text", "x")["to"] == \
        {"group": "g-1", "tenant": "t"}


@pytest.mark.parametrize(("text", "expected"), [
    ("upn,name\nA@contoso.com,Ann\nb@contoso.com,Bob\n", ["A@contoso.com", "b@contoso.com"]),
    ("Name;Email\nAnn;a@contoso.com\n", ["a@contoso.com"]),
    ("\ufeffdisplay name,Object ID\nAnn,00000000-0000-4000-8000-000000000001\n",
     ["00000000-0000-4000-8000-000000000001"]),
    ("id\nu-1\nu-2\n", ["u-1", "u-2"]),
    ("u-1\n\nb@contoso.com\n", ["u-1", "b@contoso.com"]),
])
def test_users_file_as_csv_with_a_header_or_one_per_line(tmp_path: Path, text: str,
                                                         expected: list[str]) -> None:
    path = tmp_path / "users.csv"
    path.write_text(text, encoding="utf-8")
    assert message("send", "--users-file", str(path), "--text", "x")["to"] == {"users": expected}


@pytest.mark.parametrize("text", ["name,department\nAnn,Sales\n", "", "upn\n"])
def test_a_users_file_that_names_no_users_gets_one_line_and_exit_2(
        tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no local.settings.json; storage is never reached
    path = tmp_path / "users.csv"
    path.write_text(text, encoding="utf-8")
    assert main(["send", "--users-file", str(path), "--text", "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert main(["send", "--users-file", str(tmp_path / "missing.csv"), "--text", "x"]) == 2
