"""The package `azd deploy` uploads holds the app and nothing a local run leaves behind.

`deploy_zip` builds the zip the way azd does (azure-dev, cli/azd/pkg/project,
`createDeployableZip`): it walks the service folder, always skips `.azure/`, the ignore
file itself and (for Functions) `local.settings.json`, and applies `.funcignore` with
gitignore rules (go-gitignore there, pathspec's GitIgnoreSpec here). With a
`.funcignore`, azd's own defaults (`__pycache__`, `.venv`) no longer apply, which is
how a deploy zip grew from 0.65 MB to 20 MB after a test run. The tree it packs is a
copy of the tracked files plus every cache and local folder the dev tools leave.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pathspec

ROOT = Path(__file__).resolve().parents[1]
# Well above what the app needs (about 0.25 MB), well below one cache left in (MBs).
MAX_ZIP_BYTES = 1_500_000

# What a checkout holds after `scripts/setup`, a test run, ruff, mypy, the local host,
# azd and the Teams package build: (path, size in bytes).
LEFT_BEHIND = {
    ".venv/pyvenv.cfg": 100,
    ".venv/lib/python3.11/site-packages/big.so": 3_000_000,
    ".mypy_cache/3.11/proactive/worker.data.json": 2_000_000,
    ".pytest_cache/v/cache/nodeids": 50_000,
    ".ruff_cache/0.17.6/123": 50_000,
    ".hypothesis/examples/ab/cd": 200_000,
    "proactive/__pycache__/worker.cpython-311.pyc": 200_000,
    "proactive/storage/__pycache__/tables.cpython-312.pyc": 100_000,
    "__pycache__/function_app.cpython-311.pyc": 10_000,
    "node_modules/azurite/dist/index.js": 2_000_000,
    ".azurite/__azurite_db_queue__.json": 100_000,
    ".dev/pip.stamp": 20,
    ".dev/localhost.log": 500_000,
    ".azure/dev/.env": 500,
    "appPackage/build/appPackage.dev.zip": 20_000,
    "local.settings.json": 500,
    ".coverage": 50_000,
    "htmlcov/index.html": 50_000,
    "proactive.egg-info/PKG-INFO": 1_000,
    ".vscode/settings.json": 100,
}


def deploy_zip(root: Path, out: Path) -> list[str]:
    """Zip `root` as azd does for a Functions service; the archive's file names."""
    ignore_file = ".funcignore"
    ignorer = None
    if (root / ignore_file).exists():
        ignorer = pathspec.GitIgnoreSpec.from_lines(
            (root / ignore_file).read_text(encoding="utf-8-sig").splitlines())

    def keep(path: Path, is_dir: bool) -> bool:
        name, relative = path.name, path.relative_to(root).as_posix()
        if (name == ".azure" and is_dir) or (name in (ignore_file, "local.settings.json")
                                             and not is_dir):
            return False
        if ignorer is not None:
            return not ignorer.match_file(relative + ("/" if is_dir else ""))
        # azd's defaults, without an ignore file: a venv (pyvenv.cfg) and __pycache__.
        return not (is_dir and ((path / "pyvenv.cfg").exists() or name.lower() == "__pycache__"))

    names = []
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for folder, dirs, files in os.walk(root):
            here = Path(folder)
            dirs[:] = sorted(d for d in dirs if keep(here / d, True))
            for file in sorted(files):
                if keep(here / file, False):
                    name = (here / file).relative_to(root).as_posix()
                    archive.write(here / file, name)
                    names.append(name)
    return names


def _checkout_after_a_local_run(tmp: Path) -> Path:
    tree = tmp / "checkout"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                             check=True).stdout.decode().split("\0")
    for name in filter(None, tracked):
        if (ROOT / name).is_file():  # a file deleted in the work tree stays out
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / name, tree / name)
    for name, size in LEFT_BEHIND.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(os.urandom(size))  # random: compression can't hide it
    return tree


def _app_files() -> set[str]:
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    return {n for n in tracked if n.startswith("proactive/") and (ROOT / n).is_file()} | {
        "function_app.py", "host.json", "requirements.txt"}


def test_the_deploy_zip_holds_the_app_and_nothing_left_behind(tmp_path: Path) -> None:
    tree = _checkout_after_a_local_run(tmp_path)
    names = deploy_zip(tree, tmp_path / "deploy.zip")
    assert set(names) == _app_files(), (
        f"in the zip but not the app: {sorted(set(names) - _app_files())}; "
        f"app files missing: {sorted(_app_files() - set(names))}")
    size = (tmp_path / "deploy.zip").stat().st_size
    assert size < MAX_ZIP_BYTES, size


def test_without_funcignore_azd_keeps_only_its_python_defaults(tmp_path: Path) -> None:
    # The zip builder itself can fail: with no .funcignore, azd leaves out only a venv
    # and __pycache__, so the other caches, tests and tools land in the package.
    tree = _checkout_after_a_local_run(tmp_path)
    (tree / ".funcignore").unlink()
    names = set(deploy_zip(tree, tmp_path / "deploy.zip"))
    assert {".mypy_cache/3.11/proactive/worker.data.json", "tests/test_infra.py",
            "node_modules/azurite/dist/index.js"} <= names
    assert not {n for n in names if n.startswith((".venv/", ".azure/")) or "__pycache__" in n}
    assert "local.settings.json" not in names
