"""One trial schema on every backend: derived from the canonical record, the intervention fixed, no status
fields, bounded; structured requests through the `openai` SDK against the fault-injecting server (schema
honoured, refused -> fallback recorded, junk -> retried then recorded); placeholder and duplicate reasons
rejected; compact examples; `--valid-only`."""
from __future__ import annotations

import asyncio
import json

import pytest

from core.llm import LLMRequest, get_llm
from core.pipeline.batch import run_batch
from core.pipeline.reasoning import FormatError, usable
from core.pipeline.schema import (OUTCOME_FIELDS, REASONS_SCHEMA, TEXT_LIMITS, TRUNCATION_MARK, compact_example, conformance,
                                  reason_problems, trial_schema)
from core.record import SYNTHETIC_FIELDS
from core.store import connect
from core.store import llmlog
from core.store import synthetic as syn
from tests.servers.openai_server import serve

KEY = "sk-test-schema-77"


@pytest.fixture(autouse=True)
def runs_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CTGEN_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def _walk(schema):
    yield schema
    for sub in (schema.get("properties") or {}).values():
        yield from _walk(sub)
    if isinstance(schema.get("items"), dict):
        yield from _walk(schema["items"])


def test_trial_schema_is_the_canonical_fields_bounded_without_status():
    s = trial_schema("Sorafenib")
    assert list(s["properties"]) == SYNTHETIC_FIELDS
    assert not set(s["properties"]) & {"overall_status", "why_stopped", "has_results", "completion_date",
                                       "primary_completion_date"}
    assert not set(s["properties"]) & set(OUTCOME_FIELDS)
    assert s["properties"]["interventions"]["items"]["properties"]["name"] == {"const": "Sorafenib"}
    for node in _walk(s):   # strict structured outputs: every object closed and fully required
        if node.get("type") == "object":
            assert node["additionalProperties"] is False and node["required"] == list(node["properties"])
        if node.get("type") == "string":
            assert "maxLength" in node or "pattern" in node      # bounded: a small model must stop
        if node.get("type") == "array":
            assert "maxItems" in node
    good = {"brief_title": "A", "official_title": "B", "brief_summary": "C", "detailed_description": "D",
            "phase": "Phase 2", "study_type": "Interventional", "conditions": ["Liver cancer"], "keywords": [],
            "interventions": [{"type": "Drug", "name": "Sorafenib", "description": "400 mg twice daily"}],
            "arm_groups": [{"label": "S", "type": "Experimental", "description": "Sorafenib"}],
            "primary_outcomes": [{"measure": "OS", "time_frame": "2 years"}], "secondary_outcomes": [],
            "eligibility_criteria": "Inclusion: adults", "gender": "All", "minimum_age": "18 Years",
            "maximum_age": "N/A", "enrollment": 120,
            "design_info": {"allocation": "Randomized", "intervention_model": "Parallel Assignment",
                            "primary_purpose": "Treatment", "masking": "Double"}, "sponsor_class": "Industry"}
    assert conformance(good, s) == []
    bad = dict(good, interventions=[{"type": "Drug", "name": "Placebo", "description": "x"}],
               overall_status="Terminated", enrollment=0)
    errors = conformance(bad, s)
    assert any(e.startswith("interventions/0/name") for e in errors)
    assert any("overall_status" in e for e in errors) and any(e.startswith("enrollment") for e in errors)


def test_placeholder_and_duplicate_reasons_are_rejected():
    fine = ["The dose was too low to reach therapeutic exposure in most patients.",
            "Enrollment was slow and the trial closed before reaching its target.",
            "The primary endpoint was insensitive to change within twelve weeks.",
            "A heterogeneous population diluted the treatment effect.",
            "Adverse events led to frequent discontinuation in the treatment arm."]
    assert reason_problems(fine) == [] and usable(fine) == fine
    assert any("placeholder" in p for p in reason_problems(["[Original reason for the failure]"] + fine[1:]))
    assert any("placeholder" in p for p in reason_problems(fine[:4] + ["[X] [X] [X]"]))
    assert any("placeholder" in p for p in reason_problems(fine[:4] + ["(...)"]))
    assert any("repeats reason 1" in p for p in reason_problems([fine[0], fine[0].upper()] + fine[2:]))
    assert any("not 5" in p for p in reason_problems(fine[:4]))
    with pytest.raises(FormatError, match="repeats"):
        usable([fine[0]] * 5)


@pytest.mark.parametrize("output", ["schema", "free"])
def test_placeholder_reasons_are_retried_in_the_batch(mirror_db_copy, output):
    db = mirror_db_copy
    with serve(faults=["placeholder", "placeholder"]) as srv:
        result = _batch(db, srv, f"ph-{output}", n=1, output=output)
    assert result["done"] == 1
    with connect(db) as con:
        (t,) = syn.list_synthetic(con, run_id=f"ph-{output}")
        calls = llmlog.recent_calls(con, run_id=f"ph-{output}", limit=20, purpose="reasoning")
    assert t["meta"]["reasoning_attempts"] == 3 and len(calls) == 3       # two rejected, the third used
    assert not any("[" in r or "(...)" in r for r in t["reasons"]) and len(set(t["reasons"])) == 5
    assert t["meta"]["output"] == output


def test_compact_examples_keep_the_schema_fields_cut_and_never_status():
    rec = {"nct_id": "NCT1", "brief_title": "Sorafenib in HCC", "overall_status": "Terminated",
           "why_stopped": "futility", "completion_date": "2010", "brief_summary": "word " * 300,
           "interventions": [{"type": "Drug", "name": "Placebo"}, {"type": "Drug", "name": "Sorafenib tosylate"}],
           "conditions": ["HCC"], "phase": "Phase 3"}
    ex = compact_example(rec, "Sorafenib", [])
    assert set(ex) <= set(SYNTHETIC_FIELDS) and not set(ex) & set(OUTCOME_FIELDS)
    assert ex["interventions"] == [{"type": "Drug", "name": "Sorafenib tosylate"}]   # the studied drug
    assert ex["brief_summary"].endswith(TRUNCATION_MARK) and len(ex["brief_summary"]) <= TEXT_LIMITS["brief_summary"]


def test_json_schema_is_asked_for_and_honoured():
    with serve(structured="honour") as srv:
        llm = get_llm("openai", base_url=srv.base_url, api_key=KEY)
        msgs = [{"role": "user", "content": "Write a report of a failed clinical trial of Sorafenib."}]
        resp = llm.complete(LLMRequest(messages=msgs, schema=trial_schema("Sorafenib"), schema_name="trial", seed=3))
        body = srv.requests[0]["body"]
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"] == {"name": "trial", "strict": True,
                                                      "schema": trial_schema("Sorafenib")}
    assert resp.output_mode == "json_schema" and conformance(json.loads(resp.text), trial_schema("Sorafenib")) == []


def _batch(db, srv, run_id, **kw):
    return run_batch(db, kw.pop("n", 3), backend="openai", base_url=srv.base_url, api_key=KEY, seed=kw.pop("seed", 6),
                     run_id=run_id, max_tokens=1024, show_progress=False, **kw)


def test_batch_in_schema_mode_stores_valid_trials_of_the_intended_drug(mirror_db_copy):
    db = mirror_db_copy
    with serve(structured="honour") as srv:
        result = _batch(db, srv, "sch", n=4)
        bodies = [r["body"] for r in srv.requests]
    assert result["done"] == 4 and result["failed"] == 0
    assert all(b["response_format"]["type"] == "json_schema" for b in bodies)   # every request asks for it
    with connect(db) as con:
        trials = syn.list_synthetic(con, run_id="sch")
    for t in trials:
        assert t["validation_status"] == "ok", t["validation"]
        assert t["intervention_match"] and t["record"]["interventions"][0]["name"] == t["intended_intervention"]
        assert t["meta"]["output"] == "schema"
        assert t["meta"]["output_mode"] == {"reasoning": "json_schema", "generation": "json_schema"}
        assert t["validation"]["schema"]["ok"] and t["validation"]["status_fields"]["ok"]
        assert all(t["record"][f] is None for f in ("overall_status", "why_stopped"))
    from core.stats import collect

    assert collect(db)["synthetic_by_status"] == {"ok": 4, "warning": 0, "invalid": 0}


def test_server_that_refuses_json_schema_falls_back_once_and_it_is_recorded(mirror_db_copy):
    db = mirror_db_copy
    with serve(structured="reject") as srv:
        result = _batch(db, srv, "fallback", n=3)
        kinds = [(r["body"].get("response_format") or {}).get("type") for r in srv.requests]
    assert result["done"] == 3 and result["failed"] == 0
    assert kinds[0] == "json_schema" and kinds.count("json_schema") == 1     # refused once, then not asked again
    assert set(kinds[1:]) == {"json_object"}
    with connect(db) as con:
        trials = syn.list_synthetic(con, run_id="fallback")
        calls = llmlog.recent_calls(con, run_id="fallback", limit=100)
    for t in trials:
        assert t["meta"]["output_mode"] == {"reasoning": "json_object", "generation": "json_object"}
        assert "json_schema" in t["meta"]["output_refusals"][0]
        assert t["intervention_match"] and t["validation_status"] in ("ok", "warning")
    assert {c["output_mode"] for c in calls} == {"json_object"}

    with serve(structured="reject_all") as srv:
        result = _batch(db, srv, "freefall", n=2)
    assert result["done"] == 2
    with connect(db) as con:
        modes = [t["meta"]["output_mode"] for t in syn.list_synthetic(con, run_id="freefall")]
    assert modes == [{"reasoning": "free", "generation": "free"}] * 2


def test_junk_replies_are_retried_then_recorded_as_failures(mirror_db_copy):
    db = mirror_db_copy
    with serve(structured="junk") as srv:
        result = _batch(db, srv, "junk", n=2)
        count = srv.count
    assert result["done"] == 0 and result["failed"] == 2
    assert count == 2 * 3     # each item: 3 reasoning attempts, none readable
    with connect(db) as con:
        failures = syn.list_failures(con, "junk")
    assert all(f["stage"] == "reasoning" and f["attempts"] == 3 and f["error_kind"] == "format" for f in failures)
    assert all("unfinished" in f["raw_text"] for f in failures)


def test_valid_only_reaches_n(mirror_db_copy):
    db = mirror_db_copy
    # The first replies are junk: the first items fail; --valid-only draws new items until 3 trials are usable.
    with serve(structured="honour", faults=["bad_content"] * 6) as srv:
        result = _batch(db, srv, "vo", n=3, valid_only=True)
    with connect(db) as con:
        trials = syn.list_synthetic(con, run_id="vo")
        failures = syn.list_failures(con, "vo")
    usable_trials = [t for t in trials if t["validation_status"] != "invalid"]
    assert len(usable_trials) == 3 and result["failed"] == len(failures) >= 1
    assert max(t["item_index"] for t in trials) >= 3            # items beyond N were drawn
    assert all(f["reason"] for f in failures)
    with serve(structured="junk") as srv:   # never usable: stops at 3N items
        result = _batch(db, srv, "vo2", n=2, valid_only=True)
    assert result["done"] == 0 and result["failed"] == 6


def test_reasons_request_carries_the_reasons_schema():
    with serve() as srv:
        llm = get_llm("openai", base_url=srv.base_url, api_key=KEY)
        msgs = [{"role": "user", "content": "Write 5 reasons leading Sorafenib to fail in these trials."}]
        resp = asyncio.run(llm.acomplete(LLMRequest(messages=msgs, schema=REASONS_SCHEMA, schema_name="r")))
    reasons = json.loads(resp.text)["reasons"]
    assert len(reasons) == 5 and reason_problems(reasons) == []


def test_a_duplicate_within_a_run_is_invalid():
    from core.pipeline.generation import to_record
    from core.pipeline.validation import fingerprint, validate
    from tests.servers.openai_server import make_trial, make_trial_extra
    import random

    rng = random.Random(3)
    first, second = (to_record({**(t := make_trial(rng, "Sorafenib", 0)), **make_trial_extra(rng, t)}) for _ in range(2))
    seen = [fingerprint(first, "run:0")]
    status, checks = validate(dict(first), intended_intervention="Sorafenib", run_trials=seen, output="schema")
    assert status == "invalid" and checks["duplicate"]["detail"]["of"] == "run:0"
    status, checks = validate(second, intended_intervention="Sorafenib", run_trials=seen, output="schema")
    assert checks["duplicate"]["ok"]


@pytest.mark.parametrize("share", [0.5, 0.75, 0.9])
def test_a_cut_off_published_reply_is_still_read(share):
    """json-repair reads replies cut off by max_tokens (the hand-written repair lost some of these)."""
    from pathlib import Path

    from core.pipeline.generation import parse_trial, to_record

    text = (Path(__file__).parents[1] / "fixtures" / "pipeline" / "published" / "reports" /
            "synthetic_clinical_report_0.txt").read_text()
    obj, how = parse_trial(text[: int(len(text) * share)])
    rec = to_record(obj)
    assert how == "json-repaired" and rec["brief_title"].startswith("Metformin Extended-Release")
    assert rec["phase"] == "Phase 3"
