"""Store area: embeddings and analysis results. The embeddings cache, stored analysis results and the
queries that pick the real and synthetic trials an analysis compares."""
from __future__ import annotations

import json
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from core.record import TRIAL_FIELDS
from core.store.synthetic import USABLE_SQL


# ---- embeddings cache ----

def cached_embeddings(con: duckdb.DuckDBPyConnection, hashes: list[str], model: str) -> dict[str, np.ndarray]:
    """Vectors already stored for these text hashes and this model."""
    if not hashes:
        return {}
    tbl = con.sql(
        "SELECT text_hash, vector FROM embeddings WHERE model = ? AND text_hash IN (SELECT unnest(?))",
        params=[model, list(set(hashes))],
    ).to_arrow_table()
    if tbl.num_rows == 0:
        return {}
    keys = tbl.column("text_hash").to_pylist()
    flat = tbl.column("vector").combine_chunks()
    values = flat.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    dim = len(values) // len(keys)
    mat = values.reshape(len(keys), dim)
    return {k: mat[i] for i, k in enumerate(keys)}


def put_embeddings(con: duckdb.DuckDBPyConnection, hashes: list[str], vectors: np.ndarray, model: str) -> None:
    """Store vectors (rows of `vectors`, same order as `hashes`); existing keys are kept."""
    if not hashes:
        return
    vectors = np.asarray(vectors, dtype=np.float32)
    batch = pa.table({
        "text_hash": pa.array(hashes, pa.string()),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1]).cast(
            pa.list_(pa.float32())),
    })
    con.register("_new_embeddings", batch)
    try:
        con.execute(
            """
            INSERT INTO embeddings (text_hash, model, dim, vector)
            SELECT DISTINCT ON (text_hash) text_hash, ?, ?, vector FROM _new_embeddings
            ON CONFLICT DO NOTHING
            """,
            [model, int(vectors.shape[1])],
        )
    finally:
        con.unregister("_new_embeddings")


def embedding_count(con: duckdb.DuckDBPyConnection, model: str | None = None) -> int:
    if model is None:
        return con.execute("SELECT count(*) FROM embeddings").fetchone()[0]
    return con.execute("SELECT count(*) FROM embeddings WHERE model = ?", [model]).fetchone()[0]


# ---- analysis results ----

def save_result(con: duckdb.DuckDBPyConnection, result_id: str, kind: str, synthetic_source: str | None,
                model: str, params: dict[str, Any], seed: int, result: dict[str, Any], elapsed_s: float) -> None:
    con.execute("DELETE FROM analysis_results WHERE id = ?", [result_id])
    con.execute(
        """INSERT INTO analysis_results (id, kind, synthetic_source, model, params, seed, result, elapsed_s)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
        [result_id, kind, synthetic_source, model, json.dumps(params, sort_keys=True), seed,
         json.dumps(result), elapsed_s],
    )


def get_result(con: duckdb.DuckDBPyConnection, result_id: str) -> dict[str, Any] | None:
    row = con.execute(
        "SELECT id, kind, synthetic_source, model, params, seed, result, elapsed_s, created_at "
        "FROM analysis_results WHERE id = ?", [result_id],
    ).fetchone()
    return _result_row(row) if row else None


def list_results(con: duckdb.DuckDBPyConnection, kind: str | None = None) -> list[dict[str, Any]]:
    """Stored results, newest first, without the (possibly large) result body."""
    sql = ("SELECT id, kind, synthetic_source, model, params, seed, NULL, elapsed_s, created_at "
           "FROM analysis_results")
    args: list = []
    if kind:
        sql += " WHERE kind = ?"
        args.append(kind)
    return [_result_row(r) for r in con.execute(sql + " ORDER BY created_at DESC", args).fetchall()]


def _result_row(row: tuple) -> dict[str, Any]:
    keys = ["id", "kind", "synthetic_source", "model", "params", "seed", "result", "elapsed_s", "created_at"]
    out = dict(zip(keys, row))
    for k in ("params", "result"):
        if isinstance(out[k], str):
            out[k] = json.loads(out[k])
    return out


# ---- what an analysis compares ----

def synthetic_sources(con: duckdb.DuckDBPyConnection, rule: str = "all") -> list[tuple[str, int]]:
    """(source, number of synthetic trials) for each synthetic set: project runs and imported sets;
    rule 'usable' counts only the usable ones (core.store.synthetic.USABLE_SQL), and lists only sets with some."""
    where = f" WHERE {USABLE_SQL}" if rule == "usable" else ""
    return [tuple(r) for r in con.execute(
        f"SELECT source, count(*) FROM synthetic_trials{where} GROUP BY source ORDER BY source").fetchall()]


def synthetic_for_analysis(con: duckdb.DuckDBPyConnection, source: str | None = None,
                           rule: str = "usable") -> list[dict[str, Any]]:
    """Synthetic trials of one set (or all): canonical record plus the fields the analysis shows; with rule
    'usable' (the default, as fine-tuning) only the usable ones, with 'all' every one."""
    if rule not in ("usable", "all"):
        raise ValueError(f"rule must be 'usable' or 'all', not {rule!r}")
    sql = """SELECT id, source, record, intended_intervention, intended_label, intervention_match,
                    validation, validation_status, example_nct_ids
             FROM synthetic_trials"""
    where, args = ([USABLE_SQL] if rule == "usable" else []), []
    if source is not None:
        where.append("source = ?")
        args.append(source)
    if where:
        sql += " WHERE " + " AND ".join(where)
    cur = con.execute(sql + " ORDER BY id", args)
    cols = [d[0] for d in cur.description]
    out = []
    for row in cur.fetchall():
        d = dict(zip(cols, row))
        for k in ("record", "validation"):
            if isinstance(d[k], str):
                d[k] = json.loads(d[k])
        d["record"] = d["record"] or {}
        d["validation"] = d["validation"] or {}
        out.append(d)
    return out


def synthetic_by_ids(con: duckdb.DuckDBPyConnection, ids: list[str]) -> dict[str, dict[str, Any]]:
    """Synthetic trials by id (for the record a user selects on the map)."""
    if not ids:
        return {}
    cur = con.execute(
        """SELECT id, source, record, intended_intervention, intended_label, validation, validation_status,
                  example_nct_ids FROM synthetic_trials WHERE id IN (SELECT unnest(?))""", [list(ids)])
    cols = [d[0] for d in cur.description]
    out = {}
    for row in cur.fetchall():
        d = dict(zip(cols, row))
        for k in ("record", "validation"):
            if isinstance(d[k], str):
                d[k] = json.loads(d[k])
        out[d["id"]] = d
    return out


def trial_records(con: duckdb.DuckDBPyConnection, limit: int | None = None) -> list[dict[str, Any]]:
    """Canonical records of real trials (labelled or not), by NCT id; for benchmarks and maps of everything."""
    cols = ", ".join(TRIAL_FIELDS)
    sql = f"SELECT {cols} FROM trials ORDER BY nct_id" + (" LIMIT ?" if limit else "")
    cur = con.execute(sql, [int(limit)] if limit else [])
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def _label_sql() -> str:
    from core.store.trials import effective_label_sql

    return effective_label_sql()


def real_for_analysis(con: duckdb.DuckDBPyConnection, interventions: list[str] | None) -> list[dict[str, Any]]:
    """Labelled real trials: canonical record + `label` + `matched_intervention`.

    With `interventions`, only trials of those interventions (the paper compares a synthetic set
    with the real trials of the same drugs): a DrugBank match of any listed intervention, or the
    intervention name itself. With None, every labelled trial.
    """
    cols = ", ".join("t." + c for c in TRIAL_FIELDS)
    targets = sorted({i.strip().lower() for i in interventions or [] if i and i.strip()})
    matched = """(
        SELECT min(x.name) FROM (
            SELECT d.common_name AS name FROM intervention_matches m JOIN drugbank d USING (drugbank_id)
            WHERE m.nct_id = t.nct_id AND lower(d.common_name) IN (SELECT unnest($targets))
            UNION ALL
            SELECT i.name FROM (SELECT unnest(t.interventions) AS i)
            WHERE lower(i.name) IN (SELECT unnest($targets))
        ) x)"""
    if interventions is None:
        sql = f"""SELECT {cols}, l.label, (SELECT i.name FROM (SELECT unnest(t.interventions) AS i) LIMIT 1)
                  AS matched_intervention
                  FROM trials t JOIN ({_label_sql()}) l USING (nct_id) ORDER BY t.nct_id"""
        cur = con.execute(sql)
    else:
        if not targets:
            return []
        sql = f"""SELECT * FROM (
                    SELECT {cols}, l.label, {matched} AS matched_intervention
                    FROM trials t JOIN ({_label_sql()}) l USING (nct_id)
                  ) WHERE matched_intervention IS NOT NULL ORDER BY nct_id"""
        cur = con.execute(sql, {"targets": targets})
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]
