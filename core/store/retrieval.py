"""Retrieval queries: DrugBank-matched drug interventions with enough labelled trials of each outcome.

Rules (see core.pipeline.retrieval.RULES):
- "drugbank": any intervention of type Drug whose name matched DrugBank (common name or synonym, normalized).
- "paper-exact": the trial's first intervention only, matched exactly on a DrugBank common name.
"""
from __future__ import annotations

import duckdb

from core.store.trials import effective_label_sql

_RULE_WHERE = {
    "drugbank": "lower(m.intervention_type) = 'drug'",
    "paper-exact": "lower(m.intervention_type) = 'drug' AND m.position = 0 AND m.rule = 'common_exact'",
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


def eligible_interventions(con: duckdb.DuckDBPyConnection, rule: str = "drugbank", min_each: int = 3,
                           preference: list[str] | None = None) -> list[dict]:
    """Drugs with >= min_each success and >= min_each failure trials: dicts of drugbank_id, name,
    n_success, n_failure; most trials first."""
    rows = con.execute(
        f"""
        SELECT p.drugbank_id, d.common_name,
               count(*) FILTER (WHERE p.label = 1) AS n_success,
               count(*) FILTER (WHERE p.label = 0) AS n_failure
        FROM ({_labelled_pairs_sql(rule, preference)}) p JOIN drugbank d USING (drugbank_id)
        GROUP BY p.drugbank_id, d.common_name
        HAVING n_success >= ? AND n_failure >= ?
        ORDER BY n_success + n_failure DESC, d.common_name
        """,
        [min_each, min_each],
    ).fetchall()
    return [{"drugbank_id": r[0], "name": r[1], "n_success": r[2], "n_failure": r[3]} for r in rows]


def rule_counts(con: duckdb.DuckDBPyConnection, rule: str, min_each: int = 3,
                preference: list[str] | None = None) -> dict:
    """How many interventions and distinct trials a rule yields."""
    row = con.execute(
        f"""
        WITH p AS ({_labelled_pairs_sql(rule, preference)}),
        keep AS (
            SELECT drugbank_id FROM p GROUP BY drugbank_id
            HAVING count(*) FILTER (WHERE label = 1) >= ? AND count(*) FILTER (WHERE label = 0) >= ?
        )
        SELECT (SELECT count(*) FROM keep),
               (SELECT count(DISTINCT nct_id) FROM p WHERE drugbank_id IN (SELECT drugbank_id FROM keep)),
               (SELECT count(*) FROM p WHERE drugbank_id IN (SELECT drugbank_id FROM keep))
        """,
        [min_each, min_each],
    ).fetchone()
    return {"rule": rule, "interventions": row[0], "trials": row[1], "pairs": row[2]}


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
