"""Views a researcher can trust, in a real browser: Table 3 in the paper's whole layout on a store without
synthetic trials (a button runs exactly one missing cell), wording (positive badges, reasons as text,
plurals, export of invalid / rejected trials as a choice) and layouts that hold at 1,024 px."""
from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import expect

from conftest import wait_for_app
from core.store import connect
from fixtures.analysis.store import build_store, dermatology_record

pytestmark = pytest.mark.browser
T = 60_000
NEAR = "NCT01234567"


def _wording_store(path):
    """Real fixture trials plus two synthetic ones: a near copy (invalid) whose reasons begin with "[X]",
    and a clean one."""
    from core.store.synthetic import save_synthetic

    db = build_store(path, n_real=6, synthetic="none")
    with connect(db) as con:
        save_synthetic(con, {
            "id": "fx:copy", "source": "fx", "item_index": 0, "intended_intervention": "Tacrolimus",
            "intended_label": 1, "record": dermatology_record(0, nct=""), "example_nct_ids": [NEAR],
            "reasons": ["[X] marks the dose that worked", "[ ] an open question", "*not* emphasis"],
            "validation_status": "invalid",
            "validation": {"parses": {"ok": True, "severity": "ok", "detail": "parsed"},
                           "near_copy": {"ok": False, "severity": "invalid", "detail": {
                               "examples": [{"nct_id": NEAR, "ngram_overlap": 0.9, "longest_run": 120}],
                               "thresholds": {"ngram_overlap": 0.5, "longest_run": 60, "n": 8}}}}})
        save_synthetic(con, {
            "id": "fx:clean", "source": "fx", "item_index": 1, "intended_intervention": "Tacrolimus",
            "intended_label": 0, "record": dermatology_record(1, nct=""), "example_nct_ids": [],
            "reasons": ["a reason"], "validation_status": "ok",
            "validation": {"parses": {"ok": True, "severity": "ok", "detail": "parsed"},
                           "near_copy": {"ok": True, "severity": "invalid", "detail": "no few-shot examples"}}})
    return db


def _pick(page, label: str, option: str) -> None:
    page.get_by_role("combobox", name=label).click()
    page.get_by_role("option", name=option).first.click()
    wait_for_app(page)


def test_badges_reasons_plurals_and_export_choice(tmp_path, streamlit_server, page):
    db = _wording_store(tmp_path / "wording.duckdb")
    server = streamlit_server(db)
    page.goto(server.url + "/Synthetic_reports")
    wait_for_app(page)
    page.get_by_text("2 of 2 synthetic trials").wait_for(timeout=T)
    _pick(page, "Trial", "fx:copy")
    main = page.locator('[data-testid="stMain"]')
    # positive wording: what the check found, in red; no "✗ not a near copy" double negative
    badge = main.get_by_text(f"near copy of {NEAR}")
    expect(badge).to_be_visible(timeout=T)
    colour = badge.evaluate("e => getComputedStyle(e.closest('span[class]') || e).color")
    r, g, b = (int(x) for x in re.findall(r"\d+", colour)[:3])
    assert r > 150 and g < 120 and b < 120, colour
    assert "not a near copy" not in main.inner_text()
    # reasons as written: "[X]" stays text, never a checkbox; "*not*" is not emphasis
    reasons = page.locator(".st-key-syn_reasons")
    expect(reasons.get_by_text("1. [X] marks the dose that worked")).to_be_visible()
    assert reasons.locator("input[type=checkbox]").count() == 0
    expect(reasons.get_by_text("3. *not* emphasis")).to_be_visible()

    # export: one filtered trial (the clean one) says "1 trial"; with the invalid one a choice appears
    _pick(page, "Validation", "ok")
    expect(page.get_by_role("button", name="Prepare export of 1 trial", exact=True)).to_be_visible(timeout=T)
    _pick(page, "Validation", "All")
    expect(main.get_by_text(re.compile(r"1 trial of these cannot be used for training: 1 invalid"))).to_be_visible(
        timeout=T)
    expect(page.get_by_role("button", name="Prepare export of 1 trial", exact=True)).to_be_visible()  # excluded
    page.get_by_text("export them too (marked in the data)").click()
    wait_for_app(page)
    expect(page.get_by_role("button", name="Prepare export of 2 trials", exact=True)).to_be_visible(timeout=T)


def _overflowing(page) -> list[str]:
    """Widget labels and tab lists whose content does not fit their box, and page-wide horizontal scroll."""
    return page.evaluate("""() => {
        const bad = [];
        for (const el of document.querySelectorAll('[data-testid="stWidgetLabel"] p, [role="tablist"]'))
            if (el.scrollWidth > el.clientWidth + 1) bad.push((el.innerText || '').slice(0, 40));
        if (document.documentElement.scrollWidth > window.innerWidth + 1) bad.push('page scrolls sideways');
        return bad;
    }""")


def test_layouts_hold_at_1024_px(tmp_path, streamlit_server, browser):
    db = _wording_store(tmp_path / "narrow.duckdb")
    server = streamlit_server(db)
    ctx = browser.new_context(viewport={"width": 1024, "height": 900})
    page = ctx.new_page()
    page.set_default_timeout(T)
    try:
        for path, ready in (("/Synthetic_reports", "2 of 2 synthetic trials"),
                            ("/Experiments", "Table 3: the paper's layout"),
                            ("/Fine-tune", "Run settings")):
            page.goto(server.url + path)
            wait_for_app(page)
            page.get_by_text(ready).first.wait_for()
            assert _overflowing(page) == [], path
            for label in ("Intervention", "Validation") if path == "/Synthetic_reports" else ():
                box = page.locator('[data-testid="stWidgetLabel"]', has_text=label).first.bounding_box()
                assert box["width"] > 60, (label, box)   # the label is readable, not squeezed to "A…"
        page.screenshot(path="/tmp/ctgen-ui-1024.png", full_page=True)
    finally:
        ctx.close()


def test_table3_layout_is_complete_without_synthetic_trials_and_runs_one_cell(mirror_db_copy, tmp_path,
                                                                              streamlit_server, page):
    runs = tmp_path / "runs"
    server = streamlit_server(mirror_db_copy, env={"CTGEN_RUNS_DIR": str(runs)})
    page.goto(server.url + "/Experiments")
    wait_for_app(page)
    layout = page.locator(".st-key-xp_layout")
    expect(layout.get_by_text("Table 3: the paper's layout").or_(page.get_by_text("Table 3: the paper's layout"))
           .first).to_be_visible(timeout=T)
    cells = layout.locator('[class*="st-key-xp_cell_"]')
    expect(cells).to_have_count(14, timeout=T)
    text = [c.inner_text() for c in cells.all()]
    wanted = ["No Fine-Tuning", "Synthetic", "Real", "Hybrid", "100% Synthetic", "80% Syn + 20% Real",
              "60% Syn + 40% Real", "40% Syn + 60% Real", "20% Syn + 80% Real", "100% Real",
              "No Fine-Tuning", "Synthetic", "Real", "Hybrid"]
    for t, w in zip(text, wanted):
        assert w in t, (w, t)
    assert "In-distribution" in text[0] and "Ratio" in text[4] and "Generalization" in text[10]
    # the paper's published values beside ours (ROC-AUC shown by default), with the note that the data differ
    assert "0.689 ± 0.009" in text[2] and "0.711 ± 0.001" in text[13] and "0.566 ± 0.015" in text[4]
    expect(layout.get_by_text(re.compile("data differ"))).to_be_visible()
    assert all("not run" in t for t in text)
    # no synthetic trials: the cells that need them cannot start and say why; real-only cells can
    for k in (1, 3, 4, 5, 11, 13):
        assert cells.nth(k).get_by_role("button").is_disabled(), text[k]
        assert "synthetic" in text[k].lower()
    for k in (0, 2, 9, 10, 12):
        assert cells.nth(k).get_by_role("button").is_enabled(), text[k]

    cells.nth(2).get_by_role("button").click()       # In-distribution · Real
    expect(page.get_by_text(re.compile(r"Started In-distribution · Real: run "))).to_be_visible(timeout=T)
    jobs = [json.loads(p.read_text()) for p in runs.glob("*/job.json")]
    assert len(jobs) == 1
    argv = jobs[0]["argv"]
    assert argv[argv.index("--experiment") + 1] == "in-distribution" and argv[argv.index("--train") + 1] == "real"
    assert argv[argv.index("--model") + 1] == "tfidf"
    # it finishes and its value fills exactly that row
    for _ in range(90):
        page.wait_for_timeout(2000)
        page.reload()
        wait_for_app(page)
        if "not run" not in cells.nth(2).inner_text():
            break
    row = cells.nth(2).inner_text()
    assert re.search(r"0\.\d{3} ± 0\.\d{3}.*0\.689 ± 0\.009", row, re.S), row
    assert all("not run" in cells.nth(k).inner_text() for k in range(14) if k != 2)
