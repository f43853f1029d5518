"""Store area: fine-tuning runs (runs, per-seed results, ROC/PR curves) and the
queries the experiment datasets need (synthetic sets, intervention membership)."""
from __future__ import annotations

import json
from typing import Any

import duckdb

from core.store.synthetic import USABLE_SQL
from core.store.trials import effective_label_sql


METRICS = ["accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc"]
# ---- datasets --------------------------------------------------------------------------------

def synthetic_sources(con: duckdb.DuckDBPyConnection) -> list[tuple[str, int]]:
    """(source, usable trials) for every synthetic set in the store."""
    return [tuple(r) for r in con.execute(
        f"SELECT source, count(*) FROM synthetic_trials WHERE {USABLE_SQL} GROUP BY source ORDER BY source"
    ).fetchall()]


def synthetic_rows(con: duckdb.DuckDBPyConnection, source: str | None = None) -> list[dict[str, Any]]:
    """Usable synthetic trials (not invalid, not rejected, labelled), optionally of one source."""
    sql = (f"SELECT id, source, intended_intervention, intended_label, record FROM synthetic_trials "
           f"WHERE {USABLE_SQL}")
    params: list[Any] = []
    if source:
        sql += " AND source = ?"
        params.append(source)
    rows = con.execute(sql + " ORDER BY id", params).fetchall()
    return [{"id": r[0], "source": r[1], "intervention": r[2], "label": int(r[3]),
             "record": json.loads(r[4]) if isinstance(r[4], str) else r[4]} for r in rows]


def trial_intervention_keys(con: duckdb.DuckDBPyConnection) -> dict[str, set[str]]:
    """Every labelled trial's intervention names, lower-cased: raw names and matched DrugBank common
    names (so a synthetic trial's intended intervention matches whichever form it was given in)."""
    rows = con.execute(
        f"""
        WITH lt AS (SELECT nct_id FROM ({effective_label_sql()}))
        SELECT m.nct_id, lower(trim(m.intervention_name)) FROM intervention_matches m JOIN lt USING (nct_id)
        UNION
        SELECT m.nct_id, lower(trim(d.common_name))
        FROM intervention_matches m JOIN lt USING (nct_id) JOIN drugbank d USING (drugbank_id)
        UNION
        SELECT nct_id, lower(trim(i.name))
        FROM (SELECT t.nct_id, unnest(t.interventions) AS i FROM trials t JOIN lt USING (nct_id))
        """
    ).fetchall()
    out: dict[str, set[str]] = {}
    for nct, key in rows:
        if key:
            out.setdefault(nct, set()).add(key)
    return out


# ---- runs and results ------------------------------------------------------------------------

def save_run(con: duckdb.DuckDBPyConnection, run: dict[str, Any], per_seed: list[dict[str, Any]]) -> None:
    """Store one finished run with its per-seed metrics and curves in ONE transaction (replacing
    an earlier copy of the same run_id, so a retried write never duplicates)."""
    con.execute("BEGIN TRANSACTION")
    try:
        for table in ("experiment_curves", "experiment_results", "experiment_runs"):
            con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run["run_id"]])
        con.execute(
            """
            INSERT INTO experiment_runs (run_id, grid_id, experiment, train, synthetic_ratio, model_requested, model_used,
                model_note, seeds, epochs, max_length, scrub_mode, synthetic_source, n_train, n_val, n_test,
                device, samples_per_s, started_at, finished_at, duration_s, summary)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, to_timestamp(?), to_timestamp(?), ?, ?)
            """,
            [run["run_id"], run.get("grid_id"), run["experiment"], run["train"], run.get("synthetic_ratio"), run.get("model_requested"),
             run.get("model_used"), run.get("model_note"), run.get("seeds"), run.get("epochs"), run.get("max_length"),
             run.get("scrub_mode"), run.get("synthetic_source"), run.get("n_train"), run.get("n_val"),
             run.get("n_test"), run.get("device"), run.get("samples_per_s"), run.get("started_at"),
             run.get("finished_at"), run.get("duration_s"), json.dumps(run.get("summary") or {})],
        )
        for r in per_seed:
            con.execute(
                """INSERT INTO experiment_results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                [run["run_id"], r["seed"], *[r["metrics"][m] for m in METRICS], r.get("n_train"), r.get("n_val"),
                 r.get("n_test"), r.get("train_seconds"), r.get("samples_per_s")],
            )
            for kind in ("roc", "pr"):
                xs, ys = r["curves"][kind]
                con.execute("INSERT INTO experiment_curves VALUES (?, ?, ?, ?, ?)",
                            [run["run_id"], r["seed"], kind, list(map(float, xs)), list(map(float, ys))])
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise


def _dicts(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row)) for row in cur.fetchall()]


def list_runs(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Every stored run, newest first; `summary` parsed."""
    runs = _dicts(con.execute("SELECT * FROM experiment_runs ORDER BY finished_at DESC NULLS LAST, run_id"))
    for r in runs:
        r["summary"] = json.loads(r["summary"]) if isinstance(r["summary"], str) else (r["summary"] or {})
    return runs


def run_ids(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in con.execute("SELECT run_id FROM experiment_runs").fetchall()}


def seed_results(con: duckdb.DuckDBPyConnection, ids: list[str]) -> list[dict[str, Any]]:
    """Per-seed metrics of the given runs."""
    if not ids:
        return []
    return _dicts(con.execute(
        "SELECT * FROM experiment_results WHERE run_id IN (SELECT unnest(?)) ORDER BY run_id, seed", [list(ids)]))


def curves(con: duckdb.DuckDBPyConnection, ids: list[str]) -> list[dict[str, Any]]:
    """ROC and PR curve points of the given runs, per seed."""
    if not ids:
        return []
    return _dicts(con.execute(
        "SELECT * FROM experiment_curves WHERE run_id IN (SELECT unnest(?)) ORDER BY run_id, seed, kind", [list(ids)]))
