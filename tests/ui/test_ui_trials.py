"""Trials page: filters narrow the server-side paged table, ?nct= opens a record (AppTest on a
small hand-made store), and the real page in Chromium on the mirror store."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect
from streamlit.testing.v1 import AppTest

from conftest import wait_for_app
from core.store import browse, connect
from fixtures.ui.small_store import TRIALS, build, criteria

T = 30_000  # ms: generous, the CI machine has 2 cores shared with other tests
ROOT = Path(__file__).resolve().parents[2]
PAGE = str(ROOT / "pages" / "1_Trials.py")


@pytest.fixture
def small_store(tmp_path, monkeypatch) -> Path:
    db = build(tmp_path / "small.duckdb")
    monkeypatch.setenv("CTGEN_DB", str(db))
    return db


def _rows(at: AppTest) -> list[str]:
    return _frame_with(at, "nct_id")["nct_id"].tolist()


def _frame_with(at: AppTest, column: str):
    return next(df.value for df in at.dataframe if column in df.value.columns)


def _match_caption(at: AppTest) -> int:
    text = next(c.value for c in at.caption if "trials match" in c.value)
    return int(re.match(r"([\d,]+) trials match", text).group(1).replace(",", ""))


def test_filters_narrow_the_table(small_store):
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    assert _match_caption(at) == len(TRIALS)
    assert _rows(at) == sorted(TRIALS)

    at.multiselect(key="f_label").set_value(["failure"]).run()
    failures = sorted(n for n, t in TRIALS.items()
                      if (t[4].get("iqvia") or t[4].get("top") or (None,))[0] == 0)
    assert _rows(at) == failures and _match_caption(at) == len(failures)

    at.multiselect(key="f_label").set_value(["conflicting"]).run()
    assert _rows(at) == ["NCT90000009"]

    at.multiselect(key="f_label").set_value([]).run()
    at.multiselect(key="f_phase").set_value(["Phase 3"]).run()
    assert _rows(at) == sorted(n for n, t in TRIALS.items() if t[0] == "Phase 3")
    at.multiselect(key="f_source").set_value(["top"]).run()
    assert _rows(at) == sorted(n for n, t in TRIALS.items() if t[0] == "Phase 3" and "top" in t[5])

    at.multiselect(key="f_phase").set_value([]).run()
    at.multiselect(key="f_source").set_value([]).run()
    # (AppTest cannot type a new option into a selectbox; typed names are tested on browse below.)
    at.selectbox(key="f_intervention").set_value("Aspirin").run()
    assert _rows(at) == sorted(n for n, t in TRIALS.items() if t[3][0] == "DB00945")
    at.selectbox(key="f_condition").set_value("Stroke").run()
    assert _rows(at) == sorted(n for n, t in TRIALS.items() if t[3][0] == "DB00945" and t[2] == "Stroke")
    at.multiselect(key="f_status").set_value(["Terminated"]).run()
    assert _rows(at) == ["NCT90000005"]

    at.selectbox(key="f_intervention").set_value(None).run()
    at.selectbox(key="f_condition").set_value(None).run()
    at.multiselect(key="f_status").set_value([]).run()
    at.text_input(key="q").set_value("glowing-umbrella").run()  # in one summary only
    assert _rows(at) == ["NCT90000004"]
    at.text_input(key="q").set_value("study NCT90000007").run()  # in one trial's criteria only
    assert _rows(at) == ["NCT90000007"]
    at.text_input(key="q").set_value("100%").run()  # LIKE wildcards are taken literally
    assert _match_caption(at) == 0
    assert not at.exception


def test_typed_names_match_substrings_and_drugbank_names(small_store):
    with connect(small_store, read_only=True) as con:
        def ids(**kw):
            return browse.search_trials(con, browse.TrialFilter(**kw), limit=100)[0]["nct_id"].tolist()

        aspirin = sorted(n for n, t in TRIALS.items() if t[3][0] == "DB00945")
        # The DrugBank common name finds trials that list the drug under a synonym.
        assert ids(intervention="salicylic") == aspirin
        assert ids(intervention="ASPIR") == aspirin
        assert ids(condition="diabet") == sorted(n for n, t in TRIALS.items() if "Diabetes" in t[2])
        assert ids(intervention="no such drug") == []


def test_search_pages_on_the_server(small_store):
    """Paging is LIMIT/OFFSET with the total from the same query."""
    with connect(small_store, read_only=True) as con:
        first, total = browse.search_trials(con, browse.TrialFilter(), limit=4, offset=0)
        last, total2 = browse.search_trials(con, browse.TrialFilter(), limit=4, offset=8)
        past, total3 = browse.search_trials(con, browse.TrialFilter(), limit=4, offset=40)
    assert total == total2 == total3 == len(TRIALS)
    assert first["nct_id"].tolist() == sorted(TRIALS)[:4]
    assert last["nct_id"].tolist() == sorted(TRIALS)[8:]
    assert past.empty


def test_query_param_opens_record_with_labels_and_conflict(small_store):
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.query_params["nct"] = "NCT90000009"
    at.run()
    assert not at.exception
    assert at.title[0].value.startswith("NCT90000009: ")
    assert criteria("NCT90000009") in [t.value for t in at.text]
    warning = " ".join(w.value for w in at.warning)
    assert "Label conflict" in warning and "IQVIA says success" in warning and "TOP says failure" in warning
    labels = _frame_with(at, "original outcome text")
    assert labels.set_index("source")["original outcome text"].to_dict() == {
        "iqvia": "Completed, Positive outcome/primary endpoint(s) met",
        "top": "terminated; sponsor decision",
    }
    assert any("Effective label: **success (from iqvia)**" in m.value for m in at.markdown)
    ivs = _frame_with(at, "DrugBank")
    assert ivs.loc[0, "DrugBank"] == "Tamoxifen (DB00675)" and ivs.loc[0, "rule"] == "synonym_normalized"
    assert any("<nct_id>NCT90000009</nct_id>" in c.value for c in at.main.code)  # raw document
    assert at.expander[-1].label.startswith("Raw source document (xml")

    # A trial with no label says so; an unknown id says it is not in the store.
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.query_params["nct"] = "nct90000010"
    at.run()
    assert at.title[0].value.startswith("NCT90000010: ")
    assert any("Effective label: unlabelled" in m.value for m in at.markdown)
    assert any("No label from any source" in m.value for m in at.markdown)
    assert not at.warning
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.query_params["nct"] = "NCT99999999"
    at.run()
    assert [w.value for w in at.warning] == ["NCT99999999 is not in the store."]


def test_label_preference_changes_effective_label(small_store, monkeypatch):
    monkeypatch.setenv("CTGEN_LABEL_PREFERENCE", "top,iqvia")
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.query_params["nct"] = "NCT90000009"
    at.run()
    assert any(":red-badge[Effective label: failure (from top)]" in m.value for m in at.markdown)
    assert any("Effective label: **failure (from top)**" in m.value for m in at.markdown)


def _open_known_trial(mirror_db) -> tuple[str, str]:
    """The first trial by NCT id that has eligibility criteria, and one line of them."""
    with connect(mirror_db, read_only=True) as con:
        nct, text = con.execute(
            "SELECT nct_id, eligibility_criteria FROM trials WHERE length(eligibility_criteria) > 80 "
            "ORDER BY nct_id LIMIT 1").fetchone()
    line = max((ln.strip() for ln in text.splitlines()), key=len)
    return nct, line


@pytest.mark.browser
def test_trials_in_browser(mirror_db, streamlit_server, page):
    server = streamlit_server(mirror_db)
    with connect(mirror_db, read_only=True) as con:
        total = con.execute("SELECT count(*) FROM trials").fetchone()[0]
        first_nct, first_title = con.execute(
            "SELECT nct_id, brief_title FROM trials ORDER BY nct_id LIMIT 1").fetchone()
    page.goto(server.url + "/Trials")
    wait_for_app(page)
    main = page.locator('[data-testid="stMain"]')
    expect(main.get_by_text(f"{total:,} trials match")).to_be_visible(timeout=T)
    # The table is a canvas grid; its visible cells are mirrored in DOM cells glide-cell-<col>-<row>
    # (column 0 holds the row selectors, column 1 the NCT id, column 2 the title).
    grid = main.locator('[data-testid="stDataFrame"]').first
    expect(grid.locator('[data-testid="glide-cell-1-0"]')).to_have_text(first_nct, timeout=T)
    expect(grid.locator('[data-testid="glide-cell-2-0"]')).to_have_text(first_title.strip(), timeout=T)
    page.screenshot(path="/tmp/ctgen-ui-trials.png")

    # Selecting a row (its checkbox, drawn on the canvas) opens that trial's record.
    with connect(mirror_db, read_only=True) as con:
        third = con.execute("SELECT nct_id FROM trials ORDER BY nct_id LIMIT 1 OFFSET 2").fetchone()[0]
    expect(grid.locator('[data-testid="glide-cell-1-2"]')).to_have_text(third, timeout=T)
    box = grid.bounding_box()
    row_h = 35  # Streamlit's default row (and header) height in px
    page.mouse.click(box["x"] + 15, box["y"] + row_h + 2 * row_h + row_h / 2)
    expect(main.get_by_role("heading", name=re.compile(third))).to_be_visible(timeout=T)
    assert page.url.endswith(f"/Trials?nct={third}")
    main.get_by_role("button", name="Back to the list").click()
    expect(main.get_by_text(f"{total:,} trials match")).to_be_visible(timeout=T)

    # A typed intervention name (not one of the listed options) filters by substring, also on
    # the DrugBank common name ('salicylic' -> acetylsalicylic acid, listed as aspirin).
    with connect(mirror_db, read_only=True) as con:
        n_typed = con.execute(
            """SELECT count(*) FROM trials t WHERE
                 len(list_filter(t.interventions, lambda x: x.name ILIKE '%salicylic%')) > 0
                 OR nct_id IN (SELECT m.nct_id FROM intervention_matches m JOIN drugbank d USING (drugbank_id)
                               WHERE d.common_name ILIKE '%salicylic%')""").fetchone()[0]
    assert 0 < n_typed < total
    main.locator('[data-testid="stSelectbox"]').first.click()
    page.keyboard.type("salicylic")
    page.keyboard.press("Enter")
    expect(main.get_by_text(re.compile(r"trials match"))).to_contain_text(f"{n_typed:,} trials match", timeout=T)

    nct, line = _open_known_trial(mirror_db)
    page.goto(server.url + "/Trials?nct=" + nct)
    wait_for_app(page)
    expect(main.get_by_role("heading", name=re.compile(nct))).to_be_visible(timeout=T)
    criteria_box = main.locator(".st-key-eligibility")
    expect(criteria_box).to_contain_text(line, timeout=T)
    page.screenshot(path="/tmp/ctgen-ui-record.png")


# ---- issues 10 and 12: TOP rows, the record filter, criteria as written, plurals, 1,024 px ----

def test_record_filter_top_row_titles_and_counts(small_store):
    top_only = sorted(n for n, t in TRIALS.items() if t[5] == ["top"])
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    # how many labelled trials have a full record (6 of 8 here; 2 are TOP rows only)
    assert any(c.value.startswith("6 of 8 labelled trials have a full ClinicalTrials.gov record; 2 are only a TOP row")
               for c in at.caption)
    at.multiselect(key="f_record").set_value(["TOP row only"]).run()
    assert _rows(at) == top_only == ["NCT90000003", "NCT90000006"]
    frame = _frame_with(at, "record")
    assert set(frame["record"]) == {"TOP row only"}
    at.multiselect(key="f_record").set_value(["full record"]).run()
    assert _rows(at) == sorted(set(TRIALS) - set(top_only))
    at.multiselect(key="f_record").set_value(["full record"]).run()
    at.multiselect(key="f_label").set_value(["conflicting"]).run()
    assert _rows(at) == ["NCT90000009"]
    assert any(c.value.startswith("1 trial matches ·") for c in at.caption)   # not "1 trials match"


def test_a_top_row_reads_as_one(small_store):
    """A TOP-only trial without a title: "(TOP row: no title)" in the list and the record, never None."""
    with connect(small_store) as con:
        con.execute("UPDATE trials SET brief_title = NULL, official_title = NULL WHERE nct_id = 'NCT90000003'")
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    titles = _frame_with(at, "title").set_index("nct_id")["title"]
    assert titles["NCT90000003"] == "(TOP row: no title)"
    assert titles.notna().all()
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.query_params["nct"] = "NCT90000003"
    at.run()
    assert at.title[0].value == "NCT90000003: (TOP row: no title)"
    assert "None" not in at.title[0].value


def test_browse_record_filter(small_store):
    with connect(small_store, read_only=True) as con:
        def ids(**kw):
            return browse.search_trials(con, browse.TrialFilter(**kw), limit=100)[0]["nct_id"].tolist()

        assert ids(records=("full record", "TOP row only")) == sorted(TRIALS)
        assert ids(records=("TOP row only",)) == ["NCT90000003", "NCT90000006"]
        with pytest.raises(ValueError, match="unknown record filter"):
            ids(records=("half",))


@pytest.mark.browser
def test_trials_hold_their_layout_at_1024_px(mirror_db, streamlit_server, browser):
    """At 1,024 px wide: every filter keeps a readable width and its whole label, nothing overflows
    sideways; a record's criteria keep their line breaks and are not wrapped again."""
    server = streamlit_server(mirror_db)
    ctx = browser.new_context(viewport={"width": 1024, "height": 900})
    pg = ctx.new_page()
    try:
        pg.goto(server.url + "/Trials")
        wait_for_app(pg)
        main = pg.locator('[data-testid="stMain"]')
        expect(main.get_by_text(re.compile(r"trials match"))).to_be_visible(timeout=T)
        filters = main.locator(".st-key-trial_filters")
        expect(filters.locator('[data-testid="stMultiSelect"]')).to_have_count(5, timeout=T)
        expect(filters.locator('[data-testid="stSelectbox"]')).to_have_count(2, timeout=T)
        widths = pg.evaluate("""() => [...document.querySelectorAll(
            '.st-key-trial_filters [data-testid="stSelectbox"], .st-key-trial_filters [data-testid="stMultiSelect"]')]
            .map(e => Math.round(e.getBoundingClientRect().width))""")
        assert len(widths) == 7 and min(widths) >= 200, widths
        cut = pg.evaluate("""() => [...document.querySelectorAll('.st-key-trial_filters [data-testid="stWidgetLabel"] p')]
            .filter(p => p.scrollWidth > p.clientWidth + 1).map(p => p.innerText)""")
        assert cut == []
        assert pg.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
        pg.screenshot(path="/tmp/ctgen-ui-trials-1024.png", full_page=True)

        # a TOP-only record: its title stands in, its criteria shown as written
        with connect(mirror_db, read_only=True) as con:
            nct, text = con.execute(
                """SELECT nct_id, eligibility_criteria FROM trials WHERE sources = ['top'] AND brief_title IS NULL
                   AND eligibility_criteria LIKE '%\n%' ORDER BY length(eligibility_criteria) DESC LIMIT 1""").fetchall()[0]
        pg.goto(server.url + "/Trials?nct=" + nct)
        wait_for_app(pg)
        expect(main.get_by_role("heading", name=f"{nct}: (TOP row: no title)")).to_be_visible(timeout=T)
        box = main.locator(".st-key-eligibility [data-testid='stText']").first
        expect(box).to_be_visible(timeout=T)
        style = box.evaluate("e => getComputedStyle(e.querySelector('span') || e).whiteSpace")
        assert style == "pre", style
        # as many rendered lines as the text has (line height from the element's style)
        lines = box.evaluate("""e => { const s = getComputedStyle(e); const lh = parseFloat(s.lineHeight);
                                      return Math.round(e.scrollHeight / lh); }""")
        assert abs(lines - len(text.splitlines())) <= 1, (lines, len(text.splitlines()))
        assert pg.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    finally:
        ctx.close()


def test_home_and_trials_pages_only_render():
    """Issue 8: Home and Trials reach the store only through core.services / core.ui (no core.store, no
    duckdb, no ingest of their own)."""
    import ast

    for path in (ROOT / "app.py", Path(PAGE)):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not {m for m in names if m == "duckdb" or m.startswith(("core.store", "core.ingest"))}, (path, names)
