"""Home page: counts from the store (AppTest on a small hand-made store, real Chromium on the mirror
store) and the first-run panel on an empty or missing store."""
from __future__ import annotations

import re
import time
from pathlib import Path

import duckdb
import pytest
from playwright.sync_api import expect
from streamlit.testing.v1 import AppTest

from conftest import wait_for_app
from core.store import connect
from fixtures.ui.small_store import build

T = 30_000  # ms: generous, the CI machine has 2 cores shared with other tests
ROOT = Path(__file__).resolve().parents[2]
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
    # issue 10: plurals right (was "1 trials have labels that disagree")
    assert any("1 trial has labels that disagree" in c.value for c in at.caption)
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


def test_home_upgrades_an_outdated_store(tmp_path, monkeypatch):
    """A store written before the newest migration: the page says so and upgrades it on request."""
    from core.store.migrations import _ensure_table, all_migrations

    db = tmp_path / "old.duckdb"
    *older, (newest, _) = all_migrations()
    with duckdb.connect(str(db)) as con:
        _ensure_table(con)
        for name, fn in older:
            fn(con)
            con.execute("INSERT INTO _migrations (name) VALUES (?)", [name])
    monkeypatch.setenv("CTGEN_DB", str(db))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert newest in at.warning[0].value and "older than this program" in at.warning[0].value
    at.button[0].click().run()
    assert not at.exception
    assert not at.warning
    assert [s.value for s in at.subheader] == ["First run: load the sample data"]
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM _migrations WHERE name = ?", [newest]).fetchone()[0] == 1


def test_home_says_busy_while_another_process_writes(small_store, monkeypatch):
    """A background writer holds the store: the page waits briefly, then says so instead of hanging."""
    import subprocess
    import sys

    from core import ui

    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True); "
         "time.sleep(60)", str(small_store)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(ui, "READ_WAIT_S", 0.5)
        at = AppTest.from_file(APP, default_timeout=60).run()
        assert not at.exception
        assert "being written right now" in at.warning[0].value
        assert [b.label for b in at.button] == ["Try again"]
    finally:
        holder.kill()
        holder.wait()
    at.button[0].click().run()
    assert _metrics(at)["Trials"] == f"{_expected(small_store)['Trials']:,}"


def test_home_names_a_file_that_is_not_a_store(tmp_path, monkeypatch):
    db = tmp_path / "notes.duckdb"
    db.write_text("not a database\n" * 100)
    monkeypatch.setenv("CTGEN_DB", str(db))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert [e.value for e in at.error] and str(db) in at.error[0].value
    assert "cannot be read as a store" in at.error[0].value
    assert not at.button  # no first-run panel over somebody's file


@pytest.mark.slow
def test_first_run_button_loads_the_sample_data(tmp_path, monkeypatch, mirror_db):
    """The first-run button runs the real sample-data import as a background job with a progress bar,
    then shows the overview; the store then holds what `sample-data` loads (the session's mirror store)."""
    from core.services import home

    db = tmp_path / "fresh.duckdb"
    monkeypatch.setenv("CTGEN_DB", str(db))
    monkeypatch.setenv("CTGEN_RUNS_DIR", str(tmp_path / "runs"))
    at = AppTest.from_file(APP, default_timeout=300).run()
    at.button[0].click().run()
    assert not at.exception, at.exception
    seen_progress = False
    deadline = time.monotonic() + 300
    while (job := home.sample_data_status(db)) is not None and job.active and time.monotonic() < deadline:
        seen_progress = seen_progress or bool(job.progress.get("stage"))
        time.sleep(0.5)
    assert job is not None and job.state == "done", job and job.error
    assert seen_progress  # the page had stages to show while it ran
    at.run()
    assert not at.exception, at.exception
    assert not [e.value for e in at.error]
    expected = _expected(mirror_db)
    assert _expected(db) == expected
    metrics = _metrics(at)
    assert metrics["Trials"] == f"{expected['Trials']:,}" and metrics["Labelled"] == f"{expected['Labelled']:,}"
    assert not [s for s in at.subheader if s.value.startswith("First run")]


@pytest.mark.browser
def test_home_in_browser_shows_mirror_trial_count(mirror_db, streamlit_server, page):
    server = streamlit_server(mirror_db)
    page.goto(server.url)
    wait_for_app(page)
    expected = _expected(mirror_db)
    main = page.locator('[data-testid="stMain"]')
    for label in ("Trials", "Labelled", "Success", "Failure"):
        metric = main.locator('[data-testid="stMetric"]').filter(
            has=page.locator('[data-testid="stMetricLabel"]', has_text=re.compile(f"^{label}$"))).first
        expect(metric.locator('[data-testid="stMetricValue"]')).to_have_text(f"{expected[label]:,}", timeout=T)
    expect(main.locator(".js-plotly-plot")).to_have_count(4, timeout=T)
    expect(main.get_by_text("Eligible interventions for generation")).to_be_visible(timeout=T)
    assert "First run" not in main.inner_text()
    page.screenshot(path="/tmp/ctgen-ui-home.png")


# ---- issue 12 / issue 10: full records on Home, the fetch offer, the synthetic count, 1,024 px ----

CTA = ROOT / "tests" / "fixtures" / "ctgov_api"
FIX = ROOT / "tests" / "fixtures" / "ingest"


@pytest.fixture
def top_store(tmp_path, monkeypatch) -> Path:
    """9 labelled TOP-only trials (7 of them held by the API stand-in) and one full record."""
    from core.ingest import ingest

    monkeypatch.setenv("CTGEN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CTGEN_RUNS_DIR", str(tmp_path / "runs"))
    db = tmp_path / "top.duckdb"
    ingest(db, xml=[FIX / "xml" / "NCT90000001.xml"], top=[CTA / "top_fetch.csv"],
           outcomes=CTA / "outcomes_fetch.csv", outcome_map=FIX / "outcome2label.txt",
           drugbank=FIX / "drugbank_small.csv")
    with connect(db) as con:   # NCT90000001 labelled too, so one labelled trial has a full record
        con.execute("INSERT INTO labels VALUES ('NCT90000001', 'iqvia', 0, 'Terminated, Lack of efficacy')")
    monkeypatch.setenv("CTGEN_DB", str(db))
    return db


def _full_count(db: Path) -> int:
    with connect(db, read_only=True) as con:
        return con.execute("""SELECT count(DISTINCT nct_id) FROM labels JOIN trials USING (nct_id)
                              WHERE label IS NOT NULL AND list_has_any(sources, ['ctgov_xml', 'ctgov_json'])
                           """).fetchall()[0][0]


def test_home_counts_full_records_and_synthetic_trials(small_store, monkeypatch):
    monkeypatch.setenv("CTGEN_CTGOV_API", "http://127.0.0.1:9/api/v2")   # nothing listens there
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    metrics = _metrics(at)
    with connect(small_store, read_only=True) as con:
        synthetic = con.execute("SELECT count(*) FROM synthetic_trials").fetchall()[0][0]
    assert metrics["Labelled, full record"] == f"{_full_count(small_store):,}" == "6"
    assert metrics["Synthetic trials"] == f"{synthetic:,}"
    # 2 labelled trials are TOP rows only; the API is unreachable: said plainly, no button
    assert any("2 labelled trials have only a TOP row" in m.value for m in at.markdown)
    info = " ".join(i.value for i in at.info)
    assert "cannot be reached from this machine" in info and "fetch-ctgov --db" in info
    assert not [b for b in at.button if b.label.startswith("Fetch full records")]


def test_home_fetches_full_records_in_the_background(top_store, monkeypatch):
    """Where the API answers (the local stand-in), Home offers the fetch; the button starts `fetch-ctgov
    --labelled` detached; afterwards the page counts the new full records."""
    import time

    from tests.servers.ctgov_server import serve
    from core.services import home

    with serve() as srv:
        monkeypatch.setenv("CTGEN_CTGOV_API", srv.base_url)
        at = AppTest.from_file(APP, default_timeout=60).run()
        assert not at.exception
        assert _metrics(at)["Labelled, full record"] == "1"
        button = next(b for b in at.button if b.label.startswith("Fetch full records"))
        assert button.label == "Fetch full records for 9 labelled trials"
        button.click().run()
        assert not at.exception
        deadline = time.monotonic() + 120
        while (home.fetch_status(top_store) or {}).get("running") and time.monotonic() < deadline:
            time.sleep(0.3)
        status = home.fetch_status(top_store)
        assert status and not status["running"], status
        assert "fetched 7" in status["log_tail"] and "not found upstream 2" in status["log_tail"]
        from core import ui

        ui.clear_cache()
        at = AppTest.from_file(APP, default_timeout=60).run()
        assert _metrics(at)["Labelled, full record"] == "8" == f"{_full_count(top_store):,}"
        assert any("2 labelled trials have only a TOP row" in m.value for m in at.markdown)
        assert next(b for b in at.button if b.label.startswith("Fetch full records")).label == \
            "Fetch full records for 2 labelled trials"


@pytest.mark.browser
def test_home_holds_its_layout_at_1024_px(mirror_db, streamlit_server, browser):
    """At 1,024 px wide (sidebar open) no metric label is cut, nothing overflows sideways, and the page
    says plainly that full records cannot be fetched from here."""
    server = streamlit_server(mirror_db, env={"CTGEN_CTGOV_API": "http://127.0.0.1:9/api/v2"})
    ctx = browser.new_context(viewport={"width": 1024, "height": 900})
    pg = ctx.new_page()
    try:
        pg.goto(server.url)
        wait_for_app(pg)
        main = pg.locator('[data-testid="stMain"]')
        expect(main.locator('[data-testid="stMetric"]').first).to_be_visible(timeout=T)
        full = _full_count(mirror_db)
        metric = main.locator('[data-testid="stMetric"]').filter(
            has=pg.locator('[data-testid="stMetricLabel"]', has_text="Labelled, full record")).first
        expect(metric.locator('[data-testid="stMetricValue"]')).to_have_text(f"{full:,}", timeout=T)
        expect(main.get_by_text("cannot be reached from this machine")).to_be_visible(timeout=T)
        labels = main.locator('[data-testid="stMetricLabel"]')
        assert labels.count() >= 11
        cut = pg.evaluate("""() => [...document.querySelectorAll('[data-testid="stMain"] [data-testid="stMetricLabel"]')]
            .filter(e => { const p = e.querySelector('p') || e; return p.scrollWidth > p.clientWidth + 1; })
            .map(e => e.innerText)""")
        assert cut == []
        assert pg.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
        assert pg.title() == "Home · Synthetic trial workbench"
        # the first page is called Home (not "app", the entry script's name)
        nav = pg.locator('[data-testid="stSidebar"]')
        expect(nav.get_by_role("link", name="Home", exact=True)).to_be_visible(timeout=T)
        assert nav.get_by_text("app", exact=True).count() == 0
        pg.screenshot(path="/tmp/ctgen-ui-home-1024.png", full_page=True)
    finally:
        ctx.close()
