"""Copy the browser tests' screenshots into docs/ui/, small.

    python -m proactive_devtools shots [NAME ...]

tests/test_ui_browser.py (the operations page) and
tests/test_e2e_playground_page.py (the acknowledged card in the Agents
Playground) save what they see in .dev/ui-screenshots/NAME.png; the README
shows copies from docs/ui/. Each copy is reduced to a 256-colour palette
(Pillow's median cut, no dithering): flat colours and text lose nothing
visible, and the file is about a third of the size. Without NAMEs, the
pictures docs/ui/ already has are refreshed; a NAME adds (or refreshes) one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from proactive_devtools.processes import REPO_ROOT

SHOTS = REPO_ROOT / ".dev" / "ui-screenshots"
DOCS = REPO_ROOT / "docs" / "ui"


def small_copy(source: Path, target: Path) -> int:
    """`source` as a 256-colour PNG at `target`; its size in bytes."""
    from PIL import Image

    with Image.open(source) as image:
        palette = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT,
                                                dither=Image.Dither.NONE)
    palette.save(target, optimize=True)
    return target.stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m proactive_devtools shots",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help="a screenshot's name (default: those docs/ui/ has)")
    args = parser.parse_args(argv)
    names = args.names or sorted(p.stem for p in DOCS.glob("*.png"))
    missing = [n for n in names if not (SHOTS / f"{n}.png").is_file()]
    if missing:
        print(f"error: not in {SHOTS.relative_to(REPO_ROOT)}/: {', '.join(missing)} (run "
              f"tests/test_ui_browser.py and tests/test_e2e_playground_page.py first)",
              file=sys.stderr)
        return 2
    DOCS.mkdir(parents=True, exist_ok=True)
    for name in names:
        source, target = SHOTS / f"{name}.png", DOCS / f"{name}.png"
        size = small_copy(source, target)
        print(f"{target.relative_to(REPO_ROOT)}: {size // 1024} KB "
              f"(from {source.stat().st_size // 1024} KB)")
    return 0
