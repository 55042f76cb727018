"""Where the text of a figure's static export lands, to check that no label covers another.

The figure is exported to SVG by kaleido (the same plotly.js in the same chromium that draws the
PNG, which is rasterised from this SVG), and that SVG is loaded into chromium, which measures
every text element: its box in its own coordinates (`getBBox`: the width of the glyphs as laid
out in the figure's fonts, the height of the line box) mapped through its transformation to the
page (`getScreenCTM`), so a rotated tick label is a rotated rectangle, not its enclosing
axis-aligned box. Two labels collide when their rectangles overlap by more than a pixel (the
separating-axis test for convex polygons). A label is also wrong when it leaves the canvas or the
clip region drawn around it (a point label cut by the plotting area's edge).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio

from workbench.studio.pagedriver import CHROMIUM, CHROMIUM_ARGS

Point = tuple[float, float]
TOLERANCE_PX = 1.0

MEASURE = """() => {
  const page = (element, x, y) => { const m = element.getScreenCTM(); return [m.a * x + m.c * y + m.e, m.b * x + m.d * y + m.f]; };
  const corners = (element, b) => [[b.x, b.y], [b.x + b.width, b.y], [b.x + b.width, b.y + b.height], [b.x, b.y + b.height]]
    .map(([x, y]) => page(element, x, y));
  const clipOf = (text) => {
    for (let e = text; e && e.tagName !== 'svg'; e = e.parentElement) {
      const reference = e.getAttribute('clip-path');
      if (!reference) continue;
      const id = reference.replace(/^url\\(['"]?#/, '').replace(/['"]?\\)$/, '');
      const rect = document.getElementById(id)?.querySelector('rect');
      if (!rect) return null;
      const r = {x: +rect.getAttribute('x') || 0, y: +rect.getAttribute('y') || 0,
                 width: +rect.getAttribute('width'), height: +rect.getAttribute('height')};
      return corners(e, r);
    }
    return null;
  };
  const kind = (text) => {
    for (let e = text; e && e.tagName !== 'svg'; e = e.parentElement) {
      const c = e.getAttribute('class') || '';
      if (/\\b[xy]\\d*tick\\b/.test(c)) return 'tick';
      if (/\\bannotation\\b/.test(c)) return 'annotation';
      if (/\\blegend\\b/.test(c)) return 'legend';
      if (/\\bg-gtitle\\b/.test(c)) return 'title';
      if (/\\bg-[xy]\\d*title\\b/.test(c)) return 'axis title';
      if (/\\btextpoint\\b/.test(c)) return 'point label';
      if (/\\bpoints\\b/.test(c)) return 'bar text';
    }
    return 'other';
  };
  const svg = document.querySelector('svg');
  return {
    width: +svg.getAttribute('width'), height: +svg.getAttribute('height'),
    texts: Array.from(document.querySelectorAll('svg text'))
      .filter((t) => t.textContent.trim() && t.getBBox().width > 0 && getComputedStyle(t).opacity !== '0')
      .map((t) => ({text: t.textContent, kind: kind(t), corners: corners(t, t.getBBox()), clip: clipOf(t)})),
  };
}"""


@dataclass(frozen=True)
class TextBox:
    """One text element of the figure as drawn: its text, what it is, its four corners on the
    canvas (pixels, y down) and the corners of the clip region around it, if any."""

    text: str
    kind: str
    corners: tuple[Point, ...]
    clip: tuple[Point, ...] | None

    def __str__(self) -> str:
        x, y = self.corners[0]
        return f"{self.kind} {self.text!r} at ({x:.0f}, {y:.0f})"


@dataclass(frozen=True)
class Drawing:
    width: float
    height: float
    texts: list[TextBox]


def static_svgs(figures: Sequence[go.Figure], folder: Path) -> list[str]:
    """Each figure as its static export draws it (`static_version`), as SVG text (one kaleido
    session for all, files in `folder`)."""
    from workbench.figures import static_version

    drawn = [static_version(figure) for figure in figures]
    paths = [folder / f"{index}.svg" for index in range(len(drawn))]
    pio.write_images(drawn, paths, format="svg", width=[f.layout.width for f in drawn], height=[f.layout.height for f in drawn])
    return [path.read_text() for path in paths]


def measure(svgs: Sequence[str]) -> list[Drawing]:
    """Every non-empty text element of each SVG, measured in chromium (one browser for all)."""
    from playwright.sync_api import sync_playwright

    drawings = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        for svg in svgs:
            page.set_content(f"<!DOCTYPE html><html><body style='margin:0'>{svg}</body></html>")
            found = page.evaluate(MEASURE)
            texts = [
                TextBox(
                    t["text"], t["kind"], tuple(map(tuple, t["corners"])), tuple(map(tuple, t["clip"])) if t["clip"] else None
                )
                for t in found["texts"]
            ]
            drawings.append(Drawing(found["width"], found["height"], texts))
        browser.close()
    return drawings


def _axes(polygon: Sequence[Point]) -> Iterator[Point]:
    for (x0, y0), (x1, y1) in zip(polygon, [*polygon[1:], polygon[0]]):
        yield (y0 - y1, x1 - x0)


def overlap_depth(first: Sequence[Point], second: Sequence[Point]) -> float:
    """How far two convex polygons overlap along the axis where they overlap least (pixels);
    zero or less when some edge normal separates them."""
    depth = float("inf")
    for ax, ay in [*_axes(first), *_axes(second)]:
        norm = (ax * ax + ay * ay) ** 0.5
        if norm == 0:
            continue
        a = [(x * ax + y * ay) / norm for x, y in first]
        b = [(x * ax + y * ay) / norm for x, y in second]
        depth = min(depth, min(max(a), max(b)) - max(min(a), min(b)))
    return depth


def collisions(drawing: Drawing) -> list[str]:
    """Each pair of text elements that overlap by more than the tolerance, as a readable line."""
    return [
        f"{first} overlaps {second}"
        for first, second in combinations(drawing.texts, 2)
        if overlap_depth(first.corners, second.corners) > TOLERANCE_PX
    ]


def escapes(drawing: Drawing) -> list[str]:
    """Each text element that leaves the canvas or is cut by the clip region around it."""
    canvas = ((0.0, 0.0), (drawing.width, 0.0), (drawing.width, drawing.height), (0.0, drawing.height))
    found = []
    for text in drawing.texts:
        for region, what in ((canvas, "the canvas"), (text.clip, "its clip region")):
            if region is None:
                continue
            xs, ys = [x for x, _ in region], [y for _, y in region]
            if any(not (min(xs) - TOLERANCE_PX <= x <= max(xs) + TOLERANCE_PX and min(ys) - TOLERANCE_PX <= y <= max(ys) + TOLERANCE_PX)
                   for x, y in text.corners):  # fmt: skip
                found.append(f"{text} leaves {what}")
    return found
