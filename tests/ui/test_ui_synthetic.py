"""Synthetic reports: a real browser lists a generated trial beside its examples and persists an accept;
the export formats round-trip (JSONL, Parquet, `datasets.load_from_disk`) and carry no key; the overlap
highlighting marks exactly the shared word runs."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid

import pyarrow.parquet as pq
import pytest

from conftest import wait_for_app
from core import export
from core.review import highlight_html, shared_spans
from core.store import connect
from core.store.synthetic import list_synthetic
from tests.servers.openai_server import serve

KEY = f"sk-test-{uuid.uuid4().hex}"


@pytest.fixture
def generated(mirror_db_copy, tmp_path):
    """The mirror store plus 3 synthetic trials generated through the openai backend (one run)."""
    # The CLI in its own process (Playwright's sync API keeps an event loop running in this one).
    env = {**os.environ, "CTGEN_RUNS_DIR": str(tmp_path / "runs"), "OPENAI_API_KEY": KEY}
    with serve() as srv:
        out = subprocess.run([sys.executable, "-m", "core", "generate", "--db", str(mirror_db_copy), "--n", "3",
                              "--backend", "openai", "--base-url", srv.base_url, "--seed", "5", "--concurrency", "3",
                              "--run-id", "ui-run", "--no-progress"], env=env, capture_output=True, text=True,
                             timeout=300)
        assert {r["authorization"] for r in srv.requests} == {f"Bearer {KEY}"}
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1])["done"] == 3
    return mirror_db_copy


def test_export_round_trips_and_carries_no_key(generated, tmp_path):
    with connect(generated, read_only=True) as con:
        trials = list_synthetic(con)
    rows = export.export_rows(trials)
    assert [r["id"] for r in rows] == [t["id"] for t in trials]

    lines = export.to_jsonl(rows).decode().splitlines()
    first = json.loads(lines[0])
    assert len(lines) == 3 and first["record"]["brief_title"] == trials[0]["record"]["brief_title"]
    assert first["label_text"] in ("success", "failure") and len(first["reasons"]) == 5
    assert "overall_status" not in first["text"].lower()

    (tmp_path / "x.parquet").write_bytes(export.to_parquet(rows))
    table = pq.read_table(tmp_path / "x.parquet")
    assert table.num_rows == 3 and json.loads(table.column("record")[1].as_py()) == trials[1]["record"]

    from datasets import load_from_disk

    out = export.write_hf_dataset(rows, tmp_path / "hf", "test-set", {"run": "ui-run"})
    ds = load_from_disk(str(out))
    assert len(ds) == 3 and ds[2]["id"] == trials[2]["id"] and ds.features["reasons"].feature.dtype == "string"
    card = (out / "README.md").read_text()
    assert "pretty_name: test-set" in card and "**3** trials" in card and "Filters: run = ui-run" in card
    assert "| openai:gpt-4o-mini | 3 |" in card

    blobs = [export.to_jsonl(rows), export.to_parquet(rows), export.zip_dir(out), generated.read_bytes()]
    assert all(KEY.encode() not in b for b in blobs)


def test_highlight_marks_only_shared_runs():
    example = "Patients received paclitaxel 175 mg/m2 every three weeks for six cycles in this study."
    text = ("A new design. Patients received paclitaxel 175 mg/m2 every three weeks for six cycles, "
            "then follow-up visits.")
    spans = shared_spans(text, [example], n=8)
    assert [text[a:b] for a, b in spans] == ["Patients received paclitaxel 175 mg/m2 every three weeks for six cycles"]
    html, share = highlight_html(text, [example], n=8)
    assert html.count("<mark>") == 1 and 0.6 < share < 0.8
    assert shared_spans(text, ["nothing in common here at all, none whatsoever"], n=8) == []


@pytest.mark.browser
def test_lists_a_synthetic_trial_and_persists_an_accept(generated, streamlit_server, page):
    with connect(generated, read_only=True) as con:
        trials = list_synthetic(con)
    server = streamlit_server(generated)
    page.goto(server.url + "/Synthetic_reports")
    wait_for_app(page)

    page.get_by_text("3 of 3 synthetic trials").wait_for()
    grid = page.locator('[data-testid="stDataFrame"]').first
    grid.wait_for()
    chosen = page.get_by_role("combobox", name="Trial").input_value()
    trial = next(t for t in trials if t["id"] == chosen)
    page.get_by_role("heading", name=re.compile(re.escape(chosen))).wait_for()
    page.get_by_text(f"intended {trial['intended_intervention']}").first.wait_for()
    # its few-shot examples with links to the Trials page, and its reasons
    for nct in trial["example_nct_ids"]:
        assert page.locator(f'a[href*="/Trials?nct={nct}"]').count() == 1
    page.get_by_text("Reasons it was written from").wait_for()
    page.get_by_text(trial["reasons"][0][:60]).wait_for()

    form = page.get_by_test_id("stForm")
    form.get_by_text("accepted", exact=True).click()
    assert form.get_by_role("radio", name="accepted", exact=True).is_checked()
    form.get_by_role("textbox", name="Note").fill("plausible design, keep")
    page.get_by_role("button", name="Save review").click()
    page.get_by_text(f"Saved: {chosen} is accepted.").wait_for()
    with connect(generated, read_only=True) as con:
        saved = {t["id"]: t for t in list_synthetic(con)}
    assert (saved[chosen]["review_status"], saved[chosen]["review_note"]) == ("accepted", "plausible design, keep")
    assert sum(1 for t in saved.values() if t["review_status"]) == 1

    page.reload()
    wait_for_app(page)
    page.get_by_text("review: accepted").wait_for()       # persisted, shown again after a reload
