"""The studio's decoding-trace card on the default model: what a decode costs and what a token click
costs, as ratios to one plain forward (issue 24).

The example of `bench_studio.py` (the first demo LaMP-4 dev example, own profile, prompt plus
reference about --tokens tokens; the run folder has no score map, so the heads are the top n of the
example's attribution PCS). In one process, against one plain forward of that sequence:

- the card's decode (`StudioTraces.trace`: the attribution map the first time, the DPS generation
  with LaMP-4's budget and stop string, the teacher-forced full, masked and one-head passes) at
  γ = 1 and n = --heads, then at γ = 2 (the map kept);
- a token click in headless Chromium: from the mouse release to the frame painted after the
  token's table shows it (page clock), and from sending the click until Playwright sees it (driver
  clock), for --clicks tokens.

    .venv/bin/python benchmarks/bench_trace.py [--tokens 250] [--heads 10] [--repeats 3] [--clicks 6] [--threads N] [--screenshot PNG]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from bench_studio import best, serve, studio_setup

# In the page: the mouse release's own time stamp, and when the frame after the token table named
# a new step was painted (both on the page's clock).
PAGE_CLOCK = """
window.__released = null;
window.__painted = {};
document.addEventListener("mouseup", event => { window.__released = event.timeStamp; }, true);
new MutationObserver(() => {
    const step = document.querySelector("#trace-token-summary")?.dataset.step;
    if (step !== undefined && !(step in window.__painted)) {
        window.__painted[step] = null;
        requestAnimationFrame(() => setTimeout(() => { window.__painted[step] = performance.now(); }));
    }
}).observe(document, {subtree: true, childList: true, attributes: true});
"""


def token_clicks(url: str, clicks: int, screenshot: str | None) -> tuple[list[float], list[float], int]:
    """Decode in the page, then click tokens 1, 2, ... (each a step not shown before); the seconds
    until each shows, on the page's clock and on the driver's, and the number of tokens."""
    from playwright.sync_api import sync_playwright

    from workbench.studio.pagedriver import CHROMIUM, CHROMIUM_ARGS

    in_page, driver = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1700})
        page.set_default_timeout(600_000)
        page.add_init_script(PAGE_CLOCK)
        page.goto(url)
        page.wait_for_selector("#nll-table table")
        page.locator("#trace-run").click()
        page.wait_for_selector("#trace-token-summary[data-step='0']")
        tokens = page.locator("#trace-strip .trace-token")
        count = tokens.count()
        for step in range(1, min(clicks, count - 1) + 1):
            box = tokens.nth(step).bounding_box()
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            started = time.perf_counter()
            page.mouse.down()
            page.mouse.up()
            page.wait_for_selector(f"#trace-token-summary[data-step='{step}']")
            driver.append(time.perf_counter() - started)
            page.wait_for_function("step => window.__painted[step] != null", arg=str(step))
            in_page.append(page.evaluate("step => (window.__painted[step] - window.__released) / 1000", str(step)))
        if screenshot:
            page.locator("#trace-card").screenshot(path=screenshot)
        browser.close()
    return in_page, driver, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=250)
    parser.add_argument("--heads", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clicks", type=int, default=6)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--screenshot", default=None, help="save the card, after the clicks, as this PNG")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    from workbench.studio.examples import ProfileState
    from workbench.studio.traces import StudioTraces, TraceSettings

    lens, session, example, ids = studio_setup(args.tokens, "bench-trace-")
    own = ProfileState("own")

    forward = best(lambda: lens.forward(ids), args.repeats, "plain forward")
    results: dict = {"tokens": len(ids), "forward_s": forward}
    traces = StudioTraces(session)
    for name, gamma in (("decode_first_s", 1.0), ("decode_gamma_2_s", 2.0)):
        started = time.perf_counter()
        trace, source = traces.trace(example, own, TraceSettings(gamma, args.heads))
        results[name] = time.perf_counter() - started
        print(f"  {name}: {results[name]:.3f} s ({len(trace.token_ids)} tokens, {len(trace.heads)} heads, {source})", flush=True)
    results["generated_tokens"], results["suppressed_heads"] = len(trace.token_ids), len(trace.heads)
    results["share_sums"] = [round(float(v), 3) for v in trace.effects.sum(axis=1) / trace.total]  # 1: no interaction
    results["deltas"] = [round(float(v), 3) for v in trace.total]

    url, server = serve(session)
    clicks, driven, count = token_clicks(url, args.clicks, args.screenshot)
    server.shutdown()
    results.update(click_page_s=clicks, click_driver_s=driven, click_page_median_s=statistics.median(clicks), strip_tokens=count)
    print(f"  token click, page clock: {', '.join(f'{t:.3f}' for t in clicks)}", flush=True)
    print(f"  token click, driver clock: {', '.join(f'{t:.3f}' for t in driven)}", flush=True)
    results["load_average_after"] = os.getloadavg()[0]
    for key in [k for k in results if k.endswith("_s") and k != "forward_s" and not isinstance(results[k], list)]:
        results[key[: -len("_s")] + "_vs_forward"] = results[key] / forward
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
