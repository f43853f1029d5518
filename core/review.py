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
    """A trial record as Markdown: title, key facts, interventions, outcomes, eligibility. The record's own
    text is escaped (shown as written: "[X]" or "*" in a trial stay characters, not Markdown)."""
    rec = normalize_record(record)
    e = md_escape
    lines = [f"#### {e(rec.get('brief_title') or rec.get('official_title') or '(no title)')}"]
    if rec.get("official_title") and rec.get("official_title") != rec.get("brief_title"):
        lines.append(f"*{e(rec['official_title'])}*")
    facts = [f"**{k}:** {e(v)}" for k, v in (
        ("Phase", rec.get("phase")), ("Study type", rec.get("study_type")), ("Enrollment", rec.get("enrollment")),
        ("Conditions", ", ".join(rec.get("conditions") or []) or None), ("Sex", rec.get("gender")),
        ("Ages", " – ".join(a for a in (rec.get("minimum_age"), rec.get("maximum_age")) if a) or None),
    ) if v not in (None, "")]
    if facts:
        lines.append("  \n".join(facts))
    if rec.get("interventions"):
        lines.append("**Interventions**")
        lines += [f"- {e(i.get('type') or 'Intervention')}: **{e(i.get('name') or '?')}**"
                  + (f" — {e(i['description'])}" if i.get("description") else "") for i in rec["interventions"]]
    design = {k: v for k, v in (rec.get("design_info") or {}).items() if v}
    if design:
        lines.append("**Design:** " + "; ".join(f"{k.replace('_', ' ')}: {e(v)}" for k, v in design.items()))
    for key, title in (("brief_summary", "Summary"), ("detailed_description", "Description")):
        if rec.get(key):
            lines.append(f"**{title}**\n\n{e(rec[key])}")
    for key, title in (("primary_outcomes", "Primary outcomes"), ("secondary_outcomes", "Secondary outcomes")):
        if rec.get(key):
            lines.append(f"**{title}**")
            lines += [f"- {e(o.get('measure') or '?')}" + (f" ({e(o['time_frame'])})" if o.get("time_frame") else "")
                      for o in rec[key]]
    if rec.get("eligibility_criteria"):
        # A fenced block: the criteria exactly as written (their own line breaks, not re-wrapped).
        criteria = rec["eligibility_criteria"].strip().replace("```", "'''")
        lines.append("**Eligibility**\n\n```\n" + criteria + "\n```")
    return "\n\n".join(lines)


BADGE_COLORS = {"ok": "green", "warning": "orange", "invalid": "red"}
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|<>~$:-])")


def md_escape(text: str) -> str:
    """Text shown as written inside Markdown: no emphasis, links, lists, task-list boxes ("[X]"), colour
    directives (":red[...]") or HTML."""
    return _MD_SPECIAL.sub(r"\\\1", str(text))


_RETRY_WORDS = {"near_copy": "near copy", "label_leak": "outcome in the title"}


def _check_badge(name: str, check: dict[str, Any]) -> tuple[str, str]:
    """(positive wording of what the check found, colour): a passed check says what is right, a failed
    one says what it found ("near copy of NCT…"), never a double negative."""
    ok = bool(check.get("ok"))
    colour = "green" if ok else BADGE_COLORS.get(check.get("severity") or "", "orange")
    detail = check.get("detail")
    if name == "parses":
        return ("parses", colour) if ok else ("does not parse", colour)
    if name == "required_fields":
        missing = detail.get("missing") if isinstance(detail, dict) else None
        return ("required fields present", colour) if ok else (
            "missing " + ", ".join(missing or ["required fields"]), colour)
    if name == "intervention":
        gen = detail.get("generated") if isinstance(detail, dict) else None
        return ("intended intervention", colour) if ok else (f"other intervention: {gen or 'none'}", colour)
    if name == "label_leak":
        n = detail.get("count") if isinstance(detail, dict) else None
        titled = (detail.get("title") if isinstance(detail, dict) else None) or []
        if not ok and titled:
            where = "official title" if titled[0].get("field") == "official_title" else "title"
            return (f"outcome stated in the {where} (“{titled[0].get('word')}”)", colour)
        return ("no outcome words", colour) if ok else (
            f"outcome words in the text ({n})" if n else "outcome words in the text", colour)
    if name == "quality_retries":
        retries = (detail.get("retries") if isinstance(detail, dict) else None) or []
        return ("first draft kept" if not retries else
                f"written again {len(retries)}× ("
                + ", ".join(sorted({_RETRY_WORDS.get(c, c) for r in retries for c in r.get("because") or {}})) + ")",
                colour)
    if name == "plausibility":
        problems = (detail.get("problems") if isinstance(detail, dict) else None) or []
        if ok or not problems:
            return ("plausible values", colour)
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        return (f"implausible: {problems[0][:70]}{more}", colour)
    if name == "near_copy":
        if ok:
            return ("original text", colour)
        per = detail.get("examples", []) if isinstance(detail, dict) else []
        worst = max(per, key=lambda p: (p.get("ngram_overlap") or 0, p.get("longest_run") or 0), default={})
        return (f"near copy of {worst.get('nct_id') or 'an example'}", colour)
    return (name.replace("_", " ") + (" passed" if ok else " failed"), colour)


def badges(status: str | None, checks: dict[str, dict] | None) -> list[tuple[str, str]]:
    """(text, colour) badges: the overall status, then one per check, worded positively."""
    out = [(f"validation: {status or 'not validated'}", BADGE_COLORS.get(status or "", "gray"))]
    out += [_check_badge(name, check) for name, check in (checks or {}).items() if isinstance(check, dict)]
    return out


def badges_markdown(status: str | None, checks: dict[str, dict] | None) -> str:
    """Streamlit badge markdown of `badges` (text escaped)."""
    return " ".join(f":{colour}-badge[{md_escape(text)}]" for text, colour in badges(status, checks))
