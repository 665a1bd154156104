"""Checks a Teams app package: the manifest against the official JSON Schema of
its `manifestVersion`, and what the schema can't say.

The schemas are the ones the npm package `@microsoft/app-manifest` ships
(node_modules/, a dev dependency), read from disk: every `$ref` in them is
local, and the registry below refuses to fetch anything. They declare draft-04
but use `const` and `if`/`then` (draft-06/07): the Toolkit's own validator
(ajv-draft-04) applies those keywords, so this one does too, and checks the
formats ajv is given (uri, email, regex).

Beyond the schema: the ids are GUIDs, `version` is semver, each icon is a PNG
of the right size and colour type beside manifest.json, the outline is white on
transparent, and the zip holds exactly manifest.json and the two icons, at its
root.

Every problem is a `Problem(path, text)`, `path` a JSON path into the manifest
(`$.bots[0].botId`): the command prints one line per problem.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "node_modules" / "@microsoft" / "app-manifest" / "build" / "json-schemas" / "teams"
SCHEMA_URL = "https://developer.microsoft.com/json-schemas/teams/v{}/MicrosoftTeams.schema.json"
MANIFEST = "manifest.json"
# Teams' icon rules: (width, height) and the PNG modes accepted (Pillow's names).
ICONS = {"color": ((192, 192), ("RGB", "RGBA")), "outline": ((32, 32), ("RGBA",)),
         "color32x32": ((32, 32), ("RGBA",))}
GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
                    r"(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$")


@dataclass(frozen=True)
class Problem:
    path: str  # a JSON path into the manifest ("$" for the whole), or a file name
    text: str

    def __str__(self) -> str:
        return f"{self.path}: {self.text}"


class PackageError(Exception):
    """The package can't be built or is not valid; `problems` say where and why."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(map(str, problems)))
        self.problems = problems


def json_path(parts: Any) -> str:
    out = "$"
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_$][A-Za-z0-9_$]*", part):
            out += f".{part}"
        else:
            out += f"[{json.dumps(part)}]"
    return out


def shipped_versions() -> list[str]:
    versions = [p.name[1:] for p in SCHEMAS.glob("v[0-9]*") if (p / "MicrosoftTeams.schema.json")
                .is_file()]
    return sorted(versions, key=lambda v: tuple(int(n) for n in v.split(".")))


def load_schema(manifest: dict[str, Any]) -> dict[str, Any]:
    """The official schema for the manifest's `manifestVersion`."""
    if not SCHEMAS.is_dir():
        raise PackageError([Problem("schemas", "the official Teams manifest schemas are not "
                                    "installed: run `npm ci` (package @microsoft/app-manifest)")])
    version = manifest.get("manifestVersion")
    if not isinstance(version, str) or not re.fullmatch(r"\d+\.\d+", version):
        raise PackageError([Problem("$.manifestVersion", "missing or not a version like '1.30'")])
    path = SCHEMAS / f"v{version}" / "MicrosoftTeams.schema.json"
    if not path.is_file():
        shipped = shipped_versions()
        raise PackageError([Problem("$.manifestVersion", f"{version!r} has no official schema "
                                    f"(installed: {shipped[0]} to {shipped[-1]})")])
    declared = manifest.get("$schema")
    if declared is not None and declared != SCHEMA_URL.format(version):
        raise PackageError([Problem("$.$schema", f"should be {SCHEMA_URL.format(version)} "
                                    f"for manifestVersion {version}")])
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8-sig"))
    return schema


def _python_regex(pattern: str) -> str:
    r"""ECMAScript's `\p{L}` (any letter), which Python's `re` lacks, as
    `[^\W\d_]`; one schema pattern (extension function names) uses it."""
    def in_class(match: re.Match[str]) -> str:
        rest = match.group(1) + match.group(2)
        return rf"(?:[^\W\d_]|[{rest}])" if rest else r"[^\W\d_]"

    pattern = re.sub(r"\[([^\]]*?)\\p\{L\}([^\]]*)\]", in_class, pattern)
    return pattern.replace(r"\p{L}", r"[^\W\d_]")


def _validator(schema: dict[str, Any]) -> Any:
    from jsonschema import Draft4Validator, Draft7Validator, FormatChecker, validators
    from jsonschema.exceptions import ValidationError
    from referencing import Registry
    from referencing.exceptions import NoSuchResource

    def pattern(validator: Any, patrn: str, instance: Any, _schema: Any) -> Iterator[Any]:
        if validator.is_type(instance, "string") and not re.search(_python_regex(patrn),
                                                                  instance):
            yield ValidationError(f"{instance!r} does not match {patrn!r}")

    def offline(uri: str) -> Any:
        # The schemas are self-contained: never fetch. (referencing's classes are
        # made by attrs, whose __init__ mypy can't see.)
        raise NoSuchResource(ref=uri)  # type: ignore[call-arg]

    keywords = {"const": Draft7Validator.VALIDATORS["const"],
                "if": Draft7Validator.VALIDATORS["if"], "pattern": pattern}
    cls = validators.extend(Draft4Validator, keywords)
    formats = FormatChecker(formats=())

    @formats.checks("uri")
    def uri(value: object) -> bool:  # absolute, as ajv-formats' "uri"
        return not isinstance(value, str) or bool(
            re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s]*", value))

    @formats.checks("email")
    def email(value: object) -> bool:
        return not isinstance(value, str) or bool(re.fullmatch(r"[^\s@]+@[^\s@]+\.[^\s@]+",
                                                               value))

    @formats.checks("regex", raises=re.error)
    def regex(value: object) -> bool:
        if isinstance(value, str):
            re.compile(_python_regex(value))
        return True

    # Every $ref in these schemas is local ("#/definitions/..."): anything else fails.
    registry = Registry(retrieve=offline)  # type: ignore[call-arg]
    return cls(schema, registry=registry, format_checker=formats)


def _schema_problem(error: Any) -> Problem:
    from jsonschema.exceptions import best_match

    if error.context:  # anyOf / oneOf: the branch that came closest says more
        error = best_match(error.context)
    parts = list(error.absolute_path)
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else "?"
        return Problem(json_path([*parts, missing]), "missing (required)")
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = set(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - known)
        return Problem(json_path([*parts, extra[0]] if extra else parts),
                       "not a field of this manifest version")
    if error.validator == "const":
        return Problem(json_path(parts), f"must be {error.validator_value!r}")
    return Problem(json_path(parts), error.message)


def check_schema(manifest: dict[str, Any]) -> list[Problem]:
    validator = _validator(load_schema(manifest))
    errors = sorted(validator.iter_errors(manifest), key=lambda e: list(map(str, e.path)))
    return [_schema_problem(error) for error in errors]


def check_fields(manifest: dict[str, Any]) -> list[Problem]:
    """What the schema leaves open or says only as a pattern, said plainly."""
    problems = []
    ids: list[tuple[list[Any], Any]] = [(["id"], manifest.get("id"))]
    ids += [(["bots", i, "botId"], bot.get("botId"))
            for i, bot in enumerate(manifest.get("bots") or []) if isinstance(bot, dict)]
    app = manifest.get("webApplicationInfo")
    if isinstance(app, dict):
        ids.append((["webApplicationInfo", "id"], app.get("id")))
    for parts, value in ids:
        if value is not None and not (isinstance(value, str) and GUID.match(value)):
            problems.append(Problem(json_path(parts), f"{value!r} is not a GUID "
                                    "(8-4-4-4-12 hexadecimal digits)"))
    version = manifest.get("version")
    if isinstance(version, str) and not SEMVER.match(version):
        problems.append(Problem("$.version", f"{version!r} is not a semantic version "
                                "(MAJOR.MINOR.PATCH, e.g. 1.0.0)"))
    return problems


def icon_files(manifest: dict[str, Any]) -> dict[str, str]:
    icons = manifest.get("icons")
    return ({key: name for key, name in icons.items() if key in ICONS and isinstance(name, str)}
            if isinstance(icons, dict) else {})


def check_icon(key: str, name: str, data: bytes | None) -> list[Problem]:
    """One icon's file: a plain name at the package root, a PNG of Teams' size and
    colour type; the outline white on a transparent background."""
    from PIL import Image, UnidentifiedImageError

    where = json_path(["icons", key])
    if not name or "/" in name or "\\" in name or name in (".", "..", MANIFEST):
        return [Problem(where, f"{name!r} must be a file name beside manifest.json "
                        "(the package has no folders)")]
    if data is None:
        return [Problem(where, f"{name} not found beside manifest.json")]
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError) as exc:
        return [Problem(where, f"{name} is not a readable image ({exc})")]
    (width, height), modes = ICONS[key]
    if image.format != "PNG":
        return [Problem(where, f"{name} is {image.format}, not PNG")]
    if image.size != (width, height):
        return [Problem(where, f"{name} is {image.size[0]}x{image.size[1]} pixels; "
                        f"Teams wants {width}x{height}")]
    if image.mode not in modes:
        return [Problem(where, f"{name} has colour type {image.mode}; Teams wants "
                        f"{' or '.join(modes)}" + (" (an alpha channel)" if key != "color"
                                                   else ""))]
    if key != "outline":
        return []
    raw = image.tobytes()  # RGBA, row by row
    pixels = [tuple(raw[i:i + 4]) for i in range(0, len(raw), 4)]
    corners = [pixels[0], pixels[width - 1], pixels[-width], pixels[-1]]
    if any(pixel[3] for pixel in corners):
        return [Problem(where, f"{name} has no transparent background (its corners are "
                        "opaque); Teams wants a white outline on transparent")]
    visible = [(i, p) for i, p in enumerate(pixels) if p[3]]
    if not visible:
        return [Problem(where, f"{name} is fully transparent")]
    coloured = [(i, p) for i, p in visible if p[:3] != (255, 255, 255)]
    if coloured:
        i, pixel = coloured[0]
        return [Problem(where, f"{name} has {len(coloured)} visible pixels that are not "
                        f"white, the first at ({i % width}, {i // width}): RGBA {pixel}; "
                        "Teams wants white on transparent")]
    return []


def check_package(manifest: dict[str, Any], files: dict[str, bytes | None]) -> list[Problem]:
    """All the checks: `files` maps each icon name the manifest gives to its bytes
    (None: not there)."""
    problems = check_fields(manifest)
    seen = {p.path for p in problems}
    problems += [p for p in check_schema(manifest) if p.path not in seen]
    icons = icon_files(manifest)
    for key, name in icons.items():
        problems += check_icon(key, name, files.get(name))
    names = list(icons.values())
    if len(set(names)) != len(names):
        problems.append(Problem("$.icons", "each icon must be its own file"))
    return problems


def check_zip(data: bytes) -> tuple[dict[str, Any], list[Problem]]:
    """A built package: exactly manifest.json and its icons at the root, all valid."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise PackageError([Problem("package", f"not a zip file ({exc})")]) from exc
    with archive:
        names = archive.namelist()
        if MANIFEST not in names:
            raise PackageError([Problem("package", "no manifest.json at the zip's root "
                                        f"(it holds {', '.join(names) or 'nothing'})")])
        manifest = parse_manifest(archive.read(MANIFEST), MANIFEST)
        icons = icon_files(manifest)
        problems = check_package(manifest, {name: archive.read(name) if name in names else None
                                            for name in icons.values()})
        expected = {MANIFEST, *icons.values()}
        extra = sorted(set(names) - expected)
        if extra or len(names) != len(set(names)):
            problems.append(Problem("package", "the zip must hold exactly manifest.json and "
                                    f"its icons; it also holds {', '.join(extra) or 'duplicates'}"))
    return manifest, problems


def parse_manifest(data: bytes, name: str) -> dict[str, Any]:
    try:
        manifest = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise PackageError([Problem(name, f"not UTF-8 text ({exc.reason})")]) from exc
    except json.JSONDecodeError as exc:
        raise PackageError([Problem(name, f"not JSON: {exc.msg} at line {exc.lineno}, "
                                    f"column {exc.colno}")]) from exc
    if not isinstance(manifest, dict):
        raise PackageError([Problem("$", "the manifest must be a JSON object")])
    return manifest
