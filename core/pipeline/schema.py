"""The JSON Schemas of the pipeline's replies, derived in one place from the canonical record.

- `trial_schema(intervention)`: one synthetic trial. Its keys are core.record.SYNTHETIC_FIELDS (canonical
  record keys, in that order); the intended intervention is a `const`, so every backend that honours the
  schema names it; there is no status, why-stopped, results or completion-date field (the label is
  recorded beside the trial, never in it); every text and list is bounded, so a small model stops; an
  outcome's time frame follows TIME_FRAME_PATTERN (a duration, as ClinicalTrials.gov writes them).
- `REASONS_SCHEMA`: exactly 5 reasons, each one sentence without brackets or template marks.
- `compact_example(record, ...)`: a real trial serialized in the schema's own shape, long texts cut with a
  visible marker, never a status field: the few-shot examples a small-context model sees.

The same dicts go to OpenAI-compatible servers (`response_format` json_schema, strict: every property
required, no additional properties) and, as a grammar, to the embedded llama.cpp model.
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

from jsonschema import Draft202012Validator

from core.record import DESIGN_INFO_KEYS, LIST_ITEM_KEYS, OUTCOME_FIELDS, SYNTHETIC_FIELDS, normalize_record

TRUNCATION_MARK = " [...]"

# ClinicalTrials.gov's vocabularies (legacy XML spellings, which the canonical record keeps).
PHASES = ["Early Phase 1", "Phase 1", "Phase 1/Phase 2", "Phase 2", "Phase 2/Phase 3", "Phase 3", "Phase 4", "N/A"]
STUDY_TYPES = ["Interventional", "Observational", "Expanded Access"]
GENDERS = ["All", "Female", "Male"]
INTENDED_TYPES = ["Drug", "Biological"]     # a DrugBank drug is one or the other on ClinicalTrials.gov
ARM_TYPES = ["Experimental", "Active Comparator", "Placebo Comparator", "Sham Comparator", "No Intervention",
             "Other"]
SPONSOR_CLASSES = ["Industry", "NIH", "U.S. Fed", "Other"]
DESIGN_VALUES = {
    "allocation": ["Randomized", "Non-Randomized", "N/A"],
    "intervention_model": ["Single Group Assignment", "Parallel Assignment", "Crossover Assignment",
                           "Factorial Assignment", "Sequential Assignment"],
    "primary_purpose": ["Treatment", "Prevention", "Diagnostic", "Supportive Care", "Screening",
                        "Health Services Research", "Basic Science", "Other"],
    "masking": ["None (Open Label)", "Single", "Double", "Triple", "Quadruple"],
}
AGE_PATTERN = r"^([1-9][0-9]? (Years|Months|Weeks)|N/A)$"

# Characters per text and items per list. A base model writes most texts to their limit: with twice
# these limits the 270M model's replies were ~775 tokens (about 2 minutes on a loaded 2-core machine);
# these keep a reply near 500 tokens and a report still realistic.
TEXT_LIMITS = {"brief_title": 100, "official_title": 160, "brief_summary": 240, "detailed_description": 240,
               "eligibility_criteria": 320, "item_text": 50, "item_description": 100, "measure": 100,
               "time_frame": 40}
LIST_LIMITS = {"conditions": (1, 2), "keywords": (0, 3), "interventions": (1, 1), "arm_groups": (1, 2),
               "primary_outcomes": (1, 2), "secondary_outcomes": (0, 2)}
assert set(LIST_LIMITS) <= set(SYNTHETIC_FIELDS) and set(DESIGN_VALUES) == set(DESIGN_INFO_KEYS)

# A time frame as ClinicalTrials.gov has them: a duration (a number with a unit: "12 weeks", "Week 24",
# "Day 1", "1.5 years", "six months") with words around it ("Up to 2 years", "Baseline to week 24",
# "Day 1 through Day 28"), or a study milestone ("Through study completion", "End of treatment"). Not a
# date ("2012-03-01"), a year, or words without a duration ("Primary - Phase III Trial", "Ongoing").
# Plain regex only (no lookarounds, backreferences, \d, or escapes outside a class: llama.cpp's grammar
# has no \. or \+), so OpenAI's strict mode and llama-cpp-python's json_schema_to_gbnf both take it; no
# quote, backslash or control character: the grammar writes the text inside a JSON string.
_TF_UNITS = ("year", "month", "week", "day", "hour", "minute", "cycle", "course", "visit", "dose",
             "yr", "wk", "mo", "hr", "min")          # each also plural
_TF_LETTER_UNITS = ("h", "d")                          # "24 h", "28d"
_TF_WORD_NUMBERS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_TF_MILESTONE_BEFORE = ("through", "throughout", "until", "up to", "at", "by", "to", "end of", "during",
                        "length of", "duration of")
_TF_MILESTONES = ("study", "treatment", "therapy", "follow-up", "baseline")
_TF_MILESTONE_AFTER = ("completion", "end", "period", "visit")
_TF_TEXT = "[A-Za-z0-9 ,.:;()/+&'-]"                  # the words around a duration
_TF_SEP = "[ ,.:;()/+&'-]"                             # what parts a duration from those words


def _either_case(word: str) -> str:
    """`word` with its first letter in either case, as a regex ("Weeks" and "weeks")."""
    return f"[{word[0].upper()}{word[0].lower()}]{word[1:]}"


def _alternatives(words: tuple[str, ...]) -> str:
    return "(" + "|".join(_either_case(w) for w in words) + ")"


_TF_UNIT = "(" + "|".join([_either_case(u) + "s?" for u in _TF_UNITS] + list(_TF_LETTER_UNITS)) + ")"
_TF_NUMBER = f"([0-9]{{1,3}}([.][0-9])?|{_alternatives(_TF_WORD_NUMBERS)})"
_TF_DURATION = f"({_TF_NUMBER}[ -]?{_TF_UNIT}|{_TF_UNIT} [+]?[0-9]{{1,3}})"   # "12 weeks", "Day +100"
_TF_DURATION_WIDTH = max(max(5, *map(len, _TF_WORD_NUMBERS)) + 1 + max(len(u) + 1 for u in _TF_UNITS),
                         max(len(u) + 1 for u in _TF_UNITS) + 5)   # the longest text a duration can be
_TF_MILESTONE = (f"({_alternatives(_TF_MILESTONE_BEFORE)}( the)? )?{_alternatives(_TF_MILESTONES)}"
                 f"( {_alternatives(_TF_MILESTONE_AFTER)})?")
# llama.cpp's grammar ignores maxLength where a pattern is given, so the pattern itself keeps a time frame
# within TEXT_LIMITS: the words around the duration get the room the longest duration leaves, at most
# `before` of it before the duration and the rest after. A regex cannot bound a total, so a few splits;
# these were chosen greedily on the mirror's time frames, each accepting the most not yet accepted.
_TF_ROOM = TEXT_LIMITS["time_frame"] - _TF_DURATION_WIDTH
_TF_BEFORE = (0, 7, 15, _TF_ROOM)


def _words_around(before: int, after: int) -> str:
    """A duration with up to `before` and `after` characters of words around it, parted from them by a
    separator (so "Phase 2 drug" is no "2 d")."""
    head = f"({_TF_TEXT}{{0,{before - 1}}}{_TF_SEP})?" if before else ""
    tail = f"({_TF_SEP}{_TF_TEXT}{{0,{after - 1}}})?" if after else ""
    return head + _TF_DURATION + tail


TIME_FRAME_PATTERN = "^(" + "|".join([_words_around(b, _TF_ROOM - b) for b in _TF_BEFORE] + [_TF_MILESTONE]) + ")$"
# The same form without the length bound or the character class: whether a text states a time frame at all
# (a free reply has no length limit, and a fifth of the real time frames are longer than the schema's).
TIME_FRAME_FORM = re.compile(f"^((.*[^A-Za-z0-9])?{_TF_DURATION}([^A-Za-z0-9].*)?|{_TF_MILESTONE})$")
_TIME_FRAME_RE = re.compile(TIME_FRAME_PATTERN)


def is_time_frame(text: str, bounded: bool = False) -> bool:
    """Whether `text` (whitespace collapsed) is a time frame: TIME_FRAME_FORM, or with `bounded`, the
    schema's TIME_FRAME_PATTERN (also within its length)."""
    flat = " ".join(str(text or "").split())
    return bool((_TIME_FRAME_RE if bounded else TIME_FRAME_FORM).match(flat))


# A reason: one sentence, a capital letter first, no brackets, braces, pipes or quotes (what templates
# such as "[X]" or "(...)" are made of), 25 to 160 characters. The JSON Schema pattern and the embedded
# model's numbered-list grammar are both built from these parts.
_REASON_FIRST = "A-Z"
_REASON_REST = r'^"\\\[\]{}<>()|\n'
_REASON_LENGTH = (24, 159)          # characters after the first
REASON_PATTERN = f"^[{_REASON_FIRST}][{_REASON_REST}]{{{_REASON_LENGTH[0]},{_REASON_LENGTH[1]}}}$"
N_REASONS = 5


def _text(n: int) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "maxLength": n}


def _object(props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def _array(field: str, item: dict[str, Any]) -> dict[str, Any]:
    lo, hi = LIST_LIMITS[field]
    return {"type": "array", "items": item, "minItems": lo, "maxItems": hi}


def _field(name: str, intervention: str) -> dict[str, Any]:
    """The schema of one canonical field (see core.record for the field's meaning)."""
    t = TEXT_LIMITS
    if name in ("conditions", "keywords"):
        return _array(name, _text(t["item_text"]))
    if name == "interventions":
        # The studied drug, fixed; comparators (placebo, active control) are described in the arm groups.
        keys = LIST_ITEM_KEYS[name]
        return _array(name, _object({keys[0]: {"enum": INTENDED_TYPES}, keys[1]: {"const": intervention},
                                     keys[2]: _text(t["item_description"])}))
    if name == "arm_groups":
        label, type_, desc = LIST_ITEM_KEYS[name]
        return _array(name, _object({label: _text(t["item_text"]), type_: {"enum": ARM_TYPES},
                                     desc: _text(t["item_description"])}))
    if name in ("primary_outcomes", "secondary_outcomes"):
        measure, time_frame, _ = LIST_ITEM_KEYS[name]
        return _array(name, _object({measure: _text(t["measure"]),
                                     time_frame: dict(_text(t["time_frame"]), pattern=TIME_FRAME_PATTERN)}))
    if name == "design_info":
        return _object({k: {"enum": DESIGN_VALUES[k]} for k in DESIGN_INFO_KEYS})
    if name == "enrollment":
        return {"type": "integer", "minimum": 1, "maximum": 100000}
    if name in ("minimum_age", "maximum_age"):
        return {"type": "string", "pattern": AGE_PATTERN}
    vocab = {"phase": PHASES, "study_type": STUDY_TYPES, "gender": GENDERS, "sponsor_class": SPONSOR_CLASSES}
    if name in vocab:
        return {"enum": vocab[name]}
    return _text(t[name])


def trial_schema(intervention: str) -> dict[str, Any]:
    """The JSON Schema of one synthetic trial of `intervention` (its DrugBank common name)."""
    return _object({name: _field(name, intervention) for name in SYNTHETIC_FIELDS})


REASONS_SCHEMA: dict[str, Any] = _object({"reasons": {
    "type": "array", "items": {"type": "string", "pattern": REASON_PATTERN},
    "minItems": N_REASONS, "maxItems": N_REASONS}})


def reasons_grammar() -> str:
    """The reasons schema as a llama.cpp grammar (GBNF) for a base model continuing the paper's document,
    whose answer already opened with "1.": the same 5 items, as the numbered list the prompt asks for."""
    item = f"[{_REASON_FIRST}] [{_REASON_REST}]{{{_REASON_LENGTH[0]},{_REASON_LENGTH[1]}}}"
    seps = " ".join(f'"\\n{i}. " item' for i in range(2, N_REASONS + 1))
    return f'root ::= " " item {seps}\nitem ::= {item}\n'


def schema_name(kind: str) -> str:
    """The `json_schema.name` sent to OpenAI-compatible servers."""
    return {"trial": "synthetic_clinical_trial", "reasons": "trial_outcome_reasons"}[kind]


@lru_cache(maxsize=256)
def _trial_validator(intervention: str) -> Draft202012Validator:
    return Draft202012Validator(trial_schema(intervention))


def conformance(obj: Any, schema: dict[str, Any] | str) -> list[str]:
    """Where `obj` breaks `schema` (a JSON Schema, or an intervention's name for its trial_schema, whose
    validator is built once): one line per error, 'path: message' (empty when it conforms)."""
    validator = _trial_validator(schema) if isinstance(schema, str) else Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message[:160]}" for e in errors]


# ---- compact examples ----

def cut(text: Any, limit: int) -> Any:
    """`text` with its whitespace collapsed, cut at a word boundary to `limit` characters with the marker."""
    if not isinstance(text, str):
        return text
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    room = max(1, limit - len(TRUNCATION_MARK))
    head = flat[:room].rsplit(" ", 1)[0] if " " in flat[:room] else flat[:room]
    return head.rstrip(" ,;:") + TRUNCATION_MARK


def _studied(interventions: list[dict], intervention: str | None, synonyms: list[str]) -> list[dict]:
    """The example's intervention of the studied drug (else its first drug): the one the schema fixes."""
    from core.pipeline.generation import names_match  # generation imports this module

    items = [i for i in interventions if i.get("name")]
    if intervention:
        studied = [i for i in items if names_match(intervention, i["name"], synonyms)]
        if studied:
            return studied[:1]
    drugs = [i for i in items if (i.get("type") or "").lower() in ("drug", "biological")]
    return (drugs or items)[:1]


def compact_example(record: dict[str, Any], intervention: str | None = None,
                    synonyms: list[str] | None = None) -> dict[str, Any]:
    """A real trial in the schema's shape: the schema's fields only (never a status field), long texts cut
    with TRUNCATION_MARK, lists kept to the schema's lengths; the studied drug's intervention only.
    Empty fields are left out."""
    rec = normalize_record(record)
    t = TEXT_LIMITS
    out: dict[str, Any] = {}
    for name in SYNTHETIC_FIELDS:
        value = rec.get(name)
        if name in LIST_LIMITS:
            items = list(value or [])
            if name == "interventions":
                items = _studied(items, intervention, synonyms or [])
            items = items[:LIST_LIMITS[name][1]]
            if name in ("conditions", "keywords"):
                value = [cut(v, t["item_text"]) for v in items]
            elif name == "interventions":
                value = [{"type": i.get("type"), "name": i.get("name"),
                          "description": cut(i.get("description"), t["item_description"])} for i in items]
            elif name == "arm_groups":
                value = [{"label": cut(a.get("label"), t["item_text"]), "type": a.get("type"),
                          "description": cut(a.get("description"), t["item_description"])} for a in items]
            else:
                value = [{"measure": cut(o.get("measure"), t["measure"]),
                          "time_frame": cut(o.get("time_frame"), t["time_frame"])} for o in items]
            value = [{k: v for k, v in i.items() if v} if isinstance(i, dict) else i for i in value]
            value = [i for i in value if i]
        elif name == "design_info":
            value = {k: v for k, v in (value or {}).items() if v}
        elif name in t:
            value = cut(value, t[name])
        if value not in (None, "", [], {}):
            out[name] = value
    assert not set(out) & set(OUTCOME_FIELDS)
    return out


def compact_text(record: dict[str, Any], intervention: str | None = None, synonyms: list[str] | None = None) -> str:
    """`compact_example` as the one-line JSON the prompt carries."""
    return json.dumps(compact_example(record, intervention, synonyms), ensure_ascii=False)


# ---- reasons ----

_PLACEHOLDER = re.compile(r"\[[^\]]*\]|\(\s*\.{2,}\s*\)|\bX\b|\breason\s*\d|\boriginal reason\b|"
                          r"^\W*$|lorem ipsum|\btbd\b|<[^>]*>|\{[^}]*\}", re.IGNORECASE)
_WORD = re.compile(r"[a-z0-9]+")
SIMILAR = 0.7   # word-set overlap (Jaccard) at which two reasons count as the same reason


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def reason_problems(reasons: list[str]) -> list[str]:
    """Why these are not 5 usable reasons: placeholders, bracketed templates, too short to be a sentence,
    repeats (same words). Empty when they are fine."""
    problems = []
    if len(reasons) != N_REASONS:
        problems.append(f"{len(reasons)} reasons, not {N_REASONS}")
    for i, r in enumerate(reasons, 1):
        text = (r or "").strip()
        if _PLACEHOLDER.search(text):
            problems.append(f"reason {i} is a placeholder or template: {text[:60]!r}")
        elif len(_words(text)) < 4:
            problems.append(f"reason {i} is not a sentence: {text[:60]!r}")
    for i in range(len(reasons)):
        for j in range(i):
            a, b = _words(reasons[i]), _words(reasons[j])
            if a and b and len(a & b) / len(a | b) >= SIMILAR:
                problems.append(f"reason {i + 1} repeats reason {j + 1}")
                break
    return problems
