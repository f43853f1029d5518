"""The canonical trial record: one dict shape for XML, API v2 JSON, TOP rows and synthetic trials.

Keys equal the columns of the `trials` table (core/store/trials.py). List fields are real lists;
structured list items are dicts with the keys given in LIST_ITEM_KEYS.
"""
from __future__ import annotations

from typing import Any

SCALAR_FIELDS = [
    "nct_id", "brief_title", "official_title", "acronym", "brief_summary", "detailed_description",
    "phase", "study_type", "overall_status", "why_stopped",
    "start_date", "start_date_type", "completion_date", "completion_date_type",
    "primary_completion_date", "primary_completion_date_type",
    "enrollment", "enrollment_type", "eligibility_criteria", "gender", "minimum_age", "maximum_age",
    "healthy_volunteers", "lead_sponsor", "sponsor_class", "has_results",
]
LIST_FIELDS = ["conditions", "keywords", "collaborators"]
LIST_ITEM_KEYS: dict[str, list[str]] = {
    "interventions": ["type", "name", "description", "other_names"],
    "arm_groups": ["label", "type", "description"],
    "primary_outcomes": ["measure", "time_frame", "description"],
    "secondary_outcomes": ["measure", "time_frame", "description"],
}
DESIGN_INFO_KEYS = ["allocation", "intervention_model", "primary_purpose", "masking"]
TRIAL_FIELDS = SCALAR_FIELDS + LIST_FIELDS + list(LIST_ITEM_KEYS) + ["design_info"]

# Fields that state or give away how a trial ended. A synthetic trial never has them: its label is the
# one we intended, recorded beside it (synthetic_trials.intended_label), never inside it.
OUTCOME_FIELDS = ["overall_status", "why_stopped", "has_results", "completion_date", "completion_date_type",
                  "primary_completion_date", "primary_completion_date_type", "start_date", "start_date_type",
                  "enrollment_type"]
# What a synthetic trial has, in the order a model writes it: what a reader and the classifier need.
# core.pipeline.schema derives the JSON Schema of a synthetic trial from this list.
SYNTHETIC_FIELDS = [
    "brief_title", "official_title", "brief_summary", "detailed_description", "phase", "study_type",
    "conditions", "keywords", "interventions", "arm_groups", "primary_outcomes", "secondary_outcomes",
    "eligibility_criteria", "gender", "minimum_age", "maximum_age", "enrollment", "design_info", "sponsor_class",
]
assert set(SYNTHETIC_FIELDS) <= set(TRIAL_FIELDS) and not set(SYNTHETIC_FIELDS) & set(OUTCOME_FIELDS)


def empty_record(nct_id: str | None = None) -> dict[str, Any]:
    """A record with every canonical key present (None or empty lists)."""
    rec: dict[str, Any] = {k: None for k in SCALAR_FIELDS}
    rec.update({k: [] for k in LIST_FIELDS})
    rec.update({k: [] for k in LIST_ITEM_KEYS})
    rec["design_info"] = {k: None for k in DESIGN_INFO_KEYS}
    rec["nct_id"] = nct_id
    return rec


def normalize_record(rec: dict[str, Any]) -> dict[str, Any]:
    """Fill missing keys and drop unknown ones, so any partial dict fits the table."""
    out = empty_record(rec.get("nct_id"))
    for key in TRIAL_FIELDS:
        if key not in rec or rec[key] is None:
            continue
        value = rec[key]
        if key in LIST_ITEM_KEYS:
            keys = LIST_ITEM_KEYS[key]
            items = []
            for item in value or []:
                if isinstance(item, str):
                    item = {keys[1] if key == "interventions" else keys[0]: item}
                row = {k: item.get(k) for k in keys}
                if "other_names" in row:
                    row["other_names"] = list(row["other_names"] or [])
                items.append(row)
            out[key] = items
        elif key == "design_info":
            out[key] = {k: (value or {}).get(k) for k in DESIGN_INFO_KEYS}
        elif key in LIST_FIELDS:
            out[key] = [str(v) for v in value if v is not None]
        else:
            out[key] = value
    return out


def intervention_names(rec: dict[str, Any]) -> list[str]:
    return [i.get("name") for i in rec.get("interventions") or [] if i.get("name")]
