"""Retrieval module (paper 3.2.2): pick a DrugBank drug intervention with enough successful and failed
trials, fix a label, sample K=3 of its trials with that label, and serialize each as the paper does.

Examples are serialized as JSON of the record's source structure: the ClinicalTrials.gov XML as a JSON
dict, the API v2 JSON as it is, and for TOP-only trials the canonical fields it has. The examples are
fitted to a token budget counted exactly with the target model's tokenizer (`llm.count_tokens`):
whole sections are dropped first (results, locations, references, ...), then the longest texts are
shortened; every change is recorded in the example (`truncated`, `dropped`).
"""
from __future__ import annotations

import copy
import json
import random
from typing import Any, Callable

import duckdb

from core.ingest.matching import normalize_name
from core.models import FewShotExample, Retrieval
from core.pipeline.schema import compact_example
from core.store import retrieval as q
from core.store.trials import get_records

RULES = ("drugbank", "paper-exact")
RULE_HELP = {
    "drugbank": "any Drug intervention matching a DrugBank common name or synonym (normalized)",
    "paper-exact": "the first intervention only, exactly a DrugBank common name (the paper's rule)",
}
K = 3
MIN_EACH = q.MIN_EACH   # the eligibility rule is the store's (core.store.retrieval.eligible_sql)
PAPER_EXAMPLE_BUDGET = 100_000  # the paper's check for gpt-4o-mini (128k context)
TRUNCATION_MARK = " [...]"

# Dropped in this order when examples exceed the budget (paths into the serialized dict).
# Results first: the label is stated anyway, and they are the largest sections.
DROP_ORDER = [
    # ClinicalTrials.gov XML structure
    "clinical_results", "location", "reference", "results_reference", "overall_official", "overall_contact",
    "overall_contact_backup", "location_countries", "removed_countries", "responsible_party",
    "condition_browse", "intervention_browse", "patient_data", "oversight_info", "provided_document_section",
    "pending_results", "link", "study_docs", "biospec_retention", "biospec_descr", "id_info",
    "study_first_submitted", "study_first_submitted_qc", "study_first_posted", "results_first_submitted",
    "results_first_submitted_qc", "results_first_posted", "disposition_first_submitted",
    "disposition_first_submitted_qc", "disposition_first_posted", "last_update_submitted",
    "last_update_submitted_qc", "last_update_posted", "verification_date", "other_outcome", "secondary_outcome",
    "keyword", "detailed_description",
    # API v2 JSON structure
    "resultsSection", "derivedSection", "documentSection", "annotationSection",
    "protocolSection.contactsLocationsModule", "protocolSection.referencesModule",
    "protocolSection.ipdSharingStatementModule", "protocolSection.oversightModule",
    "protocolSection.outcomesModule.secondaryOutcomes", "protocolSection.outcomesModule.otherOutcomes",
    "protocolSection.descriptionModule.detailedDescription",
    # canonical fields (TOP-only trials, records without a source document)
    "secondary_outcomes", "keywords", "collaborators", "detailed_description",
]
# Never part of an example: download boilerplate, bookkeeping.
ALWAYS_DROP = ["required_header", "sources", "source", "raw_format", "raw_document", "top_files", "updated_at"]


class RetrievalError(ValueError):
    """No usable intervention / not enough trials for the requested intervention and label."""


# ---- which interventions ----

def eligible_interventions(con: duckdb.DuckDBPyConnection, rule: str = "drugbank", min_each: int = MIN_EACH,
                           preference: list[str] | None = None) -> list[dict]:
    """Drugs usable for generation under `rule`: drugbank_id, name, n_success, n_failure."""
    return q.eligible_interventions(con, rule, min_each, preference)


def rule_summary(con: duckdb.DuckDBPyConnection, min_each: int = MIN_EACH,
                 preference: list[str] | None = None) -> list[dict]:
    """How many interventions and trials each rule yields (for the UI and the report)."""
    return [{**q.rule_counts(con, rule, min_each, preference), "description": RULE_HELP[rule]} for rule in RULES]


def resolve_intervention(con: duckdb.DuckDBPyConnection, name: str) -> dict:
    """A drug by DrugBank id, common name or synonym; RetrievalError when unknown."""
    drug = q.find_drug(con, name.strip(), normalize_name(name))
    if drug is None:
        raise RetrievalError(f"intervention {name!r} is not a DrugBank drug name, synonym or id")
    return drug


def choose(con: duckdb.DuckDBPyConnection, rng: random.Random, intervention: str | None = None,
           label: int | None = None, rule: str = "drugbank", min_each: int = MIN_EACH,
           eligible: list[dict] | None = None) -> tuple[dict, int]:
    """The (drug, label) of one generation: given, or drawn with `rng` from the eligible drugs."""
    if intervention:
        drug = resolve_intervention(con, intervention)
    else:
        pool = eligible if eligible is not None else eligible_interventions(con, rule, min_each)
        if not pool:
            raise RetrievalError(f"no intervention has >= {min_each} successful and >= {min_each} failed "
                                 f"labelled trials under rule {rule!r}")
        drug = rng.choice(pool)
    if label is None:
        label = rng.choice([0, 1])
    if label not in (0, 1):
        raise RetrievalError(f"label must be 0 or 1, not {label!r}")
    return drug, int(label)


def sample_trials(con: duckdb.DuckDBPyConnection, drugbank_id: str, label: int, k: int = K,
                  seed: int | None = None, rule: str = "drugbank", rng: random.Random | None = None) -> list[str]:
    """K NCT ids of the drug's trials with the label, drawn without replacement (seeded)."""
    ids = q.trials_of(con, drugbank_id, label, rule)
    if len(ids) < k:
        raise RetrievalError(f"{drugbank_id} has {len(ids)} trials labelled {label} under rule {rule!r}; need {k}")
    return draw(rng or random.Random(seed), ids, q.full_record_ids(con, ids), k)


def draw(rng: random.Random, ids: list[str], full: set[str], k: int) -> list[str]:
    """K of `ids` without replacement, full records first: only from them when there are at least k, else
    all of them and the rest from the TOP rows (a TOP row has no title, summary, arms or outcomes)."""
    full_ids = [i for i in ids if i in full]
    if len(full_ids) >= k:
        return rng.sample(full_ids, k)
    rest = [i for i in ids if i not in full]
    return rng.sample(full_ids, len(full_ids)) + rng.sample(rest, k - len(full_ids))


# ---- serialization (the record as JSON of its source structure) ----

def _clean_text(text: str) -> str:
    # XML text blocks are indented and hard-wrapped: keep line breaks, drop the indentation.
    lines = [" ".join(line.split()) for line in text.strip().splitlines()]
    return "\n".join(lines).strip()


def xml_to_dict(xml_text: str) -> dict[str, Any]:
    """ClinicalTrials.gov XML -> a JSON-able dict of the root's children (repeated tags become lists,
    attributes '@name', text next to attributes '#text', `textblock` wrappers kept as in the XML)."""
    from defusedxml import ElementTree as ET

    root = ET.fromstring(xml_text.encode() if isinstance(xml_text, str) else xml_text)

    def conv(el) -> Any:
        children = list(el)
        text = _clean_text(el.text or "") if el.text else ""
        if not children and not el.attrib:
            return text
        out: dict[str, Any] = {f"@{k}": v for k, v in el.attrib.items()}
        for child in children:
            value = conv(child)
            if child.tag in out:
                if not isinstance(out[child.tag], list):
                    out[child.tag] = [out[child.tag]]
                out[child.tag].append(value)
            else:
                out[child.tag] = value
        if text:
            out["#text"] = text
        return out

    result = conv(root)
    return result if isinstance(result, dict) else {root.tag: result}


def _record_fields(record: dict[str, Any]) -> dict[str, Any]:
    """The canonical fields a record actually has (TOP-only trials have only a few)."""
    out = {}
    for k, v in record.items():
        if k in ALWAYS_DROP or v is None or v == [] or v == "" or k in ("label", "label_source"):
            continue
        if isinstance(v, dict):
            v = {a: b for a, b in v.items() if b not in (None, "", [])}
            if not v:
                continue
        if isinstance(v, list):
            v = [{a: b for a, b in i.items() if b not in (None, "", [])} if isinstance(i, dict) else i for i in v]
        out[k] = v
    return out


def example_document(record: dict[str, Any], raw_format: str | None, raw_document: str | None) -> dict[str, Any]:
    """The dict serialized for one example."""
    doc: dict[str, Any] | None = None
    if raw_document and raw_format == "xml":
        try:
            doc = xml_to_dict(raw_document)
        except Exception:
            doc = None
    elif raw_document and raw_format == "json":
        try:
            doc = json.loads(raw_document)
        except ValueError:
            doc = None
    if not isinstance(doc, dict):
        doc = _record_fields(record)
    for k in ALWAYS_DROP:
        doc.pop(k, None)
    return doc


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, ensure_ascii=False, default=str)


# ---- fitting to the token budget ----

def _drop_path(doc: dict[str, Any], path: str) -> bool:
    parts = path.split(".")
    node: Any = doc
    for p in parts[:-1]:
        if not isinstance(node, dict) or p not in node:
            return False
        node = node[p]
    if isinstance(node, dict) and parts[-1] in node:
        del node[parts[-1]]
        return True
    return False


def _longest_string(node: Any, path: str = "") -> tuple[int, str, Any, Any]:
    """(length, path, container, key) of the longest string leaf."""
    best: tuple[int, str, Any, Any] = (0, "", None, None)
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for k, v in items:
        p = f"{path}.{k}" if path else str(k)
        cand = (len(v), p, node, k) if isinstance(v, str) else _longest_string(v, p)
        if cand[0] > best[0]:
            best = cand
    return best


def fit_document(doc: dict[str, Any], count_tokens: Callable[[str], int], budget: int) -> tuple[str, int, list[str], bool]:
    """Serialize `doc` within `budget` tokens: (text, tokens, changes, truncated)."""
    doc = copy.deepcopy(doc)
    text = dumps(doc)
    n = count_tokens(text)
    changes: list[str] = []
    if n <= budget:
        return text, n, changes, False
    for path in DROP_ORDER:
        if _drop_path(doc, path):
            changes.append(path)
            text = dumps(doc)
            n = count_tokens(text)
            if n <= budget:
                return text, n, changes, True
    shortened: set[str] = set()
    for _ in range(200):
        length, path, container, key = _longest_string(doc)
        if length <= 40:
            break
        original = container[key]
        shortened.add(path)
        container[key] = original[:20] + TRUNCATION_MARK
        text = dumps(doc)
        n = count_tokens(text)
        if n > budget:
            continue  # even cut to the bone this text is not enough: shorten the next longest too
        lo, hi = 20, length  # the longest prefix of this text that fits (binary search, exact counts)
        while hi - lo > max(8, length // 64):
            mid = (lo + hi) // 2
            container[key] = original[:mid].rstrip() + TRUNCATION_MARK
            if count_tokens(dumps(doc)) <= budget:
                lo = mid
            else:
                hi = mid
        container[key] = original[:lo].rstrip() + TRUNCATION_MARK
        text = dumps(doc)
        n = count_tokens(text)
        break
    changes += [f"shortened:{p}" for p in sorted(shortened)]
    if n > budget:  # last resort: cut the serialization itself (no longer valid JSON; marked)
        lo, hi = 0, len(text)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if count_tokens(text[:mid] + TRUNCATION_MARK) <= budget:
                lo = mid
            else:
                hi = mid - 1
        text = text[:lo] + TRUNCATION_MARK
        n = count_tokens(text)
        changes.append("cut")
    return text, n, changes, True


def fit_examples(docs: list[tuple[str, int, dict[str, Any]]], count_tokens: Callable[[str], int],
                 budget: int | None) -> list[FewShotExample]:
    """Fit (nct_id, label, doc) examples into `budget` tokens in all: short examples stay whole and
    leave their unused share to the longer ones."""
    full = [(nct, label, doc, dumps(doc)) for nct, label, doc in docs]
    sizes = [count_tokens(t) for *_, t in full]
    out: list[FewShotExample | None] = [None] * len(full)
    remaining = budget
    order = sorted(range(len(full)), key=lambda i: sizes[i])
    for rank, i in enumerate(order):
        nct, label, doc, text = full[i]
        share = None if remaining is None else remaining // (len(full) - rank)
        if share is None or sizes[i] <= share:
            out[i] = FewShotExample(nct, label, text, sizes[i], sizes[i])
        else:
            t, n, changes, truncated = fit_document(doc, count_tokens, max(share, 1))
            out[i] = FewShotExample(nct, label, t, n, sizes[i], truncated, changes)
        if remaining is not None:
            remaining -= out[i].tokens
    return [e for e in out if e is not None]


def retrieve(con: duckdb.DuckDBPyConnection, *, intervention: str | None = None, label: int | None = None,
             k: int = K, seed: int | None = None, rule: str = "drugbank", min_each: int = MIN_EACH,
             count_tokens: Callable[[str], int] | None = None, budget: int | None = PAPER_EXAMPLE_BUDGET,
             eligible: list[dict] | None = None, compact: bool = False) -> Retrieval:
    """One retrieval: (drug, label) chosen or drawn with `seed`, K examples sampled and fitted.
    `compact`: examples in the trial schema's shape (core.pipeline.schema.compact_example), for small contexts."""
    if rule not in RULES:
        raise RetrievalError(f"unknown retrieval rule {rule!r} (known: {', '.join(RULES)})")
    rng = random.Random(seed)
    drug, label = choose(con, rng, intervention, label, rule, min_each, eligible)
    ids = sample_trials(con, drug["drugbank_id"], label, k, rule=rule, rng=rng)
    records = get_records(con, ids)
    raws = q.raw_documents(con, ids)
    if compact:
        synonyms = q.synonyms_of(con, [drug["drugbank_id"]]).get(drug["drugbank_id"], [])
        docs = [(i, label, compact_example(records[i], drug["name"], synonyms)) for i in ids]
    else:
        docs = [(i, label, example_document(records[i], *raws.get(i, (None, None)))) for i in ids]
    counter = count_tokens or (lambda s: len(s))
    examples = fit_examples(docs, counter, budget if count_tokens else None)
    n_full = len(q.full_record_ids(con, ids))
    return Retrieval(drug["drugbank_id"], drug["name"], label, rule, seed, examples, budget, n_full, len(ids) - n_full, compact)


class RetrievalPool:
    """What retrieval needs for a batch, read up front: the drugs, their trial lists and synonyms, and
    (prefetch) the records and source documents of the trials the items will draw. Items then retrieve
    without touching the store. Gives the same draws as `retrieve` for the same seed."""

    def __init__(self, rule: str, min_each: int, eligible: list[dict], drug: dict | None,
                 lists: dict[tuple[str, int], list[str]], synonyms: dict[str, list[str]]):
        self.rule, self.min_each, self.eligible, self.drug = rule, min_each, eligible, drug
        self.lists, self.synonyms = lists, synonyms
        self.records: dict[str, dict] = {}
        self.raws: dict[str, tuple[str | None, str | None]] = {}
        self.full: set[str] = set()   # trials with a full record (drawn first)

    @classmethod
    def load(cls, con: duckdb.DuckDBPyConnection, rule: str = "drugbank", min_each: int = MIN_EACH,
             intervention: str | None = None) -> "RetrievalPool":
        if rule not in RULES:
            raise RetrievalError(f"unknown retrieval rule {rule!r} (known: {', '.join(RULES)})")
        drug = resolve_intervention(con, intervention) if intervention else None
        eligible = [] if drug else eligible_interventions(con, rule, min_each)
        ids = [drug["drugbank_id"]] if drug else [d["drugbank_id"] for d in eligible]
        lists = q.trial_lists(con, ids, rule) if ids else {}
        pool = cls(rule, min_each, eligible, drug, lists, q.synonyms_of(con, ids) if ids else {})
        pool.full = q.full_record_ids(con, sorted({n for v in lists.values() for n in v}))
        return pool

    def count(self, drugbank_id: str, label: int) -> int:
        return len(self.lists.get((drugbank_id, label), []))

    def select(self, *, label: int | None = None, k: int = K, seed: int | None = None) -> tuple[dict, int, list[str]]:
        """(drug, label, NCT ids) of one draw: the same rng calls, in the same order, as `retrieve`."""
        rng = random.Random(seed)
        if self.drug:
            drug = self.drug
        else:
            if not self.eligible:
                raise RetrievalError(f"no intervention has >= {self.min_each} successful and >= {self.min_each} "
                                     f"failed labelled trials under rule {self.rule!r}")
            drug = rng.choice(self.eligible)
        if label is None:
            label = rng.choice([0, 1])
        ids = self.lists.get((drug["drugbank_id"], int(label)), [])
        if len(ids) < k:
            raise RetrievalError(f"{drug['drugbank_id']} has {len(ids)} trials labelled {label} under rule "
                                 f"{self.rule!r}; need {k}")
        return drug, int(label), draw(rng, ids, self.full, k)

    def prefetch(self, con: duckdb.DuckDBPyConnection, nct_ids: list[str]) -> None:
        todo = sorted(set(nct_ids) - set(self.records))
        if todo:
            self.records.update(get_records(con, todo))
            self.raws.update(q.raw_documents(con, todo))

    def retrieve(self, *, label: int | None = None, k: int = K, seed: int | None = None,
                 count_tokens: Callable[[str], int] | None = None,
                 budget: int | None = PAPER_EXAMPLE_BUDGET, compact: bool = False) -> Retrieval:
        drug, label, chosen = self.select(label=label, k=k, seed=seed)
        missing = [i for i in chosen if i not in self.records]
        if missing:
            raise RetrievalError(f"trials {missing} were not prefetched")
        if compact:
            synonyms = self.synonyms.get(drug["drugbank_id"], [])
            docs = [(i, label, compact_example(self.records[i], drug["name"], synonyms)) for i in chosen]
        else:
            docs = [(i, label, example_document(self.records[i], *self.raws.get(i, (None, None))))
                    for i in chosen]
        counter = count_tokens or (lambda s: len(s))
        examples = fit_examples(docs, counter, budget if count_tokens else None)
        n_full = sum(i in self.full for i in chosen)
        return Retrieval(drug["drugbank_id"], drug["name"], label, self.rule, seed, examples, budget, n_full,
                         len(chosen) - n_full, compact)


def example_records(con: duckdb.DuckDBPyConnection, nct_ids: list[str]) -> dict[str, dict]:
    """Canonical records of the examples (for validation and side-by-side views)."""
    return get_records(con, nct_ids)
