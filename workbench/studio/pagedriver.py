"""Driving the studio page from a script (the browser tests, the studio benchmark): the headless
Chromium to launch, when the map is drawn, and a click that plotly reads as the intended head.

The functions take a Playwright `Page`.
"""

from __future__ import annotations

from playwright.sync_api import TimeoutError as PlaywrightTimeout

CHROMIUM = "/usr/bin/chromium"  # Debian's; Playwright's own browser download is not available offline
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HOVER_WAIT_MS = 3000
MAP_DRAWN = "document.querySelector('#map .js-plotly-plot')?.data?.[0]?.type === 'heatmap'"


def point_at_head(page, layer: int, head: int, *, tries: int = 5) -> tuple[float, float]:
    """Rest the pointer on the map cell of (layer, head), located through plotly's own axes, until
    plotly hovers that cell; returns the point.

    Plotly answers a click with the point it last hovered, and its hover handling is throttled: a
    click sent before the hover lands reports the previously hovered head. The cell is located
    again if the hover does not land within `HOVER_WAIT_MS` (the page may have moved under the
    pointer, e.g. when a banner above the map closes)."""
    page.wait_for_function(MAP_DRAWN)
    for attempt in range(tries):
        x, y = page.eval_on_selector(
            "#map .js-plotly-plot",
            """(plot, [head, layer]) => {
                const box = plot.querySelector('.nsewdrag').getBoundingClientRect();
                return [box.left + plot._fullLayout.xaxis.l2p(head), box.top + plot._fullLayout.yaxis.l2p(layer)];
            }""",
            [head, layer],
        )
        page.mouse.move(x, y)
        try:
            page.wait_for_function(
                """([head, layer]) => {
                    const hovered = document.querySelector('#map .js-plotly-plot')?._hoverdata?.[0];
                    return hovered !== undefined && hovered.x === head && hovered.y === layer;
                }""",
                arg=[head, layer],
                timeout=HOVER_WAIT_MS * (attempt + 1),
            )
            return x, y
        except PlaywrightTimeout:
            page.mouse.move(0, 0)  # leave the map, so that the next move is a fresh hover
    raise AssertionError(f"plotly never hovered the map cell of L{layer}H{head}")


def click_head(page, layer: int, head: int) -> None:
    """Click the map cell of (layer, head): it joins the ablation set, or leaves it."""
    page.mouse.click(*point_at_head(page, layer, head))
