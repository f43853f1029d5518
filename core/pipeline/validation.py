"""Checks run on every synthetic trial, generated or imported.

Each check gives {ok, severity, detail}; the trial's status is the worst failed check's severity:
'ok', 'warning' (usable, but look: leaked outcome words, another drug, a missing field, an implausible
value, a status field, a value outside the schema) or 'invalid' (unreadable, empty, the outcome stated in
its title (the label is carried beside the trial, never in it), a near-copy of one of its own few-shot
examples (the paper's constraint says "You cannot simply modify or rewrite them"), or a duplicate of a
trial the same run already made).
"""
from __future__ import annotations

import math
import re
from typing import Any

from core.pipeline.generation import any_intervention_matches, generated_intervention
from core.record import normalize_record
from core.serialize import LEAK_WORDS, classifier_text

REQUIRED = ["brief_title", "interventions", "conditions", "eligibility_criteria", "primary_outcomes"]
DESCRIPTION = ("brief_summary", "detailed_description")
LEAK_FIELDS = ("overall_status", "why_stopped")   # fields that state the outcome by themselves
NGRAM = 8                                         # word n-grams for the overlap measure
NEAR_COPY_OVERLAP = 0.5                           # share of the trial's 8-grams found in one example
NEAR_COPY_RUN = 60                                # or this many consecutive words shared with one example
_LEAK_RE = re.compile(r"\b(" + "|".join(re.escape(w) for w in sorted(LEAK_WORDS, key=len, reverse=True)) + r")\b",
                      re.IGNORECASE)
_WORD = re.compile(r"[a-z0-9]+")
SEVERITY = {"ok": 0, "warning": 1, "invalid": 2}
DUPLICATE_OVERLAP = 0.8                           # share of 8-grams two trials of one run may share

# Where an outcome word makes the trial invalid: a title states what the trial is. Elsewhere it is a warning.
TITLE_FIELDS = ("brief_title", "official_title")
# Outcome words in their clinical sense, which real titles use (a condition, a patient's earlier treatment):
# "Heart Failure", "Bone Marrow Failure", "Patients Who Have Failed Prior Therapy", "Subjects Failing HAART",
# "Who Have Not Had Success With Zidovudine", "After Aromatase Inhibitor Failure", "Who Completed Study X".
# On the mirror store, 64 of 5,882 real brief titles and 71 of 4,808 official titles have an outcome word;
# with these uses set aside, 1 and 4 do ("Treatment Success and Failure in HIV-Infected Subjects ...").
_FAILING_ORGAN = (r"heart|cardiac|renal|kidney|liver|hepatic|respiratory|ventilatory|pulmonary|lung|ovarian|"
                  r"marrow|graft|allograft|growth|intestinal|organ|adrenal|testicular|pump|engraftment|"
                  r"implantation|virologic|virological|immunologic|immunological|antiretroviral|treatment|"
                  r"therapy|chemotherapy|radiation|inhibitor")
_CLINICAL_USE = re.compile(
    rf"\b(?:{_FAILING_ORGAN})[- ]failure\b"
    r"|\b(?:who|have|has|had|previously|patients|subjects|participants|adults|children|women|men|cancer|"
    r"tumou?rs?|disease|infection|after|and|or|are)(?: not)?(?: had)? (?:failed|failing|fail|fails|failure|"
    r"success|completed)\b"
    r"|\bfail(?:ure|ed|s)? to (?:thrive|respond|achieve)\b", re.IGNORECASE)

# Enrollment above which a trial of its phase is implausible: the 99th percentile of the enrollment of the
# real trials of that phase, rounded up to two significant figures (`enrollment_ceilings`). Measured on the
# mirror store (`python -m core sample-data`, 4,065 trials with an enrollment; Phase 1: 772, Phase 1/Phase 2:
# 150, Phase 2: 1,341, Phase 3: 698, Phase 4: 85, N/A: 319). Early Phase 1 (2 trials) and Phase 2/Phase 3
# (19) have too few to measure and take the next larger phase's; a trial without a known phase, all trials'.
ENROLLMENT_QUANTILE = 0.99
ENROLLMENT_MIN_TRIALS = 50
ENROLLMENT_FALLBACK = {"Early Phase 1": "Phase 1", "Phase 2/Phase 3": "Phase 3"}
ENROLLMENT_CEILINGS = {"Early Phase 1": 220, "Phase 1": 220, "Phase 1/Phase 2": 310, "Phase 2": 730,
                       "Phase 2/Phase 3": 16000, "Phase 3": 16000, "Phase 4": 1700, "N/A": 6100}
ENROLLMENT_CEILING_ANY_PHASE = 6500


def _check(ok: bool, severity: str, detail: Any) -> dict[str, Any]:
    return {"ok": bool(ok), "severity": "ok" if ok else severity, "detail": detail}


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def longest_common_run(a: list[str], b: list[str]) -> int:
    """Length in words of the longest run of words `a` and `b` share: a suffix automaton of the shorter
    list, walked with the longer one (linear; a binary search over n-gram sets cost ~7 ms per example)."""
    if not a or not b:
        return 0
    if len(a) > len(b):
        a, b = b, a
    nxt: list[dict[str, int]] = [{}]
    link, length, last = [-1], [0], 0
    for w in a:
        cur = len(nxt)
        nxt.append({})
        length.append(length[last] + 1)
        link.append(0)
        p = last
        while p != -1 and w not in nxt[p]:
            nxt[p][w] = cur
            p = link[p]
        if p != -1:
            q = nxt[p][w]
            if length[p] + 1 == length[q]:
                link[cur] = q
            else:
                clone = len(nxt)
                nxt.append(dict(nxt[q]))
                length.append(length[p] + 1)
                link.append(link[q])
                while p != -1 and nxt[p].get(w) == q:
                    nxt[p][w] = clone
                    p = link[p]
                link[q] = link[cur] = clone
        last = cur
    state = run = best = 0
    for w in b:
        while state and w not in nxt[state]:
            state = link[state]
            run = length[state]
        if w in nxt[state]:
            state = nxt[state][w]
            run += 1
            if run > best:
                best = run
        else:
            state = run = 0
    return best


def overlap(text: str, example_text: str, n: int = NGRAM) -> dict[str, float | int]:
    """How much of `text` is copied from `example_text`: share of its word n-grams found there and the
    longest shared run of words."""
    a, b = _words(text), _words(example_text)
    grams = _ngrams(a, n)
    share = len(grams & _ngrams(b, n)) / len(grams) if grams else 0.0
    return {"ngram_overlap": round(share, 3), "longest_run": longest_common_run(a, b)}


def leaked_words(record: dict[str, Any]) -> list[dict[str, str]]:
    """Outcome words anywhere in the trial's text, and the outcome fields themselves when filled."""
    rec = normalize_record(record)
    found = [{"field": f, "word": str(rec[f])[:80]} for f in LEAK_FIELDS if rec.get(f)]
    for key, value in rec.items():
        if key in LEAK_FIELDS or value in (None, "", []):
            continue
        texts: list[str] = []
        if isinstance(value, str):
            texts = [value]
        elif isinstance(value, list):
            for item in value:
                texts += [str(v) for v in (item.values() if isinstance(item, dict) else [item]) if v]
        elif isinstance(value, dict):
            texts = [str(v) for v in value.values() if v]
        for t in texts:
            for m in _LEAK_RE.finditer(t):
                found.append({"field": key, "word": m.group(0)})
    return found


def title_leaks(record: dict[str, Any]) -> list[dict[str, str]]:
    """Outcome words in the trial's titles that state an outcome, not a condition or a patient's earlier
    treatment (see _CLINICAL_USE): [{field, word}]."""
    rec = normalize_record(record)
    found = []
    for key in TITLE_FIELDS:
        text = " ".join(str(rec.get(key) or "").split())
        clinical = [m.span() for m in _CLINICAL_USE.finditer(text)]
        found += [{"field": key, "word": m.group(0)} for m in _LEAK_RE.finditer(text)
                  if not any(a <= m.start() and m.end() <= b for a, b in clinical)]
    return found


def _round_up(value: float, digits: int = 2) -> int:
    """`value` rounded up to `digits` significant figures (213.4 -> 220)."""
    if value <= 0:
        return 0
    step = 10 ** max(0, math.floor(math.log10(value)) - digits + 1)
    return int(math.ceil(value / step) * step)


def enrollment_ceilings(by_phase: dict[str | None, tuple[int, float]], overall: tuple[int, float]
                        ) -> tuple[dict[str, int], int]:
    """(ceiling per phase, ceiling for any phase) from core.store.trials.enrollment_quantiles: each rounded
    up; a phase with under ENROLLMENT_MIN_TRIALS trials takes its ENROLLMENT_FALLBACK phase's."""
    from core.pipeline.schema import PHASES

    measured = {p: _round_up(v) for p, (n, v) in by_phase.items() if p in PHASES and n >= ENROLLMENT_MIN_TRIALS}
    ceilings = {p: measured.get(p, measured.get(ENROLLMENT_FALLBACK.get(p, ""), _round_up(overall[1])))
                for p in PHASES}
    return ceilings, _round_up(overall[1])


def registry_phase(phase: Any) -> str | None:
    """`phase` as one of the registry's phases (core.pipeline.schema.PHASES), whatever its spelling
    ("phase 2", "Phase 1, Phase 2"); None when it is none of them."""
    from core.pipeline.schema import PHASES

    key = _squash(str(phase or ""))
    return next((p for p in PHASES if key in (_squash(p), _squash(p.replace("/", ",")))), None)


def enrollment_ceiling(phase: Any) -> int:
    """The enrollment ceiling of `phase` (any spelling the registry uses), else of any phase."""
    known = registry_phase(phase)
    return ENROLLMENT_CEILINGS[known] if known else ENROLLMENT_CEILING_ANY_PHASE


def fingerprint(record: dict[str, Any], trial_id: str | None = None) -> tuple[str | None, frozenset]:
    """(id, the trial's word 8-grams): what the duplicate check compares, computed once per trial."""
    text = classifier_text(normalize_record(record), synthetic=False, mode="paper")
    return trial_id or record.get("nct_id"), frozenset(_ngrams(_words(text), NGRAM))


def plausibility(rec: dict[str, Any]) -> list[str]:
    """Values no registry record would have: enrollment not a positive integer or above its phase's ceiling,
    a phase outside the registry's vocabulary, an outcome time frame that is no time frame (a date, no
    duration), criteria without inclusion/exclusion text, ages the wrong way round."""
    from core.pipeline.schema import is_time_frame

    problems = []
    phase = rec.get("phase")
    enrollment = rec.get("enrollment")
    if enrollment is not None and (not isinstance(enrollment, int) or enrollment < 1):
        problems.append(f"enrollment {enrollment!r} is not a positive integer")
    elif enrollment is not None and enrollment > (ceiling := enrollment_ceiling(phase)):
        problems.append(f"enrollment {enrollment:,} is above {ceiling:,}, the 99th "
                        f"percentile of real {phase or 'trials'}")
    for key in ("primary_outcomes", "secondary_outcomes"):
        for i, outcome in enumerate(rec.get(key) or []):
            frame = (outcome or {}).get("time_frame") if isinstance(outcome, dict) else None
            if frame and not is_time_frame(frame):
                problems.append(f"{key}[{i}] time frame {str(frame)[:60]!r} is not a duration or study milestone")
    if phase and registry_phase(phase) is None:
        problems.append(f"phase {phase!r} is not one of the registry's phases")
    criteria = (rec.get("eligibility_criteria") or "").lower()
    if criteria and not ("inclusion" in criteria or "exclusion" in criteria):
        problems.append("eligibility criteria have no inclusion/exclusion text")
    ages = [_age_years(rec.get(k)) for k in ("minimum_age", "maximum_age")]
    if None not in ages and ages[0] > ages[1]:
        problems.append(f"minimum age {rec.get('minimum_age')} is above maximum age {rec.get('maximum_age')}")
    return problems


def _squash(text: str) -> str:
    return re.sub(r"[^a-z0-9/,]", "", text.lower())


def _age_years(text: Any) -> float | None:
    m = re.match(r"\s*(\d+(?:\.\d+)?)\s*(year|month|week|day)", str(text or ""), re.IGNORECASE)
    if not m:
        return None
    return float(m.group(1)) / {"year": 1, "month": 12, "week": 52, "day": 365}[m.group(2).lower()]


def validate(record: dict[str, Any] | None, *, intended_intervention: str | None = None,
             synonyms: list[str] | None = None, examples: list[dict[str, Any]] | None = None,
             parse_error: str | None = None, run_trials: list[tuple[str | None, frozenset]] | None = None,
             output: str | None = None) -> tuple[str, dict[str, dict]]:
    """(status, {check: {ok, severity, detail}}) for one synthetic trial.

    `examples`: the canonical records of its own few-shot examples (None for imported sets).
    `run_trials`: fingerprints of the trials the same run already made (duplicates within a run are invalid).
    `output`: 'schema' when the reply was asked for with the trial schema (checked against it)."""
    checks: dict[str, dict] = {}
    checks["parses"] = _check(record is not None and parse_error is None, "invalid", parse_error or "parsed")
    if record is None:
        return "invalid", checks
    rec = normalize_record(record)

    missing = [k for k in REQUIRED if not rec.get(k)]
    if not any(rec.get(k) for k in DESCRIPTION):
        missing.append("brief_summary|detailed_description")
    has_content = any(rec.get(k) for k in ("brief_title", "official_title", *DESCRIPTION))
    checks["required_fields"] = _check(not missing, "warning" if has_content else "invalid",
                                       {"missing": missing} if missing else "all present")

    if intended_intervention:
        gen = generated_intervention(rec)
        ok = any_intervention_matches(rec, intended_intervention, synonyms)
        checks["intervention"] = _check(ok, "warning", {"intended": intended_intervention, "generated": gen,
                                                        "names": [i.get("name") for i in rec["interventions"]]})
    else:
        checks["intervention"] = _check(True, "warning", "no intended intervention given")

    # overall_status / why_stopped state the outcome by design and are removed before any use
    # (core.serialize); outcome words elsewhere in the text are what the paper saw the LLM leak.
    found = leaked_words(rec)
    status_fields = [f for f in found if f["field"] in LEAK_FIELDS]
    leaks = [f for f in found if f["field"] not in LEAK_FIELDS]
    # In a title the outcome is stated, not just mentioned: invalid (and the quality gate writes it again).
    titled = title_leaks(rec)
    detail: dict[str, Any] = {"found": leaks[:20], "count": len(leaks), "status_fields": status_fields,
                              "title": titled}
    checks["label_leak"] = _check(not leaks, "invalid" if titled else "warning", detail)

    if examples:
        text = classifier_text(rec, synthetic=False, mode="paper")
        per = []
        for ex in examples:
            o = overlap(text, classifier_text(ex, mode="paper"))
            per.append({"nct_id": ex.get("nct_id"), **o})
        worst = max(per, key=lambda p: (p["ngram_overlap"], p["longest_run"]))
        copied = worst["ngram_overlap"] >= NEAR_COPY_OVERLAP or worst["longest_run"] >= NEAR_COPY_RUN
        checks["near_copy"] = _check(not copied, "invalid", {"examples": per, "thresholds": {
            "ngram_overlap": NEAR_COPY_OVERLAP, "longest_run": NEAR_COPY_RUN, "n": NGRAM}})
    else:
        checks["near_copy"] = _check(True, "invalid", "no few-shot examples to compare with")

    # The batch's quality gates (`output` given: a trial this pipeline generated, in 'schema' or 'free' mode).
    if output is not None:
        # Status fields: never asked for (the schema has none) and removed before storing; a free reply
        # that carries them anyway is reported, honestly, as a warning.
        checks["status_fields"] = _check(not status_fields, "warning",
                                         {"fields": sorted({f["field"] for f in status_fields})}
                                         if status_fields else "none")
        problems = plausibility(rec)
        checks["plausibility"] = _check(not problems, "warning",
                                        {"problems": problems} if problems else "plausible")

    if output == "schema" and intended_intervention:
        from core.pipeline.schema import SYNTHETIC_FIELDS, conformance

        reply = {k: v for k, v in rec.items() if k in SYNTHETIC_FIELDS}
        reply["interventions"] = [{k: i.get(k) for k in ("type", "name", "description")} for i in rec["interventions"]]
        reply["arm_groups"] = [{k: a.get(k) for k in ("label", "type", "description")} for a in rec["arm_groups"]]
        for key in ("primary_outcomes", "secondary_outcomes"):
            reply[key] = [{k: o.get(k) for k in ("measure", "time_frame")} for o in rec[key]]
        errors = conformance(reply, intended_intervention)   # the trial schema's cached validator
        checks["schema"] = _check(not errors, "warning", {"errors": errors[:20], "count": len(errors)} if errors
                                  else "conforms")

    if run_trials:
        _, grams = fingerprint(rec)
        worst = max(((round(len(grams & other) / len(grams), 3) if grams else 0.0, other_id)
                     for other_id, other in run_trials), key=lambda w: w[0])
        checks["duplicate"] = _check(worst[0] < DUPLICATE_OVERLAP, "invalid",
                                     {"of": worst[1], "ngram_overlap": worst[0], "threshold": DUPLICATE_OVERLAP})

    status = max((c["severity"] for c in checks.values()), key=SEVERITY.__getitem__)
    return status, checks


