"""Draws the Teams app icons in appPackage/: a bell with a notification dot.

    python -m proactive_devtools.app_icons [--out DIR]

- `color.png`, 192x192: a white bell and an orange dot on a blue rounded square
  (the corners transparent);
- `outline.png`, 32x32: the same bell in white on transparent (Teams tints it),
  every visible pixel pure white, edges smoothed through alpha only.

The PNGs are committed; this is how they were made, so a new colour or shape is
one edit and one run away. Pillow is a development dependency only: the function
app never draws anything. Shapes are drawn 8x larger and scaled down, which gives
smooth edges without an anti-aliasing renderer.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

BACKGROUND = (47, 84, 235)   # also the manifest's accentColor (#2F54EB)
BELL = (255, 255, 255)
DOT = (255, 138, 61)
SCALE = 8


def _bell_outline(cx: float, top: float, height: float) -> list[tuple[float, float]]:
    """The bell's body (dome and flaring sides down to the rim) as a polygon."""
    h = height
    dome_r, dome_y = 0.27 * h, top + 0.32 * h
    body_end, flare = top + 0.74 * h, 0.11 * h
    right: list[tuple[float, float]] = []
    for i in range(61):  # the dome's right quarter, from the top down
        a = -math.pi / 2 + (math.pi / 2) * i / 60
        right.append((cx + dome_r * math.cos(a), dome_y + dome_r * math.sin(a)))
    for i in range(1, 41):  # the sides flare out towards the rim
        t = i / 40
        right.append((cx + dome_r + flare * t * t, dome_y + (body_end - dome_y) * t))
    left = [(2 * cx - x, y) for x, y in reversed(right)]
    return right + left


def draw_bell(draw: Any, cx: float, top: float, height: float, fill: Any) -> None:
    h = height
    draw.polygon(_bell_outline(cx, top, h), fill=fill)
    rim_w, rim_top, rim_h = 0.46 * h, top + 0.72 * h, 0.09 * h
    draw.rounded_rectangle((cx - rim_w, rim_top, cx + rim_w, rim_top + rim_h),
                           radius=rim_h / 2, fill=fill)
    clapper_r, clapper_y = 0.085 * h, top + 0.87 * h
    draw.ellipse((cx - clapper_r, clapper_y - clapper_r, cx + clapper_r, clapper_y + clapper_r),
                 fill=fill)
    knob_r, knob_y = 0.07 * h, top + 0.06 * h
    draw.ellipse((cx - knob_r, knob_y - knob_r, cx + knob_r, knob_y + knob_r), fill=fill)


def _dot(draw: Any, cx: float, cy: float, r: float, fill: Any) -> None:
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)


def color_icon() -> Any:
    from PIL import Image, ImageDraw

    size = 192 * SCALE
    image = Image.new("RGBA", (size, size), (*BACKGROUND, 0))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle((0, 0, size - 1, size - 1), radius=0.22 * size, fill=BACKGROUND)
    height = 0.60 * size
    cx, top = size / 2, (size - height) / 2 + 0.01 * size
    draw_bell(draw, cx, top, height, BELL)
    dot_x, dot_y, dot_r = cx + 0.27 * height, top + 0.16 * height, 0.13 * height
    _dot(draw, dot_x, dot_y, dot_r * 1.45, BACKGROUND)  # a gap between dot and bell
    _dot(draw, dot_x, dot_y, dot_r, DOT)
    return image.resize((192, 192), Image.Resampling.LANCZOS)


def outline_icon() -> Any:
    from PIL import Image, ImageDraw

    size = 32 * SCALE
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    height = 0.84 * size
    cx, top = size / 2, (size - height) / 2
    draw_bell(draw, cx, top, height, 255)
    dot_x, dot_y, dot_r = cx + 0.27 * height, top + 0.16 * height, 0.14 * height
    _dot(draw, dot_x, dot_y, dot_r * 1.5, 0)
    _dot(draw, dot_x, dot_y, dot_r, 255)
    alpha = mask.resize((32, 32), Image.Resampling.LANCZOS)
    # White everywhere; only alpha says where the bell is (Teams' outline rule).
    image = Image.new("RGBA", (32, 32), (255, 255, 255, 0))
    image.putalpha(alpha)
    return image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m proactive_devtools.app_icons",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1]
                        / "appPackage", help="folder for color.png and outline.png")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    # optimize + no timestamps: the same drawing gives the same bytes.
    color_icon().save(args.out / "color.png", optimize=True)
    outline_icon().save(args.out / "outline.png", optimize=True)
    print(f"wrote {args.out / 'color.png'} and {args.out / 'outline.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
