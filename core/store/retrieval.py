"""Retrieval queries: DrugBank-matched drug interventions with enough labelled trials of each outcome (the
eligibility rule, `eligible_sql`, is defined here once), and which trials have a full record.

Rules (see core.pipeline.retrieval.RULES):
- "drugbank": any intervention of type Drug whose name matched DrugBank (common name or synonym, normalized).
- "paper-exact": the trial's first intervention only, matched exactly on a DrugBank common name.
"""
from __future__ import annotations

import duckdb

from core.store.trials import effective_label_sql, full_record_sql

MIN_EACH = 3   # the paper's rule: at least 3 successful and 3 failed labelled trials

_RULE_WHERE = {
    "drugbank": "lower(m.intervention_type) = 'drug'",
    "paper-exact": "lower(m.intervention_type) = 'drug' AND m.position = 0 AND m.rule = 'common_exact'",
    # not a generation rule: the `stats` figure "first drug only" (any match rule, first intervention)
    "first-drug": "lower(m.intervention_type) = 'drug' AND m.position = 0",
}


def _where(rule: str) -> str:
    if rule not in _RULE_WHERE:
        raise ValueError(f"unknown retrieval rule {rule!r} (known: {', '.join(_RULE_WHERE)})")
    return _RULE_WHERE[rule]


def _labelled_pairs_sql(rule: str, preference: list[str] | None) -> str:
    """SQL for distinct (drugbank_id, nct_id, label) under a rule."""
    return f"""
        SELECT DISTINCT m.drugbank_id, m.nct_id, l.label
        FROM intervention_matches m
        JOIN ({effective_label_sql(preference)}) l USING (nct_id)
        WHERE {_where(rule)}
    """


def eligible_sql(rule: str = "drugbank", min_each: int = MIN_EACH, preference: list[str] | None = None) -> str:
    """THE eligibility rule, defined once (Home, stats, Generate, retrieval and fine-tuning use it): DrugBank
    drugs with >= min_each successful and >= min_each failed trials by effective label, under a match rule.
    Columns: drugbank_id, name, n_success, n_failure."""
    n = int(min_each)
    return f"""
        SELECT p.drugbank_id, any_value(d.common_name) AS name,
               count(*) FILTER (WHERE p.label = 1) AS n_success,
               count(*) FILTER (WHERE p.label = 0) AS n_failure
        FROM ({_labelled_pairs_sql(rule, preference)}) p JOIN drugbank d USING (drugbank_id)
        GROUP BY p.drugbank_id
        HAVING n_success >= {n} AND n_failure >= {n}
    """


def set_a_sql(rule: str = "drugbank", min_each: int = MIN_EACH, preference: list[str] | None = None) -> str:
    """Set A: the distinct labelled trials (nct_id, label) of the eligible interventions."""
    return f"""
        SELECT DISTINCT nct_id, label FROM ({_labelled_pairs_sql(rule, preference)})
        WHERE drugbank_id IN (SELECT drugbank_id FROM ({eligible_sql(rule, min_each, preference)}))
    """


def eligible_interventions(con: duckdb.DuckDBPyConnection, rule: str = "drugbank", min_each: int = MIN_EACH,
                           preference: list[str] | None = None) -> list[dict]:
    """The eligible drugs (eligible_sql): dicts of drugbank_id, name, n_success, n_failure; most trials first."""
    rows = con.execute(
        f"SELECT drugbank_id, name, n_success, n_failure FROM ({eligible_sql(rule, min_each, preference)}) "
        "ORDER BY n_success + n_failure DESC, name"
    ).fetchall()
    return [{"drugbank_id": r[0], "name": r[1], "n_success": r[2], "n_failure": r[3]} for r in rows]


def eligible_trials(con: duckdb.DuckDBPyConnection, rule: str = "drugbank", min_each: int = MIN_EACH,
                    preference: list[str] | None = None) -> list[tuple[str, int]]:
    """Set A as (nct_id, label), sorted by NCT id."""
    return [(r[0], int(r[1])) for r in con.execute(
        f"SELECT nct_id, label FROM ({set_a_sql(rule, min_each, preference)}) ORDER BY nct_id").fetchall()]


def rule_counts(con: duckdb.DuckDBPyConnection, rule: str, min_each: int = MIN_EACH,
                preference: list[str] | None = None) -> dict:
    """How many interventions, distinct trials (set A) and (drug, trial) pairs a rule yields."""
    row = con.execute(
        f"""
        WITH keep AS ({eligible_sql(rule, min_each, preference)})
        SELECT (SELECT count(*) FROM keep),
               (SELECT count(*) FROM ({set_a_sql(rule, min_each, preference)})),
               (SELECT coalesce(sum(n_success + n_failure), 0) FROM keep)
        """
    ).fetchall()[0]
    return {"rule": rule, "interventions": row[0], "trials": row[1], "pairs": int(row[2])}


def trials_of(con: duckdb.DuckDBPyConnection, drugbank_id: str, label: int, rule: str = "drugbank",
              preference: list[str] | None = None) -> list[str]:
    """NCT ids of the labelled trials of one drug with one label, sorted (for seeded sampling)."""
    rows = con.execute(
        f"SELECT nct_id FROM ({_labelled_pairs_sql(rule, preference)}) WHERE drugbank_id = ? AND label = ? "
        "ORDER BY nct_id",
        [drugbank_id, int(label)],
    ).fetchall()
    return [r[0] for r in rows]


def find_drug(con: duckdb.DuckDBPyConnection, name: str, name_norm: str) -> dict | None:
    """A drug by DrugBank id, exact common name (case-insensitive) or normalized name/synonym."""
    row = con.execute(
        "SELECT drugbank_id, common_name FROM drugbank WHERE drugbank_id = ? OR lower(common_name) = lower(?) "
        "ORDER BY drugbank_id = ? DESC LIMIT 1",
        [name, name, name],
    ).fetchone()
    if row is None:
        row = con.execute(
            "SELECT d.drugbank_id, d.common_name FROM drugbank_names n JOIN drugbank d USING (drugbank_id) "
            "WHERE n.name_norm = ? ORDER BY n.kind = 'common' DESC, d.drugbank_id LIMIT 1",
            [name_norm],
        ).fetchone()
    return {"drugbank_id": row[0], "name": row[1]} if row else None


def drug_synonyms(con: duckdb.DuckDBPyConnection, drugbank_id: str) -> list[str]:
    row = con.execute("SELECT synonyms FROM drugbank WHERE drugbank_id = ?", [drugbank_id]).fetchone()
    return list(row[0] or []) if row else []


def raw_documents(con: duckdb.DuckDBPyConnection, nct_ids: list[str]) -> dict[str, tuple[str | None, str | None]]:
    """nct_id -> (raw_format, raw_document)."""
    if not nct_ids:
        return {}
    rows = con.execute(
        "SELECT nct_id, raw_format, raw_document FROM trials WHERE nct_id IN (SELECT unnest(?))", [list(nct_ids)]
    ).fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def trial_lists(con: duckdb.DuckDBPyConnection, drugbank_ids: list[str], rule: str = "drugbank",
                preference: list[str] | None = None) -> dict[tuple[str, int], list[str]]:
    """(drugbank_id, label) -> sorted NCT ids, for many drugs at once (same order as trials_of)."""
    rows = con.execute(
        f"SELECT drugbank_id, label, list(nct_id ORDER BY nct_id) FROM ({_labelled_pairs_sql(rule, preference)}) "
        "WHERE drugbank_id IN (SELECT unnest(?)) GROUP BY drugbank_id, label",
        [list(drugbank_ids)],
    ).fetchall()
    return {(r[0], int(r[1])): list(r[2]) for r in rows}


def synonyms_of(con: duckdb.DuckDBPyConnection, drugbank_ids: list[str]) -> dict[str, list[str]]:
    rows = con.execute("SELECT drugbank_id, synonyms FROM drugbank WHERE drugbank_id IN (SELECT unnest(?))",
                       [list(drugbank_ids)]).fetchall()
    return {r[0]: list(r[1] or []) for r in rows}


def full_record_ids(con: duckdb.DuckDBPyConnection, nct_ids: list[str]) -> set[str]:
    """Those of `nct_ids` that have a full ClinicalTrials.gov record (core.store.trials.full_record_sql),
    which retrieval draws its examples from first."""
    if not nct_ids:
        return set()
    rows = con.execute(f"SELECT nct_id FROM trials WHERE nct_id IN (SELECT unnest(?)) AND {full_record_sql()}",
                       [list(nct_ids)]).fetchall()
    return {r[0] for r in rows}
