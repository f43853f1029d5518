"""Text that the classifier and the embedding model see, identical for real and synthetic trials.

Two scrubbing modes:
- "paper": the paper's removals only (overall_status, why_stopped; label words in synthetic text).
- "strict" (default): also every field that gives the outcome away: results flag, actual vs
  anticipated date and enrollment types, completion dates, and status / outcome words in any text.
"""
from __future__ import annotations

import re
from typing import Any

from core.record import normalize_record

PAPER_REMOVED_FIELDS = ["overall_status", "why_stopped"]
STRICT_REMOVED_FIELDS = PAPER_REMOVED_FIELDS + [
    "has_results", "start_date_type", "completion_date_type", "primary_completion_date_type",
    "enrollment_type", "completion_date", "primary_completion_date",
]
# Words that state an outcome or a trial status. Removed from synthetic text in "paper" mode
# (the paper saw the LLM write them), from all text in "strict" mode.
LEAK_WORDS = [
    "successful", "successfully", "success", "succeeded", "succeed", "unsuccessful",
    "failed", "failure", "fail", "fails", "failing",
    "terminated", "termination", "withdrawn", "suspended", "completed", "stopped early",
    "positive outcome", "negative outcome", "efficacious", "lack of efficacy", "futility",
]
_LEAK_RE = re.compile(r"\b(" + "|".join(re.escape(w) for w in sorted(LEAK_WORDS, key=len, reverse=True)) + r")\b",
                      re.IGNORECASE)

# Order in which fields are written: the same for every trial, whatever its source.
_TEXT_ORDER = [
    ("brief_title", "Title"), ("official_title", "Official title"), ("phase", "Phase"),
    ("study_type", "Study type"), ("overall_status", "Status"), ("why_stopped", "Why stopped"),
    ("conditions", "Conditions"), ("keywords", "Keywords"), ("interventions", "Interventions"),
    ("arm_groups", "Arms"), ("brief_summary", "Summary"), ("detailed_description", "Description"),
    ("primary_outcomes", "Primary outcomes"), ("secondary_outcomes", "Secondary outcomes"),
    ("design_info", "Design"), ("enrollment", "Enrollment"), ("enrollment_type", "Enrollment type"),
    ("start_date", "Start date"), ("start_date_type", "Start date type"),
    ("primary_completion_date", "Primary completion date"),
    ("primary_completion_date_type", "Primary completion date type"),
    ("completion_date", "Completion date"), ("completion_date_type", "Completion date type"),
    ("gender", "Gender"), ("minimum_age", "Minimum age"), ("maximum_age", "Maximum age"),
    ("healthy_volunteers", "Healthy volunteers"), ("lead_sponsor", "Sponsor"),
    ("sponsor_class", "Sponsor class"), ("has_results", "Has results"),
    ("eligibility_criteria", "Eligibility criteria"),
]
MODES = ("strict", "paper")


def removed_fields(mode: str = "strict") -> list[str]:
    if mode not in MODES:
        raise ValueError(f"scrub mode must be one of {MODES}, not {mode!r}")
    return list(PAPER_REMOVED_FIELDS if mode == "paper" else STRICT_REMOVED_FIELDS)


def scrub_words(text: str) -> str:
    """Remove outcome/status words, collapsing the whitespace they leave."""
    return re.sub(r"[ \t]{2,}", " ", _LEAK_RE.sub("", text))


def _fmt(key: str, value: Any) -> str | None:
    if value is None or value == [] or value == "":
        return None
    if key == "interventions":
        parts = []
        for i in value:
            s = f"{i.get('type') or ''}: {i.get('name') or ''}".strip(": ")
            if i.get("description"):
                s += f" ({i['description']})"
            parts.append(s)
        return "; ".join(p for p in parts if p) or None
    if key == "arm_groups":
        return "; ".join(" - ".join(str(v) for v in (a.get("label"), a.get("type"), a.get("description")) if v)
                         for a in value) or None
    if key in ("primary_outcomes", "secondary_outcomes"):
        return "; ".join(" - ".join(str(v) for v in (o.get("measure"), o.get("time_frame")) if v)
                         for o in value) or None
    if key == "design_info":
        s = "; ".join(f"{k}: {v}" for k, v in value.items() if v)
        return s or None
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return " ".join(str(value).split()) if key != "eligibility_criteria" else str(value).strip()


def classifier_text(record: dict[str, Any], synthetic: bool = False, mode: str = "strict") -> str:
    """Serialize one trial (real or synthetic) for classification or embedding, scrubbed."""
    rec = normalize_record(record)
    drop = set(removed_fields(mode))
    lines = []
    for key, title in _TEXT_ORDER:
        if key in drop:
            continue
        text = _fmt(key, rec.get(key))
        if text:
            lines.append(f"{title}: {text}")
    text = "\n".join(lines)
    if mode == "strict" or synthetic:
        text = scrub_words(text)
    return text


def removed_text(record: dict[str, Any], mode: str = "strict") -> str:
    """Only the fields that scrubbing removes (for the leakage audit)."""
    rec = normalize_record(record)
    return "\n".join(f"{k}: {_fmt(k, rec.get(k))}" for k in removed_fields(mode) if _fmt(k, rec.get(k)))
