"""azd's environment, for the commands that default to the deployment's values
(`doctor`; the app package's builder reads the same format from azd's file).

In an azd hook the values are already in the process environment (azd exports
them, with AZURE_ENV_NAME); by hand they come from `azd env get-values`, run
in the current folder, when azd is installed. Without either: none.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping

AZD_TIMEOUT = 30.0  # seconds; `azd env get-values` reads a local file, but may check for updates


def parse_env(text: str) -> dict[str, str]:
    """A dotenv text as azd writes it (`KEY="value"`, backslash escapes), plus
    the plain `KEY=value`, `'value'`, comments and `export` a person may write."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        name, sep, value = line.partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = re.sub(r"\\(.)", lambda m: {"n": "\n", "r": "\r", "t": "\t"}
                           .get(m.group(1), m.group(1)), value[1:-1])
        elif len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        else:
            value = value.split(" #", 1)[0].strip()
        values[name.strip()] = value
    return values


def azd_values(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The azd environment's values: {} inside a hook (they are in `environ`
    already), and when azd is missing or this folder has no azd environment."""
    environ = os.environ if environ is None else environ
    azd = shutil.which("azd")
    if environ.get("AZURE_ENV_NAME") or azd is None:
        return {}
    try:
        done = subprocess.run([azd, "env", "get-values", "--no-prompt"], capture_output=True,
                              text=True, timeout=AZD_TIMEOUT, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return parse_env(done.stdout) if done.returncode == 0 else {}
