"""Prompts as data, parsing of reasons and generated trials, mapping to the record, validation."""
from __future__ import annotations

import json

import pytest

from core.pipeline.generation import (any_intervention_matches, generated_intervention, names_match, opening_of, parse_trial,
                             to_record)
from core.prompts import PromptError, load_prompts, paper_prompts, prompt_hash, render
from core.pipeline.reasoning import FormatError, parse_reasons
from core.pipeline.validation import leaked_words, longest_common_run, overlap, validate

TABLE1_CONTEXT = ("You are now a medical expert in the clinical area. You are given information of a medical "
                  "intervention, and three clinical trial reports of it, either all successful or all failed.")


# ---- prompts ----

def test_paper_prompts_are_the_tables_and_render_in_paper_order():
    p = paper_prompts()
    assert p["reasoning"]["context"].startswith(TABLE1_CONTEXT)
    assert p["generation"]["diversity"] == ("Can you provide something more diverse compared to the previously "
                                            "generated reports?")
    values = {"intervention": "Paclitaxel", "label_word": "Failed", "outcome_verb": "fail",
              "outcome_noun": "failure", "outcome_adj": "failed", "reasons": "1. a 2. b"}
    messages, document = render(p["generation"], values, [(0, "EX-A"), (0, "EX-B"), (0, "EX-C")], opening='{"x": "')
    assert messages[0]["role"] == "system" and messages[0]["content"] == p["generation"]["context"]
    user = messages[1]["content"]
    # label stated before each example; reasoning before the examples; generation and diversity after
    assert user.count("Failed clinical trial example: EX-") == 3
    order = [user.index(s) for s in ("Here are five reasons that could lead to the failure of clinical trials of "
                                     "Paclitaxel", "EX-A", "EX-C", "The intervention name must be Paclitaxel",
                                     "Write a report of a failed clinical trial of Paclitaxel", "more diverse")]
    assert order == sorted(order)
    assert document.startswith(p["generation"]["context"])
    assert document.endswith('Failed clinical trial example: {"x": "')


def test_overrides_change_the_hash_and_unknown_parts_are_refused():
    base = load_prompts()
    changed = load_prompts({"reasoning": {"diversity": "Be different."}})
    assert changed["reasoning"]["diversity"] == "Be different."
    assert prompt_hash(base) == prompt_hash(load_prompts()) != prompt_hash(changed)
    with pytest.raises(PromptError, match="unknown part"):
        load_prompts({"reasoning": {"nonsense": "x"}})
    with pytest.raises(PromptError, match="unknown stage"):
        load_prompts({"retrieval": {"context": "x"}})
    with pytest.raises(PromptError, match="bad placeholder"):
        load_prompts({"generation": {"constraint": "The intervention must be {intervention_nam}."}})


def test_endpoint_credentials_are_not_kept():
    from core.pipeline.batch import _public_url

    assert _public_url("https://user:pw@example.org:8443/v1?api-key=abc") == "https://example.org:8443/v1"
    assert _public_url(None) is None


# ---- reasons ----

def test_reasons_inline_multiline_and_markdown():
    inline = "1. (Dose was optimal.) 2. Design at 2.5 mg was sound. 3. Endpoints valid. 4. Power adequate. 5. Low dropout."
    assert parse_reasons(inline) == ["Dose was optimal.", "Design at 2.5 mg was sound.", "Endpoints valid.",
                                     "Power adequate.", "Low dropout."]
    md = "Here you go:\n\n1. **PK**: good exposure\n\n2. **Population**: homogeneous\n\n3. **Endpoint**: validated\n\n" \
         "4. **Power**: enough\n\n5. **Safety**: tolerable\n\nThese reasons explain the outcome."
    reasons = parse_reasons(md)
    assert reasons[0] == "PK: good exposure" and reasons[4] == "Safety: tolerable"


def test_reasons_malformed():
    with pytest.raises(FormatError, match="numbered 4"):
        parse_reasons("1. a reason here 2. another one 3. third one")
    with pytest.raises(FormatError, match="more than 5"):
        parse_reasons("1. aaa 2. bbb 3. ccc 4. ddd 5. eee 6. fff")
    with pytest.raises(FormatError):
        parse_reasons("I cannot help with that.")
    # a base model's continuation: tolerant (first 5, or the first 5 substantial lines)
    assert parse_reasons("1. aaa\n2. bbb\n3. ccc\n4. ddd\n5. eee\n6. fff", strict=False)[-1] == "eee"
    lines = "Belinostat trials:\n1.1. first reason is long\n1.2. second reason is long\n- third reason is long\n" \
            "* fourth reason is long\n1.5 fifth reason is long\n"
    assert parse_reasons(lines, strict=False) == ["Belinostat trials:", "first reason is long",
                                                  "second reason is long", "third reason is long",
                                                  "fourth reason is long"]


# ---- generated trials ----

XML_STRUCT = {"brief_title": "Metformin in PCOS", "condition": ["Polycystic Ovary Syndrome"],
              "intervention": [{"intervention_type": "Drug", "intervention_name": "Metformin hydrochloride",
                                "other_name": ["Glucophage"]},
                               {"intervention_type": "Drug", "intervention_name": "Placebo"}],
              "eligibility": {"criteria": {"textblock": "Inclusion: women 18-40"}, "gender": "Female"},
              "enrollment": {"@type": "Anticipated", "#text": "120"},
              "primary_outcome": {"measure": "Ovulation rate", "time_frame": "6 months"},
              "sponsors": {"lead_sponsor": {"agency": "Univ", "agency_class": "Other"}},
              "study_design_info": {"allocation": "Randomized", "masking": "Double"}}


def test_parse_json_fenced_repaired_xml_and_garbage():
    text = json.dumps({"clinical_study": XML_STRUCT})
    obj, how = parse_trial("Sure! Here it is:\n" + text + "\nHope this helps.")
    assert how == "json" and obj["clinical_study"]["brief_title"] == "Metformin in PCOS"
    obj, how = parse_trial("```json\n" + text + "\n```")
    assert how == "json-fenced"
    obj, how = parse_trial(text[: text.index("Placebo") + 3])  # cut off mid-string (max_tokens)
    assert how == "json-repaired" and obj["clinical_study"]["intervention"][0]["intervention_name"].startswith("Metformin")
    obj, how = parse_trial("<brief_title>T</brief_title>\n<intervention><intervention_type>Drug</intervention_type>"
                           "<intervention_name>Aspirin</intervention_name></intervention>")
    assert how == "xml" and to_record(obj)["interventions"][0]["name"] == "Aspirin"
    with pytest.raises(FormatError):
        parse_trial("I am unable to write this report.")


def test_to_record_from_each_shape():
    rec = to_record({"clinical_study": XML_STRUCT})
    assert rec["brief_title"] == "Metformin in PCOS" and rec["conditions"] == ["Polycystic Ovary Syndrome"]
    assert rec["interventions"][0] == {"type": "Drug", "name": "Metformin hydrochloride", "description": None,
                                       "other_names": ["Glucophage"]}
    assert rec["eligibility_criteria"] == "Inclusion: women 18-40" and rec["gender"] == "Female"
    assert rec["enrollment"] == 120 and rec["enrollment_type"] == "Anticipated"
    assert rec["lead_sponsor"] == "Univ" and rec["design_info"]["masking"] == "Double"
    assert rec["nct_id"] is None
    v2 = {"protocolSection": {"identificationModule": {"briefTitle": "B"},
                              "armsInterventionsModule": {"interventions": [{"type": "DRUG", "name": "Aspirin"}]},
                              "designModule": {"phases": ["PHASE2"], "enrollmentInfo": {"count": 50}}}}
    rec = to_record(v2)
    assert rec["brief_title"] == "B" and rec["interventions"][0]["name"] == "Aspirin" and rec["enrollment"] == 50
    canonical = {"brief_title": "C", "interventions": [{"type": "Drug", "name": "Aspirin"}], "conditions": ["Pain"]}
    assert to_record(canonical)["interventions"][0]["name"] == "Aspirin"


def test_intervention_names_match_normalized():
    rec = to_record(XML_STRUCT)
    assert generated_intervention(rec) == "Metformin hydrochloride"
    assert names_match("Metformin", "METFORMIN hydrochloride 500 mg")
    assert names_match("Acetylsalicylic acid", "Aspirin", synonyms=["Aspirin"])
    assert not names_match("Metformin", "Metoprolol")
    assert not names_match("Metformin", None)
    assert any_intervention_matches(rec, "Placebo") and not any_intervention_matches(rec, "Insulin")


def test_opening_of_examples():
    assert opening_of('{"brief_title": "A trial"}') == '{"brief_title": "'
    assert opening_of('{"clinical_study": {"brief_title": "A"}}') == '{"clinical_study": {"brief_title": "'


# ---- validation ----

GOOD = {"brief_title": "Metformin in PCOS", "brief_summary": "A randomized study of metformin in women with PCOS.",
        "conditions": ["PCOS"], "interventions": [{"type": "Drug", "name": "Metformin"}],
        "eligibility_criteria": "Women 18-40", "primary_outcomes": [{"measure": "Ovulation rate"}]}


def test_validation_statuses():
    status, checks = validate(GOOD, intended_intervention="Metformin", examples=None)
    assert status == "ok" and all(c["ok"] for c in checks.values())
    status, checks = validate(GOOD, intended_intervention="Insulin glargine")
    assert status == "warning" and not checks["intervention"]["ok"]
    leaky = dict(GOOD, brief_summary="The study failed to meet its endpoint and was terminated.",
                 overall_status="Terminated")
    status, checks = validate(leaky, intended_intervention="Metformin")
    words = {f["word"].lower() for f in checks["label_leak"]["detail"]["found"]}
    assert status == "warning" and words == {"failed", "terminated"}
    assert checks["label_leak"]["detail"]["status_fields"][0]["field"] == "overall_status"
    status, checks = validate(dict(GOOD, conditions=[], primary_outcomes=[]), intended_intervention="Metformin")
    assert status == "warning" and set(checks["required_fields"]["detail"]["missing"]) == {"conditions",
                                                                                           "primary_outcomes"}
    status, checks = validate(None, parse_error="not JSON")
    assert status == "invalid" and checks["parses"]["detail"] == "not JSON"
    assert leaked_words(GOOD) == []


def test_near_copy_of_own_example():
    long_text = " ".join(f"criterion{i} patients with condition number {i} are eligible" for i in range(40))
    example = dict(GOOD, nct_id="NCT1", eligibility_criteria=long_text)
    copied = dict(GOOD, brief_title="Another title", eligibility_criteria=long_text)
    status, checks = validate(copied, intended_intervention="Metformin", examples=[example])
    assert status == "invalid" and not checks["near_copy"]["ok"]
    assert checks["near_copy"]["detail"]["examples"][0]["longest_run"] >= 60
    fresh = dict(GOOD, brief_title="Metformin extended release in adolescents",
                 eligibility_criteria=" ".join(f"rule{i} adolescents aged {i} with obesity may join" for i in range(40)))
    status, checks = validate(fresh, intended_intervention="Metformin", examples=[example])
    assert checks["near_copy"]["ok"] and status == "ok"


def test_overlap_measures():
    a = "the quick brown fox jumps over the lazy dog again and again".split()
    assert longest_common_run(a, "a quick brown fox jumps over a dog".split()) == 5
    o = overlap("one two three four five six seven eight nine", "one two three four five six seven eight nine")
    assert o == {"ngram_overlap": 1.0, "longest_run": 9}


def test_longest_common_run_matches_brute_force():
    """The suffix automaton against the definition (every pair of start positions), on word lists with
    few distinct words, so that runs repeat and overlap."""
    import random

    def brute(a: list[str], b: list[str]) -> int:
        best = 0
        for i in range(len(a)):
            for j in range(len(b)):
                n = 0
                while i + n < len(a) and j + n < len(b) and a[i + n] == b[j + n]:
                    n += 1
                best = max(best, n)
        return best

    rng = random.Random(5)
    for case in range(300):
        vocab = [f"w{i}" for i in range(rng.choice([1, 2, 3, 6, 30]))]
        a = [rng.choice(vocab) for _ in range(rng.randint(0, 40))]
        b = [rng.choice(vocab) for _ in range(rng.randint(0, 40))]
        if case % 3 == 0 and a:
            b = b[:7] + a[3:25] + b[7:]     # a long shared run
        assert longest_common_run(a, b) == brute(a, b) == longest_common_run(b, a), (a, b)
