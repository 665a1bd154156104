"""`python -m benchmarks`: run every benchmark in this package, each in its own
process (so one benchmark's imports, threads and garbage don't show in
another's CPU figures). A benchmark is any module here whose name does not
start with '_'; the three of the performance issue run first.

Options go to none of them; run one alone to pass options, e.g.
`python -m benchmarks.whole_path --help`.
"""

from __future__ import annotations

import pkgutil
import sys
from pathlib import Path

from benchmarks._common import run_module

FIRST = ("connector_client", "whole_path", "cold_start")


def benchmarks() -> list[str]:
    found = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])
                   if not m.name.startswith("_"))
    return [*(n for n in FIRST if n in found), *(n for n in found if n not in FIRST)]


def main() -> int:
    failed = [name for name in benchmarks() if run_module(f"benchmarks.{name}") != 0]
    if failed:
        print(f"\nthese benchmarks crashed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
