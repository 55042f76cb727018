"""The studio's decoding-trace card in headless Chromium on the tiny model: a click on a token shows
that token's table and head shares, the γ and heads sliders re-decode, and the exports hold the
trace. The numbers shown are checked against `trace_dps` run here on the run's own head map, with
the heads, the token budget and the stop strings `evaluate` would use."""

# ruff: noqa: F811 (the studio tests' fixtures are imported, then requested by name)

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_studio import (  # noqa: F401 (fixtures)
    ARTEFACTS,
    TASK,
    browser,
    lens,
    page,
    run_folder,
    set_slider,
    shot,
    studio,
    tiny_folder,
    train,
)

from workbench.data.prompts import answer_stop_strings
from workbench.data.tasks import task_spec
from workbench.decoding import DPS, trace_dps
from workbench.errors import InputError
from workbench.heads import HeadWeights
from workbench.scores.results import PCSResult
from workbench.studio.examples import ProfileState
from workbench.studio.runfolder import RunFolder
from workbench.studio.traces import StudioTraces, TraceSettings


def expected_trace(lens, run_folder, prompt, gamma, n_heads):
    """The trace `evaluate`'s settings give: top-n heads of the run's first map, the task's budget and stops."""
    first_map = RunFolder(run_folder).scores[0].path
    heads = HeadWeights.from_scores(PCSResult.load(run_folder / first_map), top_k=n_heads)
    spec = task_spec(TASK)
    return trace_dps(
        lens,
        list(prompt),
        DPS(heads, gamma=gamma),
        max_new_tokens=spec.max_new_tokens,
        stop_strings=answer_stop_strings("plain", spec),
    )


# The map's cells as plotly holds them after decoding the figure's arrays (NaN as null).
CELLS = """() => {
    const plot = document.querySelector('#trace-map .js-plotly-plot');
    const z = plot?._fullData?.[0]?.z;
    return z ? Array.from(z, row => Array.from(row, v => (Number.isNaN(v) ? null : v))) : [];
}"""


def shown_tokens(page) -> list[str]:
    return page.locator("#trace-strip .trace-token").all_text_contents()


def map_cells(page) -> np.ndarray:
    z = page.evaluate(f"({CELLS})()")
    return np.array([[np.nan if value is None else value for value in row] for row in z], dtype=float)


def test_a_token_click_shows_its_table_and_shares_and_the_sliders_re_decode(page, lens, run_folder, train, tmp_path):
    prompt = train[0].prompt_ids
    page.locator("#trace-run").click()
    page.wait_for_selector("#trace-token-summary[data-step='0']")
    expected = expected_trace(lens, run_folder, prompt, 1.0, 10)
    assert shown_tokens(page) == list(expected.tokens)
    step = min(2, len(expected.token_ids) - 1)
    page.locator("#trace-strip .trace-token").nth(step).click()
    page.wait_for_selector(f"#trace-token-summary[data-step='{step}']")
    page.wait_for_function(
        f"document.querySelector('#trace-map .js-plotly-plot')?.layout?.title?.text?.startsWith('token {step} ')"
    )
    shot(page, "trace-01-token-clicked")
    for name in ("full", "masked", "dps"):
        tokens = page.locator(f"#trace-table .top-{name}-token").all_inner_texts()
        assert tokens == [repr(expected.top_tokens[int(t)]) for t in expected.top_ids[name][step]], name
        values = [
            float(page.get_attribute(f"#trace-table .trace-rank-{rank} .top-{name}-logprob", "title"))
            for rank in range(len(tokens))
        ]
        np.testing.assert_allclose(values, expected.top_logprobs[name][step], atol=1e-5)
    assert float(page.get_attribute("#trace-token-summary", "data-gamma")) == pytest.approx(expected.gamma[step])
    np.testing.assert_allclose(map_cells(page), expected.share_grid(step), atol=1e-5)

    set_slider(page, "trace-gamma", "End")  # γ = 3: the page decodes again
    page.wait_for_function("document.querySelector('#trace-token-summary')?.dataset.gamma === '3.0'")
    stronger = expected_trace(lens, run_folder, prompt, 3.0, 10)
    assert shown_tokens(page) == list(stronger.tokens)
    np.testing.assert_allclose(map_cells(page), stronger.share_grid(0), atol=1e-5)
    shot(page, "trace-02-gamma-3")

    set_slider(page, "trace-heads", "Home")  # one head: it accounts for all of Δ alone
    page.wait_for_selector("#trace-info >> text=1 heads")
    page.wait_for_function(f"({CELLS})().flat().filter(v => v !== null).length === 1")
    cells = map_cells(page)
    assert cells[~np.isnan(cells)] == pytest.approx([1.0])

    with page.expect_download() as download:
        page.locator("#trace-csv").click()
    table = pd.read_csv(download.value.path(), keep_default_na=False)
    one_head = expected_trace(lens, run_folder, prompt, 3.0, 1)
    assert len(table) == len(one_head.token_ids) and set(table["share"].round(6)) == {1.0}
    with page.expect_download(timeout=120_000) as download:
        page.locator("#trace-png").click()
    png = download.value.path().read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    (ARTEFACTS / "trace-03-export.png").write_bytes(png)


def test_traces_stop_like_evaluate_and_refuse_bad_settings(studio):
    session = studio[1]
    traces = StudioTraces(session)
    own = ProfileState("own")
    example = session.examples(session.source.split)[0]
    trace, source = traces.trace(example, own, TraceSettings(0.5, 2))
    assert trace.options["stop_strings"] == ["\n"] and trace.options["max_new_tokens"] == task_spec(TASK).max_new_tokens
    assert "top 2 of" in source and len(trace.heads) <= 2
    assert traces.trace(example, own, TraceSettings(0.5, 2))[0] is trace  # kept: a click redraws from it
    typed = session.typed_example("Write a title.", "a title", chat=True)
    assert traces.trace(typed, own, TraceSettings("entropy", 2))[0].options["stop_strings"] == []  # chat: end of turn only
    with pytest.raises(InputError, match="γ must be"):
        TraceSettings(-1.0, 2)
    with pytest.raises(InputError, match="whole number >= 1"):
        TraceSettings(1.0, 0)
    with pytest.raises(InputError, match="at most 12"):
        traces.trace(example, own, TraceSettings(1.0, 13))
