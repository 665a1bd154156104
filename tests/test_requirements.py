"""What Azure installs is fully pinned, hashed, generated from requirements.in, and
the same set the tests run with.

requirements.in lists what the product imports directly; `scripts/lock` (uv pip
compile --universal --generate-hashes) turns it into requirements.txt, which the
remote build installs, and requirements-dev.in into requirements-dev.txt with the
app's pins as constraints. These tests fail when the files drift apart, when the
code imports a distribution the input doesn't list, or when the venv the tests run
in holds other versions than the lock.
"""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Pin:
    requirement: Requirement
    hashes: list[str] = field(default_factory=list)
    via: list[str] = field(default_factory=list)


def read_lock(path: Path) -> dict[str, Pin]:
    """The entries of a file uv pip compile wrote: pin, hashes and `# via` lines."""
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    in_via = False
    for line in path.read_text().splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            current = Pin(Requirement(line.rstrip(" \\")))
            pins[canonicalize_name(current.requirement.name)] = current
            in_via = False
        elif current is not None and (m := re.match(r"\s+--hash=(sha256:[0-9a-f]{64})", line)):
            current.hashes.append(m.group(1))
        elif current is not None and re.match(r"\s+# via\b", line):
            in_via = True
            rest = line.split("# via", 1)[1].strip()
            if rest:
                current.via.append(rest)
        elif current is not None and in_via and (m := re.match(r"\s+#\s+(\S.*)", line)):
            current.via.append(m.group(1).split(" ")[0] if not m.group(1).startswith("-")
                               else m.group(1))
    return pins


def read_input(path: Path) -> dict[str, Requirement]:
    reqs: dict[str, Requirement] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            req = Requirement(line)
            reqs[canonicalize_name(req.name)] = req
    return reqs


def _version(req: Requirement) -> str:
    (spec,) = req.specifier
    assert spec.operator == "==", req
    return spec.version


def lock_problems(root: Path) -> list[str]:
    """How requirements.in / .txt and requirements-dev.in / .txt disagree; empty when none."""
    problems = []
    app_in = read_input(root / "requirements.in")
    dev_in = read_input(root / "requirements-dev.in")
    app, dev = read_lock(root / "requirements.txt"), read_lock(root / "requirements-dev.txt")
    for name, req in app_in.items():
        if name not in app:
            problems.append(f"requirements.txt: {name} (in requirements.in) is missing")
        elif _version(app[name].requirement) != _version(req):
            problems.append(f"requirements.txt: {name}=={_version(app[name].requirement)}, "
                            f"requirements.in says {_version(req)}")
    for name, req in dev_in.items():
        if name in dev and _version(dev[name].requirement) != _version(req):
            problems.append(f"requirements-dev.txt: {name} is not the pin requirements-dev.in "
                            f"asks for ({_version(req)})")
        elif name not in dev:
            problems.append(f"requirements-dev.txt: {name} (in requirements-dev.in) is missing")
    for file, lock, inputs, source in (("requirements.txt", app, app_in, "-r requirements.in"),
                                       ("requirements-dev.txt", dev, app_in | dev_in, None)):
        for name, pin in lock.items():
            if not pin.hashes:
                problems.append(f"{file}: {name} has no hash")
            if not pin.via:
                problems.append(f"{file}: {name} says nothing of why it is there")
            for why in pin.via:
                if why.startswith("-r ") and (source is None or why == source):
                    if name not in inputs:
                        problems.append(f"{file}: {name} comes from {why[3:]}, "
                                        f"which no longer lists it")
                elif not why.startswith("-") and canonicalize_name(why) not in lock:
                    problems.append(f"{file}: {name} is there for {why}, which is not")
    for name, pin in app.items():
        if name not in dev:
            problems.append(f"requirements-dev.txt: lacks {name}, which Azure installs")
        elif str(dev[name].requirement.specifier) != str(pin.requirement.specifier):
            problems.append(f"requirements-dev.txt: {name}{dev[name].requirement.specifier}, "
                            f"Azure installs {name}{pin.requirement.specifier}")
    header = (root / "requirements.txt").read_text().splitlines()[:2]
    if not header[-1].strip("# ").startswith("uv pip compile requirements.in --universal "
                                             "--generate-hashes"):
        problems.append(f"requirements.txt: not generated from requirements.in: {header}")
    return problems


def test_the_locks_agree_with_their_inputs() -> None:
    assert lock_problems(ROOT) == []


DRIFTS = {
    "a pin changed in the input only": (
        "requirements.in", "httpx==0.28.1", "httpx==0.28.0", "requirements.in says 0.28.0"),
    "a dependency dropped from the input only": (
        "requirements.in", "rich==15.0.0\n", "", "which no longer lists it"),
    "a dependency added to the input only": (
        "requirements.in", "rich==15.0.0\n", "rich==15.0.0\nwheel==0.45.1\n", "is missing"),
    "an unhashed entry": ("requirements.txt", "    --hash=sha256:", "    # --hash=sha256:",
                          "has no hash"),
    "tests on another version than Azure": (
        "requirements-dev.txt", "\nhttpx==0.28.1 \\", "\nhttpx==0.28.0 \\",
        "Azure installs httpx==0.28.1"),
}


def test_each_drift_is_caught(tmp_path: Path) -> None:
    for label, (file, old, new, expected) in DRIFTS.items():
        copy = tmp_path / label.replace(" ", "-")
        copy.mkdir()
        for name in ("requirements.in", "requirements.txt", "requirements-dev.in",
                     "requirements-dev.txt"):
            (copy / name).write_text((ROOT / name).read_text())
        text = (copy / file).read_text()
        assert old in text, (label, old)
        (copy / file).write_text(text.replace(old, new, 1) if "hash" not in old
                                 else re.sub(r"(\n    )--hash=sha256:\S+ *\\?", r"\1# gone", text))
        problems = lock_problems(copy)
        assert any(expected in p for p in problems), (label, problems)


def _distribution_of(module: str, owners: Mapping[str, str]) -> str:
    """The distribution that installs `module`, by the files each one installs, so a
    namespace (azure.*, opentelemetry.*) resolves to the one that owns the sub-package."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        base = "/".join(parts[:n])
        for candidate in (f"{base}/__init__.py", f"{base}.py"):
            if candidate in owners:
                return owners[candidate]
    return f"<no installed distribution has {module}>"


def _imported_distributions() -> dict[str, set[str]]:
    """Third-party distributions the product imports, with the files that import them."""
    owners = {str(f): canonicalize_name(d.metadata["Name"])
              for d in metadata.distributions() for f in (d.files or [])
              if str(f).endswith(".py")}
    found: dict[str, set[str]] = {}
    for path in [ROOT / "function_app.py", *(ROOT / "proactive").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # `from opentelemetry import trace`: the name may be the sub-package.
                modules = [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top in ("proactive", "proactive_devtools"):
                    continue
                found.setdefault(_distribution_of(module, owners), set()).add(
                    path.relative_to(ROOT).as_posix())
    return found


def test_every_distribution_the_product_imports_is_listed_in_requirements_in() -> None:
    listed = set(read_input(ROOT / "requirements.in"))
    missing = {d: sorted(files) for d, files in _imported_distributions().items()
               if d not in listed}
    assert missing == {}, f"imported but not in requirements.in: {missing}"


def test_the_tests_run_on_the_versions_azure_installs() -> None:
    wrong = {}
    for name, pin in read_lock(ROOT / "requirements.txt").items():
        if pin.requirement.marker and not pin.requirement.marker.evaluate():
            continue
        installed = metadata.version(name)
        if installed != _version(pin.requirement):
            wrong[name] = (installed, _version(pin.requirement))
    assert wrong == {}, f"installed vs locked (run scripts/setup): {wrong}"
