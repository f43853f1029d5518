"""Embeddings page in a real browser: compute in the background, then the histogram, the map with
its hover data, the quality table and a selected point's record."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import wait_for_app
from fixtures.analysis.store import FIXTURE_SOURCE, build_store

pytestmark = pytest.mark.browser

PLOT_DATA = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(el => ({
    visible: el.getBoundingClientRect().width > 0,
    traces: (el.data || []).map(t => ({type: t.type, name: t.name, n: (t.x || []).length,
                                       hovertemplate: t.hovertemplate || '', customdata: t.customdata || []}))}))"""


def plots(page) -> list[dict]:
    return page.evaluate(PLOT_DATA)


def test_compute_then_histogram_map_hover_and_quality(tmp_path, streamlit_server, page):
    db = build_store(tmp_path / "ui.duckdb", n_real=24, synthetic="dermatology", n_synth=18)
    server = streamlit_server(db)
    page.goto(server.url + "/Embeddings")
    wait_for_app(page)
    page.get_by_text("Nothing computed yet for these parameters").wait_for()
    # the fixture set has invalid trials (every third); by default only usable ones are analysed
    page.get_by_text("All, invalid and rejected included").click()
    wait_for_app(page)
    page.get_by_role("button", name="Compute").click()
    # computed in a background process; the page polls its progress and shows the result when done
    page.get_by_role("tab", name="Cosine similarity").wait_for(timeout=180_000)
    wait_for_app(page)

    page.get_by_text("24 real and 18 synthetic trials").wait_for()
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length > 0")
    hist = [p for p in plots(page) if p["traces"] and p["traces"][0]["type"] == "histogram"]
    assert hist, "no histogram drawn"
    names = [t["name"] for t in hist[0]["traces"]]
    assert [n.split(" (")[0] for n in names] == ["real-real", "synthetic-synthetic", "real-synthetic"]
    assert all(re.search(r"mean -?\d\.\d{3}, sd \d\.\d{3}", n) for n in names)
    # 24 real and 18 synthetic trials: fewer distinct pairs than the 10,000 asked for, so all of them
    assert [t["n"] for t in hist[0]["traces"]] == [24 * 23 // 2, 18 * 17 // 2, 24 * 18]
    assert all(re.search(r"\(n [\d,]+, mean", n) for n in names)
    page.get_by_text("Synthetic trials analysed: all synthetic trials, invalid and rejected ones included").wait_for()

    page.get_by_role("tab", name="Map (t-SNE / UMAP)").click()
    page.get_by_text("Circles: real trials; diamonds: synthetic").wait_for()
    page.wait_for_function(PLOT_DATA.replace("=> Array", "=> (Array") .replace(
        "}))}))", "}))})).some(p => p.visible && p.traces.some(t => t.type === 'scatter')))"))
    scatter = [p for p in plots(page) if p["visible"] and any(t["type"] == "scatter" for t in p["traces"])][0]
    assert sum(t["n"] for t in scatter["traces"]) == 42  # 24 real + 18 synthetic points
    assert {t["name"].split(" (")[0] for t in scatter["traces"]} == {"real", "synthetic"}
    hover = scatter["traces"][0]["hovertemplate"]
    assert "customdata[1]" in hover and "Intervention" in hover
    custom = [row for t in scatter["traces"] for row in t["customdata"]]
    real_rows = [r for r in custom if r[4] == "real"]
    assert {r[1] for r in real_rows} == {f"NCT9{i:07d}" for i in range(24)}  # NCT ids in the hover data
    assert all("Paclitaxel" in r[2] and r[3] == "Paclitaxel" for r in real_rows)  # title and intervention
    # hovering a point shows its NCT id
    box = page.locator(".js-plotly-plot .scatterlayer .point").first.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.locator(".hoverlayer .hovertext").first.wait_for()
    hovered = page.locator(".hoverlayer .hovertext").first.text_content()
    assert re.search(r"NCT9\d{7} \(real\)|synthetic\)", hovered) and "Intervention:" in hovered

    hovered_id = re.search(r"NCT9\d{7}|" + re.escape(FIXTURE_SOURCE) + r":\d+", hovered)

    def lasso(cx: float, cy: float, rx: float, ry: float | None = None) -> None:
        ry = rx if ry is None else ry
        page.mouse.move(cx - rx, cy - ry)
        page.mouse.down()
        for x, y in [(cx + rx, cy - ry), (cx + rx, cy + ry), (cx - rx, cy + ry), (cx - rx, cy - ry + 1)]:
            page.mouse.move(x, y, steps=4)
        page.mouse.up()

    # a small lasso around the hovered point shows that trial's record (or lists it with its neighbours)
    page.mouse.move(5, 5)  # away from the plot: the hover label goes
    box = page.locator(".js-plotly-plot .scatterlayer .point").first.bounding_box()
    lasso(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, 6)
    page.wait_for_function("() => document.body.innerText.includes('Text embedded (scrubbed serialization)') || "
                           "(/\\b[2-9] selected trials/).test(document.body.innerText)")
    wait_for_app(page)
    body = page.locator("body").inner_text()
    if "Text embedded (scrubbed serialization)" in body:
        assert re.search(r"(Real trial NCT9\d{7}|Synthetic trial " + re.escape(FIXTURE_SOURCE) + ")", body)
        assert "Interventions: Drug: " in body  # the embedded text of the selected record
        if hovered_id:
            assert hovered_id.group(0) in body
    else:  # points drawn on top of each other: the lasso caught a few, listed instead
        assert re.search(r"\b[2-9] selected trials", body)

    # a lasso over the whole plot lists every trial
    area = [b for b in (page.locator(".js-plotly-plot .nsewdrag").nth(i).bounding_box()
                        for i in range(page.locator(".js-plotly-plot .nsewdrag").count())) if b][0]
    lasso(area["x"] + area["width"] / 2, area["y"] + area["height"] / 2, area["width"] / 2 - 1, area["height"] / 2 - 1)
    page.get_by_text("42 selected trials").wait_for()

    page.get_by_role("tab", name="Quality metrics").click()
    table = page.locator('[data-testid="stTable"]').filter(has_text="Detection AUC")
    table.wait_for()
    cells = table.evaluate("t => Array.from(t.querySelectorAll('tr')).map("
                           "r => Array.from(r.querySelectorAll('th,td')).map(c => c.innerText.trim()))")
    rows = {r[0]: r[1:] for r in cells if r}
    assert "All sets together" in table.inner_text()
    assert rows["Synthetic trials"] == ["18"] and rows["Near copies"] == ["0"]
    assert float(rows["Detection AUC (0.5 = indistinguishable)"][0]) > 0.9  # another topic: easy to tell apart
    # the AUC carries its class sizes and interval, and a warning: 18 synthetic trials is below the minimum
    assert rows["Detection classes: real / synthetic"] == ["24 / 18"]
    low, high = (float(x) for x in rows["Detection AUC 95% interval (bootstrap)"][0].split(" – "))
    assert low <= float(rows["Detection AUC (0.5 = indistinguishable)"][0]) <= high
    assert rows["Cosine synthetic-synthetic pairs (n)"] == ["153"]
    page.get_by_text(re.compile(r"only 24 real vs 18 synthetic trials: below 30 per class")).wait_for()


def test_usable_rule_is_the_default_and_the_page_says_so(tmp_path, streamlit_server, page):
    db = build_store(tmp_path / "usable.duckdb", n_real=24, synthetic="dermatology", n_synth=18)
    server = streamlit_server(db)
    page.goto(server.url + "/Embeddings")
    wait_for_app(page)
    page.get_by_role("button", name="Compute").click()
    page.get_by_role("tab", name="Cosine similarity").wait_for(timeout=180_000)
    wait_for_app(page)
    page.get_by_text("24 real and 12 synthetic trials").wait_for()
    page.get_by_text(re.compile(r"Synthetic trials analysed: usable: .*not rejected.*\(6 trials of the set left out\)")
                     ).wait_for()


def test_page_without_synthetic_trials_says_what_to_do(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    db = build_store(tmp_path / "none.duckdb", synthetic="none")
    monkeypatch.setenv("CTGEN_DB", str(db))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "app.py"), default_timeout=60)
    at.switch_page("pages/6_Embeddings.py").run()
    assert not at.exception
    assert any("No synthetic trials in the store yet" in i.value for i in at.info)
    assert not at.button  # nothing to compute
