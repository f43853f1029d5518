"""Generate page in a real browser: the 3 retrieved examples of the chosen intervention and label (with
token counts and links to the Trials page), resampling, then reasons, a validated trial and a background
batch through the openai backend against the local OpenAI-compatible test server."""
from __future__ import annotations

import re

import pytest

from conftest import wait_for_app
from core.store import connect
from core.store.retrieval import eligible_interventions, trials_of
from core.store.synthetic import list_synthetic
from tests.servers.openai_server import serve

pytestmark = pytest.mark.browser


def example_ids(page) -> list[str]:
    links = page.locator('[class*="st-key-gen_example_"] a[href*="/Trials?nct="]')
    links.first.wait_for()
    hrefs = [links.nth(i).get_attribute("href") for i in range(links.count())]
    return [re.search(r"nct=(NCT\d{8})", h).group(1) for h in hrefs]


def test_examples_resample_reasons_trial_and_batch(mirror_db_copy, tmp_path, streamlit_server, page):
    with connect(mirror_db_copy, read_only=True) as con:
        top = eligible_interventions(con, "drugbank", 3)[0]   # the page's default choice
        success_ids = set(trials_of(con, top["drugbank_id"], 1))
    server = streamlit_server(mirror_db_copy, env={"CTGEN_RUNS_DIR": str(tmp_path / "runs")})
    page.goto(server.url + "/Generate")
    wait_for_app(page)

    page.get_by_text(f"Retrieved examples: {top['name']}, success").wait_for()
    first = example_ids(page)
    assert len(first) == 3 and len(set(first)) == 3
    assert set(first) <= success_ids                       # trials of this intervention with this label
    for i in range(1, 4):
        box = page.locator(f'[class*="st-key-gen_example_{i}"]')
        assert re.search(r"Example \d: NCT\d{8}", box.inner_text())
        assert re.search(r"[\d,]+ tokens", box.inner_text())
    chosen = page.get_by_role("combobox", name="Intervention").input_value()
    assert chosen == f"{top['name']} — {top['n_success']} success / {top['n_failure']} failure trials"

    page.get_by_role("button", name="Resample").click()
    wait_for_app(page)
    page.get_by_text("Seed 1 ·").wait_for()
    second = example_ids(page)
    assert set(second) <= success_ids and second != first

    # the openai backend against the fault-free test server: reasons, then a trial with its badges
    with serve(delay=0.05) as srv:
        page.get_by_text("OpenAI-compatible", exact=True).click()
        wait_for_app(page)
        base = page.get_by_role("textbox", name="Base URL")
        base.fill(srv.base_url)
        base.press("Enter")
        wait_for_app(page)
        page.get_by_text("Cost estimate for 10 trials with gpt-4o-mini").wait_for()
        assert re.search(r"≈ \$\d+\.\d{4}", page.locator(".st-key-gen_batch").inner_text())

        page.get_by_role("button", name="Generate reasons").click()
        wait_for_app(page)
        page.get_by_text("1 attempt(s)").first.wait_for()
        body = page.locator('[data-testid="stMainBlockContainer"]').inner_text()
        assert len(re.findall(rf"for {re.escape(top['name'])}\.", body)) >= 5   # five reasons shown

        page.get_by_role("button", name="Generate the trial").click()
        wait_for_app(page)
        page.get_by_text("validation: ok").wait_for()
        page.get_by_text(f"Intended: {top['name']} · generated: {top['name']} · match").wait_for()
        assert page.get_by_role("tab", name="Raw reply").count() == 1

        # a batch of 3 in the background; progress shows while the page stays usable
        page.get_by_role("spinbutton", name="Trials", exact=True).fill("3")
        page.get_by_role("spinbutton", name="Trials", exact=True).press("Enter")
        wait_for_app(page)
        page.get_by_role("button", name="Start batch").click()
        page.get_by_text(re.compile(r"3 done, 0 failed of 3 · done")).wait_for(timeout=90_000)
        assert srv.count >= 2 + 3 * 2                      # the page's two calls, two per batch item
        page.get_by_text(re.compile(r"page-\S+: 1 done, 0 failed of 1 · done · interactive")).wait_for()
    with connect(mirror_db_copy, read_only=True) as con:
        made = list_synthetic(con)
    batch = [r for r in made if not r["run_id"].startswith("page-")]
    assert len(batch) == 3 and all(r["intended_intervention"] == top["name"] and r["intended_label"] == 1 for r in batch)
    # the trial made on the page is in the store too: a run of its own, with its reasons and provenance
    (mine,) = [r for r in made if r["run_id"].startswith("page-")]
    assert mine["intended_intervention"] == top["name"] and mine["validation_status"] == "ok" and len(mine["reasons"]) == 5
    assert mine["meta"]["interactive"] and mine["meta"]["example_text"] and mine["model"] == "gpt-4o-mini"
    assert mine["meta"]["output_mode"] == {"reasoning": "json_schema", "generation": "json_schema"}
    assert mine["example_nct_ids"] == second and mine["prompt_hash"]

    # a reload lists the runs from the store: the batch and the page's own run
    page.reload()
    wait_for_app(page)
    page.get_by_text(re.compile(r"3 done, 0 failed of 3 · done · batch")).wait_for()
    page.get_by_text(re.compile(r"1 done, 0 failed of 1 · done · interactive")).wait_for()
