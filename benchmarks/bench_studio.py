"""The studio's response times on the default model, as ratios to one plain forward (issue 15).

One demo LaMP-4 dev example whose prompt (own profile, k=8, capped) plus reference is about
--tokens tokens. In one process, against the baseline of one plain forward of that same sequence
(`Lens.forward`, best of --repeats):

- `session.nll`, the computation behind the NLL panel (own profile and no profile), after a click
  on a head of layer 0, 15 or 29 with a layer-0 head already selected (clean forwards cached; the
  click restarts at the clicked layer), the no-profile row alone, and cold (the first look at the
  example: both clean forwards too);
- the NLL callback over HTTP (Dash's update endpoint: request, callback, serialisation);
- click-to-update in headless Chromium (Playwright): from the click on a map cell (the pointer
  already resting on it) until the NLL panel shows the new set, on the page's clock (mouse
  release to the painted frame) and on the driver's (Playwright's round trips included);
- a 24-token DPS generation (γ = 1, two heads) and a 24-token greedy one.

    .venv/bin/python benchmarks/bench_studio.py [--tokens 250] [--repeats 5] [--threads N] [--no-browser]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import torch


def best(function, repeats: int, name: str = "") -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    if name:
        print(f"  {name}: best {min(times):.3f} s of {', '.join(f'{t:.3f}' for t in times)}", flush=True)
    return min(times)


def click_time(session, example, layer: int, repeats: int) -> float:
    """Best time of `session.nll` after a click on a head of `layer`, with a head of layer 0 already
    in the set (so the click can restart at `layer`; at layer 0 it reruns every block)."""
    from workbench.studio.examples import ProfileState
    from workbench.studio.session import AblationKind

    own, kind, base = ProfileState("own"), AblationKind(), {(0, 0): 1.0}
    times = []
    for index in range(repeats):
        session.nll(example, own, base, kind)
        clicked = {**base, (layer, 1 + index % (session.lens.n_heads - 1)): 1.0}
        started = time.perf_counter()
        session.nll(example, own, clicked, kind)
        times.append(time.perf_counter() - started)
    print(f"  click on layer {layer}: best {min(times):.3f} s of {', '.join(f'{t:.3f}' for t in times)}", flush=True)
    return min(times)


def make_run(lens, folder: Path, tokens: int) -> Path:
    """A run folder whose record makes the first demo LaMP-4 dev example about `tokens` long."""
    from workbench.data.prompts import target_text
    from workbench.data.sources import load_examples

    example = load_examples(None, "LaMP-4", "dev")[0]
    target = len(lens.encode(target_text(example, "plain")))
    record = {"task": "LaMP-4", "split": "dev", "k": 8, "max_prompt_tokens": tokens - target, "format": "plain"}
    (folder / "fingerprint.json").write_text(json.dumps(record))
    return folder


def studio_setup(tokens: int, prefix: str):
    """The default model, a run folder whose first LaMP-4 dev example is about `tokens` long, the
    studio session over it, that example and its own-profile prompt ‖ reference ids (printed)."""
    import transformers

    from workbench.engine.models import load_model
    from workbench.studio.examples import ProfileState
    from workbench.studio.runfolder import RunFolder
    from workbench.studio.session import StudioSession

    transformers.utils.logging.disable_progress_bar()
    load_before = os.getloadavg()
    lens = load_model(device="cpu")
    folder = make_run(lens, Path(tempfile.mkdtemp(prefix=prefix)), tokens)
    session = StudioSession(lens, RunFolder(folder))
    example = session.examples("dev")[0]
    own = ProfileState("own")
    ids = list(example.prompt_ids(own)) + list(example.target_ids)
    print(f"example {example.key}: {len(example.prompt_ids(own))} prompt + {len(example.target_ids)} reference tokens; "
          f"torch threads {torch.get_num_threads()}; load average before {load_before[0]:.2f}")  # fmt: skip
    return lens, session, example, ids


def serve(session):
    """The studio app on a free loopback port, in a thread: (url, server)."""
    from werkzeug.serving import make_server

    from workbench.studio.app import create_app

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    server = make_server("127.0.0.1", 0, create_app(session).server, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}", server


def nll_request(url: str, example: str, heads: list[tuple[int, int]]) -> float:
    """One POST of the NLL callback as the page sends it; returns the seconds it took."""
    dependencies = json.loads(urllib.request.urlopen(f"{url}/_dash-dependencies").read())
    spec = next(d for d in dependencies if "nll-table.children" in d["output"])
    values = {
        "example-mode.value": "task", "split.value": "dev", "example.value": example, "profile-mode.value": "own",
        "heads.data": [[layer, head, 1.0] for layer, head in heads], "kind.value": "zero", "strength.value": 1.0,
        "history.data": [],
    }  # fmt: skip
    fill = lambda items: [{**item, "value": values.get(f"{item['id']}.{item['property']}")} for item in items]
    outputs = [{"id": p.split(".")[0], "property": p.split(".")[1]} for p in spec["output"].strip(".").split("...")]
    body = {"output": spec["output"], "outputs": outputs, "inputs": fill(spec["inputs"]), "state": fill(spec["state"])}
    body["changedPropIds"] = ["heads.data"]
    request = urllib.request.Request(
        f"{url}/_dash-update-component", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request) as response:
        response.read()
    return time.perf_counter() - started


# In the page: when the browser received each mouse release (the event's own time stamp, so time
# spent queued behind other work counts) and when the frame after the NLL panel named a head set
# was painted. Both are on the page's clock, so the automation's own round trips do not count.
PAGE_CLOCK = """
window.__released = null;
window.__painted = {};
document.addEventListener("mouseup", event => { window.__released = event.timeStamp; }, true);
new MutationObserver(() => {
    const names = document.querySelector("#nll-heads")?.dataset.heads;
    if (names !== undefined && !(names in window.__painted)) {
        window.__painted[names] = null;
        requestAnimationFrame(() => setTimeout(() => { window.__painted[names] = performance.now(); }));
    }
}).observe(document, {subtree: true, childList: true, attributes: true});
"""


def click_to_update(url: str, heads: list[tuple[int, int]]) -> tuple[list[float], list[float]]:
    """For a click on each head's map cell (the pointer already resting on it, as a user's does:
    plotly clicks the point it last hovered), the seconds until the NLL panel names the new set:
    on the page's clock, from the mouse release to the next painted frame; and on the driver's,
    from sending the click until Playwright sees the panel (its round trips included)."""
    from playwright.sync_api import sync_playwright

    from workbench.studio.pagedriver import CHROMIUM, CHROMIUM_ARGS, point_at_head

    in_page, driver = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        page.set_default_timeout(120_000)
        page.add_init_script(PAGE_CLOCK)
        page.goto(url)
        page.wait_for_selector("#nll-table table")
        chosen: list[tuple[int, int]] = []
        for layer, head in heads:
            chosen.append((layer, head))
            names = " ".join(f"L{a}H{b}" for a, b in sorted(chosen))
            x, y = point_at_head(page, layer, head)
            started = time.perf_counter()
            page.mouse.click(x, y)
            page.wait_for_selector(f'#nll-heads[data-heads="{names}"]')
            driver.append(time.perf_counter() - started)
            page.wait_for_function("names => window.__painted[names] != null", arg=names)
            in_page.append(page.evaluate("names => (window.__painted[names] - window.__released) / 1000", names))
        page.screenshot(path=str(Path(tempfile.gettempdir()) / "bench-studio.png"), full_page=True)
        browser.close()
    return in_page, driver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-browser", action="store_true", help="skip the Playwright click-to-update measurement")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    from workbench.decoding import DPS, Greedy, generate
    from workbench.heads import HeadWeights
    from workbench.studio.examples import ProfileState
    from workbench.studio.session import AblationKind

    lens, session, example, ids = studio_setup(args.tokens, "bench-studio-")
    own = ProfileState("own")

    forward = best(lambda: lens.forward(ids), args.repeats, "plain forward")
    results = {"tokens": len(ids), "forward_s": forward}

    cold_started = time.perf_counter()
    session.nll(example, own, {(12, 3): 1.0}, AblationKind())
    results["nll_cold_s"] = time.perf_counter() - cold_started
    print(f"  nll cold: {results['nll_cold_s']:.3f} s", flush=True)
    for layer in (0, 15, 29):
        results[f"nll_click_layer_{layer}_s"] = click_time(session, example, layer, args.repeats)
    off = ProfileState("off")
    session.nll(example, off, {}, AblationKind())
    toggled = iter(range(10_000))  # a new layer-0 head each time: no restart, every block reruns
    results["nll_no_profile_row_s"] = best(
        lambda: session.nll(example, off, {(0, next(toggled) % lens.n_heads): 1.0}, AblationKind()),
        args.repeats,
        "no-profile row alone, layer 0",
    )

    url, server = serve(session)
    requests = [nll_request(url, example.key, [(15, h % lens.n_heads), (22, 4)]) for h in range(args.repeats)]
    results["nll_http_callback_s"] = min(requests)
    print(f"  NLL callback over HTTP: {', '.join(f'{t:.3f}' for t in requests)}", flush=True)
    if not args.no_browser:
        clicks, driven = click_to_update(url, [(15, 2), (22, 4), (8, 1), (27, 6), (5, 3), (12, 0), (0, 4)])
        results["click_to_update_median_s"] = statistics.median(clicks)
        results["click_to_update_s"] = clicks
        results["click_to_update_driver_s"] = driven
        print(f"  click to update, page clock: {', '.join(f'{t:.3f}' for t in clicks)}", flush=True)
        print(f"  click to update, driver clock: {', '.join(f'{t:.3f}' for t in driven)}", flush=True)
    server.shutdown()

    prompt = [list(example.prompt_ids(own))]
    grid = torch.zeros(lens.n_layers, lens.n_heads)
    grid[12, 3] = grid[20, 5] = 1.0
    dps = DPS(HeadWeights(grid), gamma=1.0)
    tokens_made = {}

    def timed(name, decoder):
        def run():
            tokens_made[name] = len(generate(lens, prompt, decoder, max_new_tokens=24, stop_at_eos=False)[0].token_ids)

        return best(run, max(1, args.repeats // 2), f"{name} 24 tokens")

    results["greedy_24_s"] = timed("greedy", Greedy())
    results["dps_24_s"] = timed("dps", dps)
    started = time.perf_counter()
    session.generate(example, own, dps, max_new_tokens=24)
    results["dps_24_session_s"] = time.perf_counter() - started
    results["tokens_generated"] = tokens_made
    results["load_average_after"] = os.getloadavg()[0]

    for key in [k for k in results if k.endswith("_s") and k != "forward_s" and not isinstance(results[k], list)]:
        results[key[: -len("_s")] + "_vs_forward"] = results[key] / forward
    results["dps_vs_greedy"] = results["dps_24_s"] / results["greedy_24_s"]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
