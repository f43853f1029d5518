"""Generation module (paper 3.2.4, Table 2): write one synthetic trial report for the fixed intervention
and label, with the 5 reasons inserted before the examples.

`output="schema"` (the default) asks for core.pipeline.schema.trial_schema(intervention): the reply is the
canonical fields, the intervention fixed, no status fields. `"free"` is the paper's exact free-form reply,
read afterwards (JSON, in code fences or not, broken JSON repaired by PyPI json-repair, or XML-like tags)
and mapped into the canonical record."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from core.pipeline.reasoning import OUTPUTS, values_for
from core.pipeline.replies import FormatError, ask_until_readable, loads_lenient, output_mode
from core.pipeline.retrieval import Retrieval, normalize_name
from core.pipeline.schema import schema_name, trial_schema
from core.prompts import load_prompts, render, stop_strings
from core.record import normalize_record

DEFAULT_ATTEMPTS = 3
# Light: enough to stop a base model's loops ("8. 8. 8."), not enough to bend the JSON (measured).
REPEAT_PENALTY = 1.1


@dataclass
class Generation:
    record: dict[str, Any]
    parsed: dict[str, Any]
    parse_format: str              # 'json', 'json-fenced', 'json-repaired', 'xml'
    raw_text: str
    generated_intervention: str | None
    intervention_match: bool
    attempts: int
    responses: list[Any] = field(default_factory=list)
    output: str = "schema"         # what was asked: 'schema' or 'free'

    @property
    def output_mode(self) -> str:
        """How the used reply was constrained ('json_schema', 'json_object', 'grammar', 'free')."""
        return output_mode(self.responses)


# ---- prompt ----

def opening_of(text: str) -> str:
    """The start of a serialized example up to where its first text value begins: `{"brief_title": "`."""
    m = re.match(r'\s*((?:\{\s*"[^"]*"\s*:\s*)+"?)', text)
    return m.group(1) if m else ""


def build_prompt(retrieval: Retrieval, reasons: list[str], prompts: dict | None = None,
                 output: str = "free") -> tuple[list[dict], str, str]:
    """(messages, document, opening) of the generation prompt. With output='schema' the document ends
    where the answer starts (the grammar writes all of it), so the opening is empty."""
    stage = (prompts or load_prompts())["generation"]
    values = {**values_for(retrieval), "reasons": "\n" + "\n".join(f"{i}. {r}" for i, r in enumerate(reasons, 1))}
    examples = [(e.label, e.text) for e in retrieval.examples]
    opening = "" if output == "schema" else (opening_of(retrieval.examples[0].text) if retrieval.examples else "")
    messages, document = render(stage, values, examples, opening)
    return messages, document, opening


# ---- parsing ----

_FENCE = re.compile(r"```[a-zA-Z]*\s*\n?(.*?)(?:```|$)", re.DOTALL)


def _loads_first_object(text: str) -> dict | None:
    start = text.find("{")
    if start < 0:
        return None
    try:
        obj, _ = json.JSONDecoder().raw_decode(text[start:])
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def _repaired_object(text: str) -> dict | None:
    """The first JSON object of `text` after json-repair (cut-off strings and brackets, trailing commas,
    single quotes, comments, prose after the object)."""
    value = loads_lenient(text)
    if isinstance(value, list):
        value = next((v for v in value if isinstance(v, dict) and v), None)
    return value if isinstance(value, dict) and value else None


def _xml_like(text: str) -> dict | None:
    """`<tag>value</tag>` structures (nested, repeated tags become lists)."""
    pattern = re.compile(r"<([A-Za-z_][\w.-]*)(?:\s[^>]*)?>(.*?)</\1\s*>", re.DOTALL)

    def conv(s: str) -> Any:
        out: dict[str, Any] = {}
        for m in pattern.finditer(s):
            tag, inner = m.group(1), m.group(2)
            value = conv(inner) if pattern.search(inner) else " ".join(inner.split())
            if tag in out:
                out[tag] = out[tag] if isinstance(out[tag], list) else [out[tag]]
                out[tag].append(value)
            else:
                out[tag] = value
        return out

    result = conv(text)
    return result or None


def parse_trial(text: str) -> tuple[dict[str, Any], str]:
    """The generated report as a dict and how it was read; FormatError when nothing is usable."""
    fenced = _FENCE.search(text)
    candidates = [(fenced.group(1), "json-fenced")] if fenced else []
    candidates.append((text, "json"))
    for body, how in candidates:
        obj = _loads_first_object(body)
        if obj:
            return obj, how
    for body, _ in candidates:
        if "{" in body:
            obj = _repaired_object(body[body.find("{"):])
            if obj:
                return obj, "json-repaired"
    obj = _xml_like(text)
    if obj:
        return obj, "xml"
    raise FormatError("reply is neither JSON nor XML-like")


# ---- mapping into the canonical record ----

def _text(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, dict):
        for k in ("textblock", "#text", "text", "value", "date", "agency", "name"):
            if k in v:
                return _text(v[k])
        return None
    if isinstance(v, list):
        parts = [t for t in (_text(i) for i in v) if t]
        return "\n".join(parts) if parts else None
    s = str(v).strip()
    return s or None


def _list(v: Any) -> list:
    if v is None:
        return []
    return v if isinstance(v, list) else [v]


def _attr(v: Any, name: str) -> str | None:
    return v.get(f"@{name}") or v.get(name) if isinstance(v, dict) else None


def _int(v: Any) -> int | None:
    t = _text(v)
    m = re.search(r"\d+", t.replace(",", "")) if t else None
    return int(m.group()) if m else None


def _get(d: dict, *keys: str) -> Any:
    for k in keys:
        if k in d and d[k] not in (None, "", [], {}):
            return d[k]
    return None


def _from_xml_structure(d: dict[str, Any]) -> dict[str, Any]:
    rec: dict[str, Any] = {}
    for key in ("brief_title", "official_title", "acronym", "phase", "study_type", "overall_status",
                "why_stopped", "gender", "minimum_age", "maximum_age", "healthy_volunteers", "lead_sponsor",
                "sponsor_class"):
        if key in d:
            rec[key] = _text(d[key])
    for key in ("brief_summary", "detailed_description", "eligibility_criteria"):
        if key in d:
            rec[key] = _text(d[key])
    for key in ("start_date", "completion_date", "primary_completion_date"):
        if key in d:
            rec[key] = _text(d[key])
            rec[f"{key}_type"] = _attr(d[key], "type")
    if "enrollment" in d:
        rec["enrollment"] = _int(d["enrollment"])
        rec["enrollment_type"] = _attr(d["enrollment"], "type") or d.get("enrollment_type")
    rec["conditions"] = [_text(c) for c in _list(_get(d, "condition", "conditions")) if _text(c)]
    rec["keywords"] = [_text(c) for c in _list(_get(d, "keyword", "keywords")) if _text(c)]
    interventions = []
    for i in _list(_get(d, "intervention", "interventions")):
        if isinstance(i, str):
            interventions.append({"name": i})
        elif isinstance(i, dict):
            interventions.append({
                "type": _text(_get(i, "intervention_type", "type")),
                "name": _text(_get(i, "intervention_name", "name")),
                "description": _text(i.get("description")),
                "other_names": [_text(o) for o in _list(_get(i, "other_name", "other_names")) if _text(o)],
            })
    rec["interventions"] = interventions
    rec["arm_groups"] = [
        {"label": _text(_get(a, "arm_group_label", "label")), "type": _text(_get(a, "arm_group_type", "type")),
         "description": _text(a.get("description"))}
        for a in _list(_get(d, "arm_group", "arm_groups")) if isinstance(a, dict)
    ]
    for src, dst in (("primary_outcome", "primary_outcomes"), ("secondary_outcome", "secondary_outcomes")):
        items = _list(_get(d, src, dst))
        rec[dst] = [
            {"measure": _text(o.get("measure")), "time_frame": _text(o.get("time_frame")),
             "description": _text(o.get("description"))} if isinstance(o, dict) else {"measure": _text(o)}
            for o in items
        ]
    elig = d.get("eligibility")
    if isinstance(elig, dict):
        rec["eligibility_criteria"] = _text(elig.get("criteria")) or rec.get("eligibility_criteria")
        for key in ("gender", "minimum_age", "maximum_age", "healthy_volunteers"):
            if key in elig:
                rec[key] = _text(elig[key])
    elif elig:
        rec["eligibility_criteria"] = _text(elig)
    sponsors = d.get("sponsors")
    if isinstance(sponsors, dict):
        lead = sponsors.get("lead_sponsor")
        rec["lead_sponsor"] = _text(lead)
        rec["sponsor_class"] = _text(lead.get("agency_class")) if isinstance(lead, dict) else None
        rec["collaborators"] = [_text(c) for c in _list(sponsors.get("collaborator")) if _text(c)]
    design = _get(d, "study_design_info", "design_info")
    if isinstance(design, dict):
        rec["design_info"] = {k: _text(design.get(k)) for k in ("allocation", "intervention_model",
                                                                "primary_purpose", "masking")}
    return rec


def _from_api_v2(d: dict[str, Any]) -> dict[str, Any]:
    p = d.get("protocolSection") or {}
    ident, status = p.get("identificationModule") or {}, p.get("statusModule") or {}
    desc, cond = p.get("descriptionModule") or {}, p.get("conditionsModule") or {}
    design, arms = p.get("designModule") or {}, p.get("armsInterventionsModule") or {}
    outc, elig = p.get("outcomesModule") or {}, p.get("eligibilityModule") or {}
    spons = p.get("sponsorCollaboratorsModule") or {}
    dinfo = design.get("designInfo") or {}
    return {
        "brief_title": ident.get("briefTitle"), "official_title": ident.get("officialTitle"),
        "acronym": ident.get("acronym"), "overall_status": status.get("overallStatus"),
        "why_stopped": status.get("whyStopped"),
        "start_date": (status.get("startDateStruct") or {}).get("date"),
        "completion_date": (status.get("completionDateStruct") or {}).get("date"),
        "brief_summary": desc.get("briefSummary"), "detailed_description": desc.get("detailedDescription"),
        "conditions": cond.get("conditions") or [], "keywords": cond.get("keywords") or [],
        "phase": ", ".join(design.get("phases") or []) or None, "study_type": design.get("studyType"),
        "enrollment": _int((design.get("enrollmentInfo") or {}).get("count")),
        "interventions": [{"type": i.get("type"), "name": i.get("name"), "description": i.get("description"),
                           "other_names": i.get("otherNames") or []} for i in arms.get("interventions") or []],
        "arm_groups": [{"label": a.get("label"), "type": a.get("type"), "description": a.get("description")}
                       for a in arms.get("armGroups") or []],
        "primary_outcomes": [{"measure": o.get("measure"), "time_frame": o.get("timeFrame"),
                              "description": o.get("description")} for o in outc.get("primaryOutcomes") or []],
        "secondary_outcomes": [{"measure": o.get("measure"), "time_frame": o.get("timeFrame"),
                                "description": o.get("description")} for o in outc.get("secondaryOutcomes") or []],
        "eligibility_criteria": elig.get("eligibilityCriteria"), "gender": elig.get("sex"),
        "minimum_age": elig.get("minimumAge"), "maximum_age": elig.get("maximumAge"),
        "lead_sponsor": (spons.get("leadSponsor") or {}).get("name"),
        "sponsor_class": (spons.get("leadSponsor") or {}).get("class"),
        "design_info": {"allocation": dinfo.get("allocation"), "intervention_model": dinfo.get("interventionModel"),
                        "primary_purpose": dinfo.get("primaryPurpose"),
                        "masking": (dinfo.get("maskingInfo") or {}).get("masking")},
    }


def to_record(parsed: dict[str, Any]) -> dict[str, Any]:
    """Any of the shapes the examples have (XML structure as JSON, API v2 JSON, canonical fields)
    -> the canonical record."""
    d = parsed
    while isinstance(d, dict) and len(d) == 1 and isinstance(next(iter(d.values())), dict) \
            and next(iter(d)) in ("clinical_study", "study", "trial", "report", "clinical_trial"):
        d = next(iter(d.values()))
    rec = _from_api_v2(d) if "protocolSection" in d else _from_xml_structure(d)
    rec = normalize_record(rec)
    rec["nct_id"] = None  # a synthetic trial has no NCT id of its own (the store gives it one)
    return rec


# ---- intervention ----

def generated_intervention(record: dict[str, Any]) -> str | None:
    """The generated trial's drug: its first Drug intervention, else its first intervention."""
    items = [i for i in record.get("interventions") or [] if i.get("name")]
    drugs = [i for i in items if (i.get("type") or "").lower() == "drug"]
    chosen = drugs or items
    return chosen[0]["name"] if chosen else None


def names_match(intended: str, generated: str | None, synonyms: list[str] | None = None) -> bool:
    """Same drug by normalized name: equal, a synonym, or the name as whole words of the generated one
    ("Metformin hydrochloride 500 mg" matches "Metformin")."""
    if not generated:
        return False
    gen = normalize_name(generated)
    for name in [intended, *(synonyms or [])]:
        n = normalize_name(name)
        if n and (gen == n or re.search(rf"(?:^| ){re.escape(n)}(?: |$)", gen)):
            return True
    return False


def any_intervention_matches(record: dict[str, Any], intended: str, synonyms: list[str] | None = None) -> bool:
    return any(names_match(intended, i.get("name"), synonyms) for i in record.get("interventions") or [])


def _title_avoid() -> list[str]:
    """The outcome words (core.serialize.LEAK_WORDS) as the embedded model's title mask: the success and
    failure families as stems, the other single words whole (a title that states the outcome is invalid)."""
    from core.serialize import LEAK_WORDS

    families = ("unsucc", "succe", "fail")
    return [f + "*" for f in families] + [w for w in LEAK_WORDS if " " not in w and not w.startswith(families)]


TITLE_AVOID = _title_avoid()


async def agenerate(llm: Any, retrieval: Retrieval, reasons: list[str], *, prompts: dict | None = None,
                    temperature: float = 1.0, max_tokens: int = 1024, seed: int | None = None,
                    attempts: int = DEFAULT_ATTEMPTS, run_id: str | None = None,
                    synonyms: list[str] | None = None, output: str = "schema") -> Generation:
    """Generate and parse one synthetic trial; FormatError after `attempts` unreadable replies."""
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, not {output!r}")
    prompts = prompts or load_prompts()
    messages, document, opening = build_prompt(retrieval, reasons, prompts, output)
    extra = {"schema": trial_schema(retrieval.intervention), "schema_name": schema_name("trial"),
             "avoid_words": {f: TITLE_AVOID for f in ("brief_title", "official_title")}} \
        if output == "schema" else {}

    def read(text: str) -> tuple[dict, str, dict[str, Any]]:
        parsed, how = parse_trial(text)
        if output == "schema" and how == "json" and "protocolSection" not in parsed:
            how = "schema"   # the reply is the schema's object itself
        record = to_record(parsed)
        if not any(record.get(k) for k in ("brief_title", "official_title", "brief_summary",
                                           "detailed_description", "interventions", "eligibility_criteria")):
            raise FormatError("reply parsed but has none of the trial fields")
        return parsed, how, record

    (parsed, how, record), text, attempt, responses = await ask_until_readable(
        llm, messages, document, stop_strings(prompts, "generation", values_for(retrieval)), read,
        stage="generation", attempts=attempts, temperature=temperature, max_tokens=max_tokens, seed=seed,
        run_id=run_id, opening=opening, repeat_penalty=REPEAT_PENALTY, **extra)
    gen = generated_intervention(record)
    match = any_intervention_matches(record, retrieval.intervention, synonyms)
    return Generation(record, parsed, how, text, gen, match, attempt, responses, output)


def generate(llm: Any, retrieval: Retrieval, reasons: list[str], **kwargs: Any) -> Generation:
    """Blocking form of `agenerate` (for pages and scripts without an event loop)."""
    import asyncio

    return asyncio.run(agenerate(llm, retrieval, reasons, **kwargs))
