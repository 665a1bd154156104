"""`python -m proactive package`: the Teams app package to upload, from appPackage/.

    python -m proactive package [--bot-id ID] [--out FILE] [--env-file F] [--source DIR]
    python -m proactive package --check FILE.zip

appPackage/manifest.json holds `${{NAME}}` placeholders (the Agents Toolkit's
syntax). They are filled from, first to last: the flags, the environment, and
azd's environment file (`--env-file`, default `.azure/<default env>/.env`, which
`azd up` writes with the Bicep outputs: BOT_ID, BOT_MESSAGING_ENDPOINT, ...):

    BOT_ID                    the bot's app id (azd output; or --bot-id)
    TEAMS_APP_WEBSITE_URL     https page about the app for its users (required)
    TEAMS_APP_PRIVACY_URL     default: TEAMS_APP_WEBSITE_URL
    TEAMS_APP_TERMS_URL       default: TEAMS_APP_WEBSITE_URL
    TEAMS_APP_NAME            default: BOT_DISPLAY_NAME, else "proactive"
    TEAMS_APP_DEVELOPER_NAME  default: TEAMS_APP_NAME
    TEAMS_APP_VERSION         default 1.0.0; raise it for each upload of a change
    TEAMS_APP_ID              default: derived from BOT_ID (stable per bot)

Two parts depend on the deployment and are added here: the app's host
(from BOT_MESSAGING_ENDPOINT) to `validDomains`, and `webApplicationInfo`
when the bot is an app registration (BOT_APP_TYPE SingleTenant), which Graph's
`...Self...` install permissions need; a managed identity can't be named there.

The package is checked (proactive_devtools/manifest_check.py) before anything
is written; a problem is one line naming the field, and exit code 2.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import sys
import tempfile
import uuid
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from proactive.cli.azd import parse_env

from .manifest_check import (
    GUID,
    MANIFEST,
    ROOT,
    PackageError,
    Problem,
    check_package,
    check_zip,
    icon_files,
    json_path,
    parse_manifest,
)

PLACEHOLDER = re.compile(r"\$\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
# Teams app ids derived from bot ids live under this namespace (uuid5), so one
# bot keeps one Teams app id across builds, and two deployments never share one.
APP_ID_NAMESPACE = uuid.UUID("5b0c1f6e-3f7a-4c59-9a8e-6d1f0e2b7c41")
APP_REGISTRATION_TYPES = ("SingleTenant", "MultiTenant")
HINTS = {
    "BOT_ID": "pass --bot-id, or run `azd up` first (it writes BOT_ID to azd's environment)",
    "TEAMS_APP_WEBSITE_URL": "the https page that tells your users about the app: "
                             "`azd env set TEAMS_APP_WEBSITE_URL https://...`",
    "TEAMS_APP_ID": "it follows from BOT_ID (or set TEAMS_APP_ID)",
    "TEAMS_APP_PRIVACY_URL": "it follows from TEAMS_APP_WEBSITE_URL (or set it)",
    "TEAMS_APP_TERMS_URL": "it follows from TEAMS_APP_WEBSITE_URL (or set it)",
}
# 1980-01-01, the oldest time a zip can hold: the same inputs give the same bytes.
ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def read_env_file(path: Path) -> dict[str, str]:
    """A dotenv file as azd writes it (proactive/cli/azd.py reads the format)."""
    return parse_env(path.read_text(encoding="utf-8-sig"))


def default_env_file(root: Path = ROOT) -> Path | None:
    """azd's current environment's file: .azure/<defaultEnvironment>/.env."""
    name = os.environ.get("AZURE_ENV_NAME", "")
    if not name:
        try:
            name = json.loads((root / ".azure" / "config.json").read_text()).get(
                "defaultEnvironment", "")
        except (OSError, ValueError):
            return None
    path = root / ".azure" / name / ".env"
    return path if name and path.is_file() else None


def variables(file_values: Mapping[str, str], environ: Mapping[str, str],
              flags: Mapping[str, str]) -> dict[str, str]:
    """The placeholder values: flags over the environment over azd's file, with
    the defaults the module docstring lists."""
    values = {**file_values, **environ, **{k: v for k, v in flags.items() if v}}
    values = {name: value for name, value in values.items() if value != ""}
    values.setdefault("TEAMS_APP_VERSION", "1.0.0")
    values.setdefault("TEAMS_APP_NAME", values.get("BOT_DISPLAY_NAME", "proactive"))
    values.setdefault("TEAMS_APP_DEVELOPER_NAME", values["TEAMS_APP_NAME"])
    if "TEAMS_APP_WEBSITE_URL" in values:
        values.setdefault("TEAMS_APP_PRIVACY_URL", values["TEAMS_APP_WEBSITE_URL"])
        values.setdefault("TEAMS_APP_TERMS_URL", values["TEAMS_APP_WEBSITE_URL"])
    bot_id = values.get("BOT_ID", "")
    if GUID.match(bot_id):
        values.setdefault("TEAMS_APP_ID", str(uuid.uuid5(APP_ID_NAMESPACE, bot_id.lower())))
    return values


def fill(node: Any, values: Mapping[str, str], path: list[Any],
         problems: list[Problem]) -> Any:
    """`node` with every `${{NAME}}` replaced; a name with no value is a problem."""
    if isinstance(node, dict):
        return {key: fill(value, values, [*path, key], problems) for key, value in node.items()}
    if isinstance(node, list):
        return [fill(value, values, [*path, i], problems) for i, value in enumerate(node)]
    if not isinstance(node, str):
        return node

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in values:
            return values[name]
        hint = HINTS.get(name, f"set {name} (in the environment or azd's: `azd env set {name} "
                               "...`)")
        problems.append(Problem(json_path(path), f"${{{{{name}}}}} has no value: {hint}"))
        return match.group(0)

    return PLACEHOLDER.sub(one, node)


def deployment_parts(manifest: dict[str, Any], values: Mapping[str, str]) -> list[Problem]:
    """validDomains and webApplicationInfo, from where and how the bot is deployed."""
    endpoint = values.get("BOT_MESSAGING_ENDPOINT", "")
    if endpoint:
        url = urlsplit(endpoint)
        if url.scheme != "https" or not url.hostname:
            return [Problem("$.validDomains", f"BOT_MESSAGING_ENDPOINT {endpoint!r} is not "
                            "an https URL")]
        domains = manifest.setdefault("validDomains", [])
        if isinstance(domains, list) and url.hostname not in domains:
            domains.append(url.hostname)
    app_type = values.get("BOT_APP_TYPE", "UserAssignedMSI")
    if app_type in APP_REGISTRATION_TYPES and "webApplicationInfo" not in manifest:
        manifest["webApplicationInfo"] = {"id": values.get("BOT_ID", "")}
    return []


def build(source: Path, values: Mapping[str, str]) -> tuple[dict[str, Any], bytes]:
    """The filled manifest and the zip's bytes, checked; PackageError if not valid."""
    try:
        template = (source / MANIFEST).read_bytes()
    except OSError as exc:
        raise PackageError([Problem(MANIFEST, f"can't read {source / MANIFEST} "
                                    f"({exc.strerror})")]) from exc
    problems: list[Problem] = []
    manifest = fill(parse_manifest(template, MANIFEST), values, [], problems)
    problems += deployment_parts(manifest, values)
    icons = icon_files(manifest)
    files = {name: _read(source, name) for name in icons.values()}
    seen = {p.path for p in problems}
    problems += [p for p in check_package(manifest, files) if p.path not in seen]
    if problems:
        raise PackageError(problems)
    data = _zip(manifest, {name: content for name, content in files.items() if content})
    _, again = check_zip(data)  # what Teams will read: the file list, and all of it again
    if again:
        raise PackageError(again)
    return manifest, data


def _read(source: Path, name: str) -> bytes | None:
    if "/" in name or "\\" in name or name in ("", ".", ".."):
        return None  # check_icon names the problem
    try:
        return (source / name).read_bytes()
    except OSError:
        return None


def _zip(manifest: dict[str, Any], icons: Mapping[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        entries = [(MANIFEST, (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
                    .encode()), *sorted(icons.items())]
        for name, content in entries:
            info = zipfile.ZipInfo(name, ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, content)
    return buffer.getvalue()


def write(path: Path, data: bytes) -> None:
    """All or nothing: a half-written package never replaces a good one."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.",
                                         delete=False) as tmp:
            tmp.write(data)
        os.replace(tmp.name, path)
    except OSError as exc:
        raise PackageError([Problem("--out", f"can't write {path} ({exc.strerror})")]) from exc


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m proactive package", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bot-id", default="", help="the bot's app id (default: BOT_ID)")
    parser.add_argument("--out", type=Path, help="the zip to write (default: appPackage/"
                                                 "build/appPackage.<azd env>.zip)")
    parser.add_argument("--env-file", type=Path, help="azd's environment file (default: "
                                                      ".azure/<default environment>/.env)")
    parser.add_argument("--source", type=Path, default=ROOT / "appPackage",
                        help="folder with manifest.json and the icons (default: appPackage/)")
    parser.add_argument("--check", type=Path, metavar="ZIP",
                        help="check a built package instead of building one")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.check:
            return _check(args.check)
        env_file = args.env_file or default_env_file()
        file_values: dict[str, str] = {}
        if env_file is not None:
            try:
                file_values = read_env_file(env_file)
            except OSError as exc:
                raise PackageError([Problem("--env-file", f"can't read {env_file} "
                                            f"({exc.strerror})")]) from exc
        values = variables(file_values, os.environ, {"BOT_ID": args.bot_id})
        manifest, data = build(args.source, values)
        out = args.out or (ROOT / "appPackage" / "build" /
                           f"appPackage.{values.get('AZURE_ENV_NAME', 'local')}.zip")
        write(out, data)
    except PackageError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    bots = manifest.get("bots") or [{}]
    print(json.dumps({"package": str(out), "teamsAppId": manifest.get("id"),
                      "botId": bots[0].get("botId"),
                      "manifestVersion": manifest["manifestVersion"],
                      "envFile": str(env_file) if env_file else None}))
    return 0


def _check(path: Path) -> int:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PackageError([Problem("--check", f"can't read {path} ({exc.strerror})")]) from exc
    manifest, problems = check_zip(data)
    if problems:
        raise PackageError(problems)
    print(json.dumps({"valid": str(path), "teamsAppId": manifest.get("id"),
                      "manifestVersion": manifest.get("manifestVersion")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
