"""Synthetic reports review in a real browser: the decision lands on the trial the form names, even after
a table row has been selected; an earlier decision is shown before it is replaced; every change is kept
in the review history (who, when, old and new values)."""
from __future__ import annotations

import getpass
import re

import pytest
from playwright.sync_api import expect

from conftest import wait_for_app
from core.store import connect
from core.store.synthetic import list_synthetic, set_review
from fixtures.analysis.store import FIXTURE_SOURCE, build_store

pytestmark = pytest.mark.browser
T = 60_000


def _reviews(db) -> dict[str, tuple]:
    with connect(db, read_only=True) as con:
        return {t["id"]: (t["review_status"], t["review_note"]) for t in list_synthetic(con)}


def _select_row(page, row: int) -> None:
    """Click the row-selection cell of a row of the (canvas) data grid: 35 px rows under a 35 px header."""
    grid = page.locator('[data-testid="stDataFrame"]').first
    grid.wait_for()
    box = grid.bounding_box()
    page.mouse.click(box["x"] + 14, box["y"] + 35 + 35 * row + 17)
    wait_for_app(page)


def _pick(page, label: str, option: str) -> None:
    box = page.get_by_role("combobox", name=label)
    box.click()
    page.get_by_role("option", name=option).first.click()
    wait_for_app(page)


@pytest.fixture
def review_db(tmp_path):
    db = build_store(tmp_path / "review.duckdb", n_real=6, synthetic="dermatology", n_synth=3)
    with connect(db) as con:
        set_review(con, f"{FIXTURE_SOURCE}:0", "accepted", "keep this one")
    return db


def test_decision_lands_on_the_picked_trial_after_a_row_was_selected(review_db, streamlit_server, page):
    with connect(review_db, read_only=True) as con:
        ids = [t["id"] for t in list_synthetic(con)]
    server = streamlit_server(review_db)
    page.goto(server.url + "/Synthetic_reports")
    wait_for_app(page)
    page.get_by_text("3 of 3 synthetic trials").wait_for(timeout=T)
    first = f"{FIXTURE_SOURCE}:0"
    target = f"{FIXTURE_SOURCE}:2"
    row = ids.index(first)
    _select_row(page, row)
    expect(page.get_by_role("combobox", name="Trial")).to_have_value(first, timeout=T)
    _pick(page, "Trial", target)
    # the dropdown keeps the picked trial (it used to snap back to the selected table row)
    expect(page.get_by_role("combobox", name="Trial")).to_have_value(target, timeout=T)
    form = page.get_by_test_id("stForm")
    expect(form.get_by_text(re.compile(f"Review of {re.escape(target)}"))).to_be_visible(timeout=T)
    form.get_by_role("radiogroup", name="Decision").get_by_text("rejected", exact=True).click()
    form.get_by_role("textbox", name="Note").fill("reads like a template")
    form.get_by_role("button", name=re.compile("Save review")).click()
    page.get_by_text(f"Saved: {target} is rejected.").wait_for(timeout=T)
    after = _reviews(review_db)
    assert after[target] == ("rejected", "reads like a template")
    assert after[first] == ("accepted", "keep this one")      # the selected row's trial is unchanged
    assert after[f"{FIXTURE_SOURCE}:1"] == (None, None)
    # the stored decision is read back and shown
    expect(page.get_by_text(re.compile(r"Stored decision: rejected"))).to_be_visible(timeout=T)


def test_an_earlier_decision_is_shown_before_it_is_replaced_and_kept_in_history(review_db, streamlit_server, page):
    first = f"{FIXTURE_SOURCE}:0"
    server = streamlit_server(review_db)
    page.goto(server.url + "/Synthetic_reports")
    wait_for_app(page)
    _pick(page, "Trial", first)
    form = page.get_by_test_id("stForm")
    # the earlier decision is on the form before anything is changed
    expect(form.get_by_text(re.compile(r"Earlier decision: accepted — “keep this one”"))).to_be_visible(timeout=T)
    form.get_by_role("radiogroup", name="Decision").get_by_text("flagged", exact=True).click()
    form.get_by_role("textbox", name="Note").fill("check the dose")
    form.get_by_role("button", name=re.compile("Save review")).click()
    # replacing a decision needs a confirmation that shows the earlier one
    confirm = page.get_by_role("button", name=re.compile("Replace"))
    expect(confirm).to_be_visible(timeout=T)
    expect(page.get_by_text(re.compile(r"accepted.*→.*flagged"))).to_be_visible()
    assert _reviews(review_db)[first] == ("accepted", "keep this one")  # nothing written yet
    confirm.click()
    page.get_by_text(f"Saved: {first} is flagged.").wait_for(timeout=T)
    assert _reviews(review_db)[first] == ("flagged", "check the dose")

    with connect(review_db, read_only=True) as con:
        from core.store.synthetic import review_history

        hist = review_history(con, first)
    assert [(h["old_status"], h["new_status"]) for h in hist][:2] == [("accepted", "flagged"), (None, "accepted")]
    assert hist[0]["old_note"] == "keep this one" and hist[0]["new_note"] == "check the dose"
    assert hist[0]["reviewer"] == getpass.getuser() and hist[0]["changed_at"] is not None
    # the page shows the history table
    page.get_by_text("Review history").click()
    table = page.locator('[data-testid="stTable"]').filter(has_text="check the dose")
    expect(table).to_be_visible(timeout=T)
    assert getpass.getuser() in table.inner_text()
