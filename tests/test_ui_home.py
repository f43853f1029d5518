"""Home page: counts from the store (AppTest on a small hand-made store, real Chromium on the mirror
store) and the first-run panel on an empty or missing store."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from conftest import wait_for_app
from core.store import connect
from fixtures.ui.small_store import build

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")


@pytest.fixture
def small_store(tmp_path, monkeypatch) -> Path:
    db = build(tmp_path / "small.duckdb")
    monkeypatch.setenv("CTGEN_DB", str(db))
    return db


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def _expected(db: Path) -> dict[str, int]:
    """Counts read straight from the store, independently of core.store.browse."""
    with connect(db, read_only=True) as con:
        one = lambda sql: con.execute(sql).fetchone()[0]  # noqa: E731
        # IQVIA first (the default preference), then TOP.
        eff = """SELECT nct_id, arg_min(label, CASE label_source WHEN 'iqvia' THEN 0 ELSE 1 END) AS label
                 FROM labels WHERE label IS NOT NULL AND nct_id IN (SELECT nct_id FROM trials) GROUP BY nct_id"""
        return {
            "Trials": one("SELECT count(*) FROM trials"),
            "Labelled": one(f"SELECT count(*) FROM ({eff})"),
            "Success": one(f"SELECT count(*) FROM ({eff}) WHERE label = 1"),
            "Failure": one(f"SELECT count(*) FROM ({eff}) WHERE label = 0"),
            "DrugBank drugs": one("SELECT count(*) FROM drugbank"),
        }


def test_home_shows_store_counts_and_charts(small_store):
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    metrics = _metrics(at)
    for label, n in _expected(small_store).items():
        assert metrics[label] == f"{n:,}", label
    # In the small store only aspirin has >= 3 successful and >= 3 failed trials.
    assert metrics["Eligible interventions"] == "1"
    eligible = next(df.value for df in at.dataframe if "drugbank_id" in df.value.columns)
    assert eligible["drugbank_id"].tolist() == ["DB00945"]
    assert list(eligible.loc[0, ["success", "failure"]]) == [4, 3]
    assert len(at.get("plotly_chart")) == 4
    assert any("1 trials have labels that disagree" in c.value for c in at.caption)
    assert str(small_store) in [c.value for c in at.sidebar.code]
    assert not [s for s in at.subheader if s.value.startswith("First run")]


@pytest.mark.parametrize("kind", ["missing", "empty"])
def test_home_first_run_panel(tmp_path, monkeypatch, kind):
    db = tmp_path / "store.duckdb"
    if kind == "empty":
        with connect(db):
            pass  # migrated, no trials
    monkeypatch.setenv("CTGEN_DB", str(db))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert [s.value for s in at.subheader] == ["First run: load the sample data"]
    assert [b.label for b in at.button] == ["Load sample data"]
    assert not at.metric
    assert (db.exists()) == (kind == "empty")  # rendering never creates the store


@pytest.mark.browser
def test_home_in_browser_shows_mirror_trial_count(mirror_db, streamlit_server, page):
    server = streamlit_server(mirror_db)
    page.goto(server.url)
    wait_for_app(page)
    expected = _expected(mirror_db)
    metric = page.locator('[data-testid="stMetric"]', has_text="Trials").first
    assert metric.locator('[data-testid="stMetricValue"]').inner_text().strip() == f"{expected['Trials']:,}"
    labelled = page.locator('[data-testid="stMetric"]', has_text="Labelled").first
    assert labelled.locator('[data-testid="stMetricValue"]').inner_text().strip() == f"{expected['Labelled']:,}"
    page.locator(".js-plotly-plot").first.wait_for()
    assert page.locator(".js-plotly-plot").count() == 4
    body = page.locator('[data-testid="stMain"]').inner_text()
    assert "First run" not in body
    assert re.search(r"Eligible interventions", body)
    page.screenshot(path="/tmp/ctgen-ui-home.png", full_page=True)
