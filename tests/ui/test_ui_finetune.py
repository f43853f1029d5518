"""Fine-tune and Experiments pages in a real headless Chromium against `streamlit run`, on the mirror
store plus the fixture synthetic set (tests/fixtures/finetune/synthetic.py: TEST FIXTURES, no LLM)."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import expect

from conftest import wait_for_app
from core.finetune import protocol as X
from fixtures.finetune.synthetic import insert_synthetic

T = 60_000


@pytest.fixture
def ui_db(mirror_db, tmp_path, monkeypatch) -> tuple[Path, Path]:
    db = tmp_path / "store.duckdb"
    shutil.copy(mirror_db, db)
    insert_synthetic(db, per_label=3, n_drugs=20)
    runs = tmp_path / "runs"
    monkeypatch.setenv("CTGEN_RUNS_DIR", str(runs))
    return db, runs


def _select(page, label: str, option: str) -> None:
    box = page.locator('[data-testid="stSelectbox"]').filter(
        has=page.locator('[data-testid="stWidgetLabel"]', has_text=re.compile(f"^{re.escape(label)}$"))).first
    for attempt in range(4):  # a rerun (the runs panel polls) can close the open list: open it again
        wait_for_app(page)
        box.click()
        try:
            page.get_by_role("option", name=option).first.click(timeout=5_000)
            break
        except Exception:
            if attempt == 3:
                raise
            page.keyboard.press("Escape")
    wait_for_app(page)
    expect(box.get_by_role("combobox")).to_have_value(option)


def _number(page, label: str, value: int) -> None:
    field = page.get_by_label(label, exact=True)
    field.fill(str(value))
    field.press("Enter")
    wait_for_app(page)


@pytest.mark.browser
def test_finetune_page_launch_watch_cancel_and_finish(ui_db, streamlit_server, page):
    db, runs = ui_db
    server = streamlit_server(db, env={"CTGEN_RUNS_DIR": str(runs)})
    page.goto(server.url + "/Fine-tune")
    wait_for_app(page)
    main = page.locator('[data-testid="stMain"]')
    expect(main.get_by_text("Synthetic trials", exact=True)).to_be_visible(timeout=T)
    ds = X.load_dataset(db)
    for label, n in (("Set A (labelled, in-distribution)", len(ds.set_a)), ("Synthetic trials", len(ds.synthetic))):
        metric = main.locator('[data-testid="stMetric"]').filter(has_text=label).first
        expect(metric.locator('[data-testid="stMetricValue"]')).to_have_text(f"{n:,}", timeout=T)
    expect(main.get_by_text("Model that will run:")).to_be_visible()
    expect(main.get_by_text("tfidf-logreg", exact=True)).to_be_visible()

    # Scrubbing and the leakage audit, as a person opens them.
    main.get_by_text("What the classifier sees: scrubbing and leakage audit").click()
    audit = main.locator('[data-testid="stMetric"]').filter(has_text="Leakage audit")
    expect(audit.locator('[data-testid="stMetricValue"]')).to_have_text(f"{X.leakage_audit(ds)['roc_auc']:.3f}",
                                                                       timeout=T)
    expect(main.get_by_text("Removed fields:")).to_be_visible()
    expect(main.locator("code").filter(has_text="why_stopped").first).to_be_visible()

    # A MiniLM run: progress appears, then cancel it.
    _select(page, "Model", "all-MiniLM-L6-v2 (bundled)")
    _number(page, "Epochs", 3)
    _number(page, "Max length (tokens)", 32)
    page.get_by_label("Seeds").fill("40")
    page.get_by_label("Seeds").press("Enter")
    wait_for_app(page)
    page.get_by_role("button", name="Launch run").click()
    expect(main.get_by_text(re.compile(r"^Started run "))).to_be_visible(timeout=T)
    expect(main.get_by_text(re.compile(r"running: seed 40 \(1/1\) · step \d+/\d+"))).to_be_visible(timeout=240_000)
    table = main.locator('[data-testid="stTable"]')
    expect(table.get_by_text("running", exact=True)).to_be_visible(timeout=T)
    page.get_by_role("button", name="Cancel run").click()
    expect(main.get_by_text(re.compile(r"^Run .*: cancelled$"))).to_be_visible(timeout=T)
    expect(table.get_by_text("cancelled", exact=True)).to_be_visible(timeout=T)

    # A TF-IDF run that finishes: its row says done, and its results are in the store.
    _select(page, "Model", "TF-IDF + logistic regression (seconds, CPU)")
    page.get_by_role("button", name="Launch run").click()
    expect(main.get_by_text(re.compile(r"finished; results are on the Experiments page"))).to_be_visible(timeout=180_000)
    expect(table.get_by_text("done", exact=True)).to_be_visible(timeout=T)
    stored = X.stored_runs(db)
    assert len(stored) == 1 and stored[0]["model_used"] == "tfidf-logreg" and stored[0]["train"] == "real"
    assert stored[0]["run_id"] in table.inner_text()
    # the runs panel is a fragment that reruns every 2 s while a run was active: for a moment the old and
    # the new expander are both in the page
    log = main.get_by_text("Log", exact=True)
    expect(log).to_have_count(1, timeout=T)
    log.click()
    roc = stored[0]["summary"]["roc_auc"]
    expect(main.locator("code").filter(has_text=f"ROC-AUC    {roc['mean']:.3f} ± {roc['sd']:.3f}")).to_be_visible(
        timeout=T)
    page.screenshot(path="/tmp/ctgen-ui-finetune.png", full_page=True)


@pytest.mark.browser
def test_experiments_page_shows_table3_charts_and_curves(ui_db, streamlit_server, page):
    db, runs = ui_db
    ds = X.load_dataset(db)
    for experiment, train, ratio in [("in-distribution", "none", None), ("in-distribution", "synthetic", None),
                                     ("in-distribution", "real", None), ("in-distribution", "hybrid", None),
                                     ("ratio", "synthetic", 1.0), ("ratio", "hybrid", 0.4), ("ratio", "real", 0.0)]:
        run, per_seed = X.run_cell(ds, experiment, train, "tfidf", [40, 41], ratio=ratio, grid_id="ui-grid")
        X.store_run(db, run, per_seed)
    server = streamlit_server(db, env={"CTGEN_RUNS_DIR": str(runs)})
    page.goto(server.url + "/Experiments")
    wait_for_app(page)
    main = page.locator('[data-testid="stMain"]')
    table = main.locator("table").filter(has_text="Fine-Tuning").first
    expect(table).to_be_visible(timeout=T)
    headers = [h.strip() for h in table.locator("th").all_inner_texts()]
    assert headers == ["Testing", "Fine-Tuning", "Accuracy", "Precision", "Recall", "F1", "ROC-AUC", "PR-AUC"]
    rows = table.locator("tbody tr")
    expect(rows).to_have_count(7)
    shown = [[c.strip() for c in r.locator("td").all_inner_texts()] for r in rows.all()]
    assert [r[1] for r in shown] == ["No Fine-Tuning", "Synthetic", "Real", "Hybrid", "100% Synthetic",
                                     "40% Syn + 60% Real", "100% Real"]
    assert shown[0][0] == "In-distribution" and shown[4][0] == "Ratio"
    stored = {X.cell_title(r) + r["experiment"]: r for r in X.stored_runs(db)}
    for r in shown:
        key = r[1] + ("ratio" if r[1].startswith(("100%", "40%")) else "in-distribution")
        s = stored[key]["summary"]
        for m, cell in zip(X.METRICS, r[2:]):
            assert cell == f"{s[m]['mean']:.3f} ± {s[m]['sd']:.3f}", (r[1], m)
    # Best of each section in bold: the bold ROC-AUC of the in-distribution block is its maximum.
    best = max(stored[t + "in-distribution"]["summary"]["roc_auc"]["mean"]
               for t in ("No Fine-Tuning", "Synthetic", "Real", "Hybrid"))
    bold = [b.strip() for b in table.locator("tbody tr").nth(0).locator("xpath=..").locator("td:nth-child(7) strong")
            .all_inner_texts()]
    assert f"{best:.3f}" in " ".join(bold)
    assert table.locator("strong").count() >= 12  # at least one per metric per section
    # Grouped bars, ROC + PR curves and the ratio curve are drawn.
    expect(main.locator(".js-plotly-plot").first).to_be_visible(timeout=T)
    assert main.locator(".js-plotly-plot").count() >= 4  # bars (per metric tab), ROC, PR, ratio
    expect(main.get_by_text("ROC and PR curves")).to_be_visible()
    expect(main.get_by_text("Ratio test: metric vs share of synthetic trials")).to_be_visible()
    expect(main.get_by_role("button", name="Export CSV")).to_be_visible()
    page.screenshot(path="/tmp/ctgen-ui-experiments.png", full_page=True)
