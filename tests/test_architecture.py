"""The layout the README describes holds: no import cycles inside the product,
the parts never import the router above them, nothing deployed is a dev tool,
and no product module grows past a size a newcomer can read.

These read the source (every import, also those inside functions, which is how
the package keeps cold start cheap), so a cycle hidden behind a lazy import is
found too.
"""

from __future__ import annotations

import ast
import fnmatch
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = "proactive"
# The router on top: it routes to the parts; no part imports it back.
TOP = {"proactive.worker", "proactive.triggers", "proactive.cli", "proactive.__main__"}
PARTS = ("proactive.receiving", "proactive.delivering", "proactive.scheduling",
         "proactive.teams", "proactive.storage")
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in (ROOT / PRODUCT).rglob("*.py")}


def _type_only(tree: ast.AST) -> set[int]:
    """The import statements under `if TYPE_CHECKING:` (names for annotations only)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in (
                "TYPE_CHECKING", "typing.TYPE_CHECKING"):
            found |= {id(inner) for stmt in node.body for inner in ast.walk(stmt)
                      if isinstance(inner, ast.Import | ast.ImportFrom)}
    return found


def _imports(name: str, path: Path, known: set[str], *,
             type_only: bool | None = None) -> set[str]:
    """The product modules `name` imports, anywhere in its source (type_only:
    only those under `if TYPE_CHECKING:`, or only the others)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    for_types = _type_only(tree) if type_only is not None else set()
    for node in ast.walk(tree):
        if type_only is not None and (id(node) in for_types) != type_only:
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from pkg import module` imports the module; `from mod import name` the module.
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    graph = {name: _imports(name, path, known) for name, path in modules.items()}
    # A package's __init__ may export its children's names (lazily): importing a
    # child runs the __init__ first, but that is how packages work, not a cycle.
    # Its imports of anything outside the package still count.
    for name, path in modules.items():
        if path.name == "__init__.py":
            graph[name] = {dep for dep in graph[name] if not dep.startswith(name + ".")}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_the_walker_sees_lazy_imports_and_cycles() -> None:
    # The checker itself: a cycle through a function-level import is found.
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]
    source = ROOT / "proactive" / "triggers.py"
    assert "proactive.runtime" in _imports("proactive.triggers", source, set(_modules()))


def test_the_product_has_no_import_cycle() -> None:
    assert _cycles(_graph()) == []


# The layers, from the ground up: a module imports only from its own layer or
# those below it, every import counted (at the top, inside a function, or for
# types only). Derived from the imports (farm-studio's floors): the ground;
# the contract (the message and its rules, pure data); teams/ (Teams' services
# and their rules, which config checks settings by); config; storage/; the
# parts; the runtime that composes them; and on top what routes to them and
# reads them.
LAYERS: tuple[frozenset[str], ...] = tuple(frozenset(layer) for layer in (
    {"proactive", "proactive.errors", "proactive.app_only", "proactive.hosting",
     "proactive.setting_ids", "proactive.telemetry", "proactive.users_file"},
    {"proactive.contract"},
    {"proactive.teams"},
    {"proactive.config"},
    {"proactive.storage"},
    {"proactive.scheduling", "proactive.delivering", "proactive.receiving"},
    {"proactive.runtime"},
    {"proactive.reporting", "proactive.worker", "proactive.triggers", "proactive.api",
     "proactive.cli", "proactive.__main__"},
))
# The parts are handed the runtime (`rt: Runtime`) that composes them: they may
# name its type (under `if TYPE_CHECKING:`), never run it.
TYPE_ONLY_FROM_BELOW = {"proactive.runtime"}


def _layer(name: str) -> int:
    for floor, layer in enumerate(LAYERS):
        if any(name == unit or (unit != PRODUCT and name.startswith(unit + "."))
               for unit in layer):
            return floor
    raise LookupError(name)


def _upward(modules: dict[str, Path]) -> list[str]:
    known = set(modules)
    found = []
    for name, path in modules.items():
        run = _imports(name, path, known, type_only=False)
        typed = _imports(name, path, known, type_only=True) - TYPE_ONLY_FROM_BELOW
        for dep in sorted(run | typed):
            if _layer(dep) > _layer(name):
                found.append(f"{name} -> {dep}")
    return found


def test_every_module_has_a_layer() -> None:
    unplaced = []
    for name in _modules():
        try:
            _layer(name)
        except LookupError:
            unplaced.append(name)
    assert unplaced == []


def test_the_layer_walker_sees_lazy_and_type_only_imports(tmp_path: Path) -> None:
    # The checker itself, on a made-up storage module: an upward import inside a
    # function is found, and so is one for types only; naming the runtime's
    # type is the one allowed.
    probe = tmp_path / "probe.py"
    probe.write_text("from typing import TYPE_CHECKING\n"
                     "if TYPE_CHECKING:\n"
                     "    from proactive.runtime import Runtime\n"
                     "    from proactive.delivering.outcomes import Outcome\n"
                     "def later() -> None:\n"
                     "    from proactive.api import routes\n")
    modules = {**_modules(), "proactive.storage.probe": probe}
    assert [arrow for arrow in _upward(modules) if arrow.startswith("proactive.storage.probe")] \
        == ["proactive.storage.probe -> proactive.api",  # its __init__ runs too
            "proactive.storage.probe -> proactive.api.routes",
            "proactive.storage.probe -> proactive.delivering.outcomes"]
    assert _layer("proactive") == _layer("proactive.errors") < _layer("proactive.teams.graph")


def test_no_layer_imports_one_above_it() -> None:
    assert _upward(_modules()) == []


@pytest.mark.parametrize("part", PARTS)
def test_no_part_imports_the_router_above_it(part: str) -> None:
    graph = _graph()
    offenders = {name: sorted(deps & TOP) for name, deps in graph.items()
                 if (name == part or name.startswith(part + ".")) and deps & TOP}
    assert offenders == {}


def _package_of(name: str, modules: dict[str, Path]) -> str:
    path = modules.get(name)
    return name if path is not None and path.name == "__init__.py" else name.rpartition(".")[0]


def test_no_module_takes_another_packages_private_names() -> None:
    # `_name` is private to its package: its own modules may share it (rrules'
    # helpers in scheduling, cli.storage's in cli); another package may not.
    modules = _modules()
    offenders = []
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or not node.module or node.level:
                continue
            if _package_of(node.module, modules) == _package_of(name, modules):
                continue
            offenders += [f"{name}: {node.module}.{alias.name}" for alias in node.names
                          if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert offenders == []


# Imports of the dev tools the product may make, each inside a function that says
# what to do when they are missing (a deployed app has no proactive_devtools/).
GUARDED_DEV_IMPORTS = {
    "proactive/cli/__init__.py": {"proactive_devtools"},  # host, emulator, dev, package
    # doctor's package check: ✗ "run doctor from a clone" without them
    "proactive/cli/doctor_checks.py": {"proactive_devtools.app_package",
                                      "proactive_devtools.manifest_check"},
}


def test_the_product_never_imports_the_dev_tools() -> None:
    offenders = []
    for path in (ROOT / PRODUCT).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n.split(".")[0] in ("proactive_devtools", "tests", "benchmarks")
                   for n in names):
                where = path.relative_to(ROOT).as_posix()
                if set(names) <= GUARDED_DEV_IMPORTS.get(where, set()):
                    continue
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def _deployed_files() -> list[str]:
    """What `func azure functionapp publish` / azd would package: the tracked
    files that .funcignore does not leave out (gitignore-style patterns)."""
    patterns = [line.strip() for line in (ROOT / ".funcignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()

    def ignored(path: str) -> bool:
        parts = path.split("/")
        for pattern in patterns:
            pattern = pattern.rstrip("/")
            if "/" in pattern.lstrip("/"):
                if fnmatch.fnmatch(path, pattern.lstrip("/")) or path.startswith(
                        pattern.lstrip("/") + "/"):
                    return True
            elif any(fnmatch.fnmatch(part, pattern) for part in parts):
                return True
        return False

    return [path for path in tracked if not ignored(path)]


def test_the_deployment_holds_the_app_and_no_dev_tool() -> None:
    deployed = _deployed_files()
    assert {"function_app.py", "host.json", "requirements.txt",
            "proactive/worker.py"} <= set(deployed)
    dev = [p for p in deployed if p.startswith(("proactive_devtools/", "tests/", "benchmarks/",
                                                "scripts/", "node_modules/", ".ci/"))
           or p in ("package.json", "package-lock.json", "requirements-dev.txt",
                    "local.settings.example.json")]
    assert dev == []


def test_no_product_module_is_too_long_to_read() -> None:
    long = {name: n for name, path in _modules().items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}
