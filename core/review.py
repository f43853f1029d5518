"""Reviewing synthetic trials: a readable rendering of a record, and the text a synthetic trial
shares with its own few-shot examples, highlighted (the same word n-grams the near-copy check counts)."""
from __future__ import annotations

import html
import re
from typing import Any

from core.record import normalize_record
from core.serialize import classifier_text
from core.pipeline.validation import NGRAM

_WORD = re.compile(r"[A-Za-z0-9]+")


def review_text(record: dict[str, Any]) -> str:
    """The trial's text as the near-copy check reads it (not scrubbed: the reviewer sees it all)."""
    return classifier_text(record, mode="paper")


def _words(text: str) -> list[tuple[int, int, str]]:
    return [(m.start(), m.end(), m.group(0).lower()) for m in _WORD.finditer(text)]


def shared_spans(text: str, others: list[str], n: int = NGRAM) -> list[tuple[int, int]]:
    """Character spans of `text` lying in a run of >= n words that also occurs in one of `others`."""
    words = _words(text)
    grams: set[tuple[str, ...]] = set()
    for other in others:
        ow = [w for _, _, w in _words(other)]
        grams |= {tuple(ow[i:i + n]) for i in range(len(ow) - n + 1)}
    marked = [False] * len(words)
    seq = [w for _, _, w in words]
    for i in range(len(seq) - n + 1):
        if tuple(seq[i:i + n]) in grams:
            for j in range(i, i + n):
                marked[j] = True
    spans: list[tuple[int, int]] = []
    for (start, end, _), m in zip(words, marked):
        if not m:
            continue
        if spans and text[spans[-1][1]:start].strip(" \t,.;:()-/") == "":
            spans[-1] = (spans[-1][0], end)   # join neighbours separated only by spaces/punctuation
        else:
            spans.append((start, end))
    return spans


def highlight_html(text: str, others: list[str], n: int = NGRAM) -> tuple[str, float]:
    """(HTML with shared runs in <mark>, share of the text's characters marked)."""
    spans = shared_spans(text, others, n)
    out, pos, marked = [], 0, 0
    for start, end in spans:
        out.append(html.escape(text[pos:start]))
        out.append(f"<mark>{html.escape(text[start:end])}</mark>")
        marked += end - start
        pos = end
    out.append(html.escape(text[pos:]))
    body = "".join(out).replace("\n", "<br>")
    return body, (marked / len(text) if text else 0.0)


def record_markdown(record: dict[str, Any]) -> str:
    """A trial record as Markdown: title, key facts, interventions, outcomes, eligibility."""
    rec = normalize_record(record)
    lines = [f"#### {rec.get('brief_title') or rec.get('official_title') or '(no title)'}"]
    if rec.get("official_title") and rec.get("official_title") != rec.get("brief_title"):
        lines.append(f"*{rec['official_title']}*")
    facts = [f"**{k}:** {v}" for k, v in (
        ("Phase", rec.get("phase")), ("Study type", rec.get("study_type")), ("Enrollment", rec.get("enrollment")),
        ("Conditions", ", ".join(rec.get("conditions") or []) or None), ("Sex", rec.get("gender")),
        ("Ages", " – ".join(a for a in (rec.get("minimum_age"), rec.get("maximum_age")) if a) or None),
    ) if v not in (None, "")]
    if facts:
        lines.append("  \n".join(facts))
    if rec.get("interventions"):
        lines.append("**Interventions**")
        lines += [f"- {i.get('type') or 'Intervention'}: **{i.get('name') or '?'}**"
                  + (f" — {i['description']}" if i.get("description") else "") for i in rec["interventions"]]
    design = {k: v for k, v in (rec.get("design_info") or {}).items() if v}
    if design:
        lines.append("**Design:** " + "; ".join(f"{k.replace('_', ' ')}: {v}" for k, v in design.items()))
    for key, title in (("brief_summary", "Summary"), ("detailed_description", "Description")):
        if rec.get(key):
            lines.append(f"**{title}**\n\n{rec[key]}")
    for key, title in (("primary_outcomes", "Primary outcomes"), ("secondary_outcomes", "Secondary outcomes")):
        if rec.get(key):
            lines.append(f"**{title}**")
            lines += [f"- {o.get('measure') or '?'}" + (f" ({o['time_frame']})" if o.get("time_frame") else "")
                      for o in rec[key]]
    if rec.get("eligibility_criteria"):
        lines.append("**Eligibility**\n\n```\n" + rec["eligibility_criteria"].strip() + "\n```")
    return "\n\n".join(lines)


BADGE_COLORS = {"ok": "green", "warning": "orange", "invalid": "red"}
CHECK_TITLES = {"parses": "parses", "required_fields": "required fields", "intervention": "intervention",
                "label_leak": "no outcome words", "near_copy": "not a near copy"}


def badges_markdown(status: str | None, checks: dict[str, dict] | None) -> str:
    """Streamlit badge markdown: the overall status, then one badge per check."""
    parts = [f":{BADGE_COLORS.get(status or '', 'gray')}-badge[validation: {status or 'not validated'}]"]
    for name, check in (checks or {}).items():
        sev = check.get("severity", "ok")
        mark = "✓" if check.get("ok") else "✗"
        parts.append(f":{BADGE_COLORS.get(sev, 'gray')}-badge[{mark} {CHECK_TITLES.get(name, name)}]")
    return " ".join(parts)
