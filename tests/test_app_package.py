"""`python -m proactive package` builds a Teams app package that the official
validator accepts, and refuses a broken one with the field named, exit 2 and
nothing written.

The cross-check runs the Agents Toolkit's own validator (`AppManifestUtils.
validateAgainstSchema` from the npm package @microsoft/app-manifest, ajv on the
same offline schemas) under node: our Python validation must agree with it.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from proactive_devtools import app_icons
from proactive_devtools.app_package import (
    build,
    default_env_file,
    deployment_parts,
    fill,
    read_env_file,
    variables,
)
from proactive_devtools.manifest_check import PackageError, check_zip

ROOT = Path(__file__).resolve().parents[1]
BOT_ID = "1b4b3c1e-93a0-4c6c-9d0e-3f2a7c1d5e10"
HOST = "func-api-abc123.azurewebsites.net"
# What `azd up` leaves in .azure/<env>/.env (quoted, as azd writes it), plus the
# one value a person adds.
AZD_ENV = f'''AZURE_ENV_NAME="prod"
AZURE_LOCATION="swedencentral"
BOT_ID="{BOT_ID}"
BOT_MESSAGING_ENDPOINT="https://{HOST}/api/messages"
BOT_SERVICE_NAME="bot-abc123"
TEAMS_APP_WEBSITE_URL="https://intranet.contoso.example/proactive"
'''


def official_errors(manifest: dict[str, Any]) -> list[str]:
    """The Agents Toolkit's validator's verdict ([] = valid), run under node."""
    script = ("const {AppManifestUtils} = require('@microsoft/app-manifest');"
              "let s = ''; process.stdin.on('data', d => s += d).on('end', () => "
              "AppManifestUtils.validateAgainstSchema(JSON.parse(s))"
              ".then(r => console.log(JSON.stringify(r))));")
    done = subprocess.run(["node", "-e", script], cwd=ROOT, input=json.dumps(manifest),
                          capture_output=True, text=True, timeout=60, check=True)
    errors: list[str] = json.loads(done.stdout)
    return errors


def run_package(tmp_path: Path, *argv: str,
                env_text: str = AZD_ENV) -> subprocess.CompletedProcess[str]:
    env_file = tmp_path / "azd.env"
    env_file.write_text(env_text)
    # A clean environment: nothing of the machine's (BOT_ID, AZURE_ENV_NAME) leaks in.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BOT_", "TEAMS_APP_", "AZURE_"))}
    return subprocess.run([sys.executable, "-m", "proactive", "package",
                           "--env-file", str(env_file), *argv],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def unzip(path: Path) -> tuple[list[str], dict[str, Any], zipfile.ZipFile]:
    archive = zipfile.ZipFile(path)
    return archive.namelist(), json.loads(archive.read("manifest.json")), archive


def test_package_from_azd_outputs_is_valid_for_the_official_validator(tmp_path: Path) -> None:
    out = tmp_path / "app.zip"
    done = run_package(tmp_path, "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["package"] == str(out)

    names, manifest, archive = unzip(out)
    assert sorted(names) == ["color.png", "manifest.json", "outline.png"]  # flat, nothing else
    assert manifest["bots"][0]["botId"] == BOT_ID
    assert manifest["bots"][0]["scopes"] == ["personal", "team", "groupChat"]
    # Teams sends read receipts only to an app that asks for this RSC permission.
    assert {"name": "ChatMessageReadReceipt.Read.Chat", "type": "Application"} in \
        manifest["authorization"]["permissions"]["resourceSpecific"]
    assert [c["title"] for c in manifest["bots"][0]["commandLists"][0]["commands"]] == \
        ["help", "stop", "start"]
    assert manifest["validDomains"] == [HOST]
    assert "webApplicationInfo" not in manifest  # a managed identity can't be named there
    assert manifest["developer"]["privacyUrl"] == "https://intranet.contoso.example/proactive"
    assert "${{" not in json.dumps(manifest)
    assert archive.read("color.png") == (ROOT / "appPackage" / "color.png").read_bytes()

    assert official_errors(manifest) == []
    assert check_zip(out.read_bytes())[1] == []  # and ours, on what was written


def test_the_teams_app_id_is_stable_per_bot_and_differs_between_bots(tmp_path: Path) -> None:
    source = ROOT / "appPackage"
    base = read_env_file(_write(tmp_path / "e", AZD_ENV))
    first, data = build(source, variables(base, {}, {}))
    again, data_again = build(source, variables(base, {}, {}))
    other_bot = {"BOT_ID": "2c5c4d2f-a4b1-4d7d-8e1f-4a3b8d2e6f21"}
    other, _ = build(source, variables(base, {}, other_bot))
    assert first["id"] == again["id"] != other["id"]
    assert data == data_again  # same inputs, same bytes: a rebuild changes nothing in Teams


def test_an_app_registration_gets_web_application_info(tmp_path: Path) -> None:
    values = variables(read_env_file(_write(tmp_path / "e", AZD_ENV +
                                            'BOT_APP_TYPE="SingleTenant"\n')), {}, {})
    manifest, _ = build(ROOT / "appPackage", values)
    assert manifest["webApplicationInfo"] == {"id": BOT_ID}
    assert official_errors(manifest) == []


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _broken_source(tmp_path: Path, edit_manifest: Any = None, color: Any = None,
                   outline: Any = None) -> Path:
    source = tmp_path / "appPackage"
    shutil.copytree(ROOT / "appPackage", source, ignore=shutil.ignore_patterns("build"))
    if edit_manifest:
        manifest = json.loads((source / "manifest.json").read_text())
        edit_manifest(manifest)
        (source / "manifest.json").write_text(json.dumps(manifest))
    if color:
        color().save(source / "color.png")
    if outline:
        outline().save(source / "outline.png")
    return source


def _without_privacy(m: dict[str, Any]) -> None:
    del m["developer"]["privacyUrl"]


def _with_unknown_bot_field(m: dict[str, Any]) -> None:
    m["bots"][0]["sendsSpam"] = True


def _with_named_colour(m: dict[str, Any]) -> None:
    m["accentColor"] = "blue"


def _on_old_schema(m: dict[str, Any]) -> None:
    m["manifestVersion"] = "1.18"  # never published
    m["$schema"] = m["$schema"].replace("v1.30", "v1.18")


def _opaque_outline() -> Any:
    return Image.new("RGBA", (32, 32), (255, 255, 255, 255))


def _coloured_outline() -> Any:
    image = Image.open(ROOT / "appPackage" / "outline.png").copy()
    image.putpixel((16, 16), (20, 120, 220, 255))
    return image


def _outline_without_alpha() -> Any:
    return Image.new("RGB", (32, 32), (255, 255, 255))


def _small_color() -> Any:
    return Image.open(ROOT / "appPackage" / "color.png").resize((96, 96))


BROKEN: dict[str, tuple[dict[str, Any], list[str], str]] = {
    "missing field": ({"edit_manifest": _without_privacy}, [], "$.developer.privacyUrl"),
    "bad bot id": ({}, ["--bot-id", "my-bot"], "$.bots[0].botId"),
    "unknown field": ({"edit_manifest": _with_unknown_bot_field}, [], "$.bots[0].sendsSpam"),
    "bad accent colour": ({"edit_manifest": _with_named_colour}, [], "$.accentColor"),
    "unpublished schema": ({"edit_manifest": _on_old_schema}, [], "$.manifestVersion"),
    "wrong icon size": ({"color": _small_color}, [], "$.icons.color: color.png is 96x96"),
    "non-transparent outline": ({"outline": _opaque_outline}, [],
                                "$.icons.outline: outline.png has no transparent background"),
    "coloured outline": ({"outline": _coloured_outline}, [],
                         "$.icons.outline: outline.png has 1 visible pixels that are not white"),
    "outline without alpha": ({"outline": _outline_without_alpha}, [],
                              "$.icons.outline: outline.png has colour type RGB"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_package_is_refused_naming_the_field(tmp_path: Path, case: str) -> None:
    edits, argv, expected = BROKEN[case]
    source = _broken_source(tmp_path, **edits)
    out = tmp_path / "out" / "app.zip"
    out.parent.mkdir()
    out.write_bytes(b"the package from last time")

    done = run_package(tmp_path, "--source", str(source), "--out", str(out), *argv)

    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert any(line.startswith(f"error: {expected}") for line in lines), done.stderr
    assert all(line.startswith("error: $") for line in lines), done.stderr  # no traceback
    assert out.read_bytes() == b"the package from last time"  # nothing written
    assert [p.name for p in out.parent.iterdir()] == ["app.zip"]  # no temp file left


def _with_bad_bot_id(m: dict[str, Any]) -> None:
    m["bots"][0]["botId"] = "my-bot"


@pytest.mark.parametrize("break_it", [_without_privacy, _with_bad_bot_id, _with_unknown_bot_field,
                                      _with_named_colour], ids=lambda f: f.__name__)
def test_the_official_validator_refuses_what_our_schema_check_refuses(
        tmp_path: Path, break_it: Any) -> None:
    values = variables(read_env_file(_write(tmp_path / "e", AZD_ENV)), {}, {})
    manifest = fill(json.loads((ROOT / "appPackage" / "manifest.json").read_text()), values,
                    [], [])
    deployment_parts(manifest, values)
    assert official_errors(manifest) == []  # the template filled is valid ...
    break_it(manifest)
    assert official_errors(manifest) != []  # ... and this break is what makes it invalid


def test_check_refuses_a_zip_with_a_folder_or_an_extra_file(tmp_path: Path) -> None:
    good = tmp_path / "good.zip"
    assert run_package(tmp_path, "--out", str(good)).returncode == 0
    with zipfile.ZipFile(good) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    nested = tmp_path / "nested.zip"
    with zipfile.ZipFile(nested, "w") as archive:
        for name, data in files.items():
            archive.writestr(f"appPackage/{name}", data)
    extra = tmp_path / "extra.zip"
    with zipfile.ZipFile(extra, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr("notes.txt", b"x")

    assert run_package(tmp_path, "--check", str(good)).returncode == 0
    for path, expected in ((nested, "error: package: no manifest.json at the zip's root"),
                           (extra, "error: package: the zip must hold exactly manifest.json "
                                   "and its icons; it also holds notes.txt")):
        done = run_package(tmp_path, "--check", str(path))
        assert done.returncode == 2
        assert done.stderr.startswith(expected) and done.stderr.count("\n") == 1, done.stderr


def test_missing_values_say_how_to_set_them(tmp_path: Path) -> None:
    done = run_package(tmp_path, "--out", str(tmp_path / "app.zip"), env_text="")
    assert done.returncode == 2
    assert "error: $.bots[0].botId: ${{BOT_ID}} has no value: pass --bot-id" in done.stderr
    assert "error: $.developer.websiteUrl: ${{TEAMS_APP_WEBSITE_URL}} has no value" \
        in done.stderr
    assert not (tmp_path / "app.zip").exists()


def test_azd_env_file_values_and_default_environment(tmp_path: Path) -> None:
    env = _write(tmp_path / ".env", 'A="x \\"q\\" \\\\ y"\nexport B=plain # note\n'
                 "C='single'\n# comment\nD=\n")
    assert read_env_file(env) == {"A": 'x "q" \\ y', "B": "plain", "C": "single", "D": ""}
    (tmp_path / ".azure" / "prod").mkdir(parents=True)
    (tmp_path / ".azure" / "config.json").write_text('{"version":1,"defaultEnvironment":"prod"}')
    (tmp_path / ".azure" / "prod" / ".env").write_text(AZD_ENV)
    assert default_env_file(tmp_path) == tmp_path / ".azure" / "prod" / ".env"
    # flags win over the environment, which wins over azd's file
    values = variables({"BOT_ID": "file", "BOT_DISPLAY_NAME": "Alerts"}, {"BOT_ID": "env"},
                       {"BOT_ID": "flag"})
    assert (values["BOT_ID"], values["TEAMS_APP_NAME"]) == ("flag", "Alerts")


def test_the_committed_icons_are_what_the_script_draws(tmp_path: Path) -> None:
    assert app_icons.main(["--out", str(tmp_path)]) == 0
    for name in ("color.png", "outline.png"):
        drawn = Image.open(tmp_path / name)
        committed = Image.open(ROOT / "appPackage" / name)
        assert (drawn.size, drawn.mode) == (committed.size, committed.mode)
        assert drawn.tobytes() == committed.tobytes(), name


def test_a_zip_that_is_not_a_zip_is_refused() -> None:
    with pytest.raises(PackageError, match="package: not a zip file"):
        check_zip(io.BytesIO(b"PK not really").getvalue())
