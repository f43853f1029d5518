"""Read-only queries behind the home page and the Trials page.

Everything here takes an open connection and returns plain Python values or pandas frames, so the
pages can cache the results. Tables are filtered and paged in DuckDB (LIMIT/OFFSET with the total
from a window count), never by loading all rows into the app.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb
import pandas as pd

from core.store import retrieval
from core.store.trials import effective_label_sql, full_record_sql, get_records, store_stats

LABEL_CHOICES = ("success", "failure", "unlabelled", "conflicting")
RECORD_CHOICES = ("full record", "TOP row only")   # a full ClinicalTrials.gov record, or only a TOP row
NO_PHASE = "(not given)"


def _eff(preference: list[str] | None) -> str:
    return effective_label_sql(preference)


def _scalar(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> Any:
    return con.execute(sql, params or []).fetchone()[0]


def _df(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> pd.DataFrame:
    return con.execute(sql, params or []).df()


# ---------------------------------------------------------------- the home page's overview

def trial_count(con: duckdb.DuckDBPyConnection) -> int:
    return int(_scalar(con, "SELECT count(*) FROM trials"))


def overview(con: duckdb.DuckDBPyConnection, preference: list[str] | None = None) -> dict[str, int]:
    """Headline counts: the `stats` command's figures (one definition, core.store.trials.store_stats)
    plus what the home page shows about conflicts and DrugBank matches."""
    stats = store_stats(con, preference)
    m = stats["intervention_matches"]
    out = {
        "trials": stats["trials"], "labeled": stats["labeled"], "positive": stats["positive"],
        "negative": stats["negative"], "conflicts": stats["label_conflicts"],
        "drugbank_drugs": stats["drugbank_drugs"], "eligible_interventions": stats["eligible_interventions"],
        "matched_trials": m["trials"], "matched_interventions": m["interventions"], "matched_drugs": m["drugs"],
        "synthetic": stats["synthetic"], "eligible_trials": stats["eligible_trials"],
        "labelled_full_records": stats["labelled_full_records"],
    }
    out = {k: int(v or 0) for k, v in out.items()}
    out["unlabeled"] = out["trials"] - out["labeled"]
    out["labelled_top_only"] = out["labeled"] - out["labelled_full_records"]
    return out


def phase_counts(con: duckdb.DuckDBPyConnection, preference: list[str] | None = None) -> pd.DataFrame:
    """Trials per phase, split by effective label (success / failure / unlabelled)."""
    return _df(
        con,
        f"""
        WITH eff AS ({_eff(preference)})
        SELECT coalesce(nullif(trim(t.phase), ''), '{NO_PHASE}') AS phase,
               CASE e.label WHEN 1 THEN 'success' WHEN 0 THEN 'failure' ELSE 'unlabelled' END AS label,
               count(*) AS trials
        FROM trials t LEFT JOIN eff e USING (nct_id)
        GROUP BY ALL ORDER BY phase, label
        """,
    )


def top_conditions(con: duckdb.DuckDBPyConnection, n: int = 15) -> pd.DataFrame:
    """Most frequent conditions (case-insensitive; shown in their most common spelling)."""
    return _df(
        con,
        """
        SELECT mode(c) AS condition, count(DISTINCT nct_id) AS trials
        FROM (SELECT nct_id, trim(unnest(conditions)) AS c FROM trials)
        WHERE c <> ''
        GROUP BY lower(c) ORDER BY trials DESC, condition LIMIT ?
        """,
        [n],
    )


def top_interventions(con: duckdb.DuckDBPyConnection, n: int = 15) -> pd.DataFrame:
    """Most frequent intervention names, with the DrugBank drug they matched where they did."""
    return _df(
        con,
        """
        WITH iv AS (
            SELECT t.nct_id, trim(u.iv.name) AS name, u.pos - 1 AS position
            FROM trials t, unnest(t.interventions) WITH ORDINALITY AS u(iv, pos)
        )
        SELECT mode(iv.name) AS intervention, count(DISTINCT iv.nct_id) AS trials,
               mode(d.common_name) AS drugbank
        FROM iv
        LEFT JOIN intervention_matches m ON m.nct_id = iv.nct_id AND m.position = iv.position
        LEFT JOIN drugbank d ON d.drugbank_id = m.drugbank_id
        WHERE iv.name <> ''
        GROUP BY lower(iv.name) ORDER BY trials DESC, intervention LIMIT ?
        """,
        [n],
    )


def eligible_interventions(
    con: duckdb.DuckDBPyConnection, preference: list[str] | None = None
) -> pd.DataFrame:
    """The interventions generation can use (the one rule, core.store.retrieval.eligible_interventions), as
    the Home page's table: drugbank_id, drug, success, failure."""
    rows = retrieval.eligible_interventions(con, "drugbank", preference=preference)
    return pd.DataFrame(rows, columns=["drugbank_id", "name", "n_success", "n_failure"]).rename(
        columns={"name": "drug", "n_success": "success", "n_failure": "failure"})


def match_rules(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """How interventions matched DrugBank: matches per rule."""
    return _df(
        con,
        """
        SELECT rule, count(*) AS interventions, count(DISTINCT nct_id) AS trials
        FROM intervention_matches JOIN trials USING (nct_id)
        GROUP BY rule ORDER BY interventions DESC
        """,
    )


def source_counts(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Trials per contributing source (a trial in two sources counts in both)."""
    return _df(
        con,
        """
        SELECT s AS source, count(*) AS trials
        FROM (SELECT unnest(sources) AS s FROM trials)
        GROUP BY s ORDER BY trials DESC
        """,
    )


def label_source_counts(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Labels per label source, for trials in the store."""
    return _df(
        con,
        """
        SELECT label_source,
               count(*) FILTER (WHERE label = 1) AS success,
               count(*) FILTER (WHERE label = 0) AS failure,
               count(*) FILTER (WHERE label IS NULL) AS not_usable
        FROM labels JOIN trials USING (nct_id)
        GROUP BY label_source ORDER BY label_source
        """,
    )


def ingest_history(con: duckdb.DuckDBPyConnection, n: int = 10) -> pd.DataFrame:
    """The most recent imports, with the number of records skipped as broken."""
    return _df(
        con,
        """
        SELECT l.command, l.started_at, l.finished_at,
               (SELECT count(*) FROM ingest_errors e WHERE e.command_id = l.command_id) AS skipped
        FROM ingest_log l ORDER BY l.started_at DESC NULLS LAST LIMIT ?
        """,
        [n],
    )


# ---------------------------------------------------------------- the Trials page

def filter_options(con: duckdb.DuckDBPyConnection, n_names: int = 500) -> dict[str, list[str]]:
    """Values for the filter widgets: every phase, status and source; the most frequent
    intervention and condition names (any other text can still be typed)."""
    phases = [r[0] for r in con.execute(
        f"SELECT DISTINCT coalesce(nullif(trim(phase), ''), '{NO_PHASE}') AS p FROM trials ORDER BY p").fetchall()]
    statuses = [r[0] for r in con.execute(
        "SELECT DISTINCT overall_status FROM trials WHERE overall_status IS NOT NULL ORDER BY 1").fetchall()]
    sources = [r[0] for r in con.execute(
        "SELECT DISTINCT unnest(sources) FROM trials ORDER BY 1").fetchall()]
    interventions = [r[0] for r in con.execute(
        """
        SELECT mode(n) FROM (SELECT trim(unnest(interventions).name) AS n FROM trials)
        WHERE n <> '' GROUP BY lower(n) ORDER BY count(*) DESC, 1 LIMIT ?
        """, [n_names]).fetchall()]
    conditions = [r[0] for r in con.execute(
        """
        SELECT mode(c) FROM (SELECT trim(unnest(conditions)) AS c FROM trials)
        WHERE c <> '' GROUP BY lower(c) ORDER BY count(*) DESC, 1 LIMIT ?
        """, [n_names]).fetchall()]
    return {"phases": phases, "statuses": statuses, "sources": sources,
            "interventions": sorted(interventions, key=str.lower),
            "conditions": sorted(conditions, key=str.lower)}


@dataclass(frozen=True)
class TrialFilter:
    """What the Trials page filters on. Empty fields do not filter.

    `intervention` and `condition` match case-insensitively as substrings (of any intervention
    name or its DrugBank drug's common name; of any condition). `text` searches title, official
    title, summary and eligibility criteria. `labels` are effective labels (LABEL_CHOICES).
    """

    intervention: str = ""
    condition: str = ""
    phases: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    text: str = ""
    records: tuple[str, ...] = ()   # RECORD_CHOICES


def _like(text: str) -> str:
    """An ILIKE pattern that matches `text` literally anywhere."""
    escaped = text.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _where(f: TrialFilter) -> tuple[str, list]:
    clauses: list[str] = []
    params: list = []
    if f.intervention.strip():
        clauses.append(
            """(len(list_filter(t.interventions, lambda x: x.name ILIKE ? ESCAPE '\\')) > 0
                OR EXISTS (SELECT 1 FROM intervention_matches im JOIN drugbank d USING (drugbank_id)
                           WHERE im.nct_id = t.nct_id AND d.common_name ILIKE ? ESCAPE '\\'))"""
        )
        params += [_like(f.intervention)] * 2
    if f.condition.strip():
        clauses.append("len(list_filter(t.conditions, lambda c: c ILIKE ? ESCAPE '\\')) > 0")
        params.append(_like(f.condition))
    if f.text.strip():
        cols = ["t.brief_title", "t.official_title", "t.brief_summary", "t.eligibility_criteria"]
        clauses.append("(" + " OR ".join(f"{c} ILIKE ? ESCAPE '\\'" for c in cols) + ")")
        params += [_like(f.text)] * len(cols)
    if f.phases:
        phase_sql = "list_contains(?, t.phase)"
        if NO_PHASE in f.phases:
            phase_sql = f"({phase_sql} OR nullif(trim(t.phase), '') IS NULL)"
        clauses.append(phase_sql)
        params.append([p for p in f.phases if p != NO_PHASE])
    if f.statuses:
        clauses.append("list_contains(?, t.overall_status)")
        params.append(list(f.statuses))
    if f.sources:
        clauses.append("list_has_any(t.sources, ?)")
        params.append(list(f.sources))
    if f.records:
        unknown = set(f.records) - set(RECORD_CHOICES)
        if unknown:
            raise ValueError(f"unknown record filter {sorted(unknown)} (choose from {', '.join(RECORD_CHOICES)})")
        if len(set(f.records)) == 1:
            clauses.append(full_record_sql("t") if f.records[0] == RECORD_CHOICES[0] else f"NOT {full_record_sql('t')}")
    if f.labels:
        parts = []
        for lab in f.labels:
            if lab == "success":
                parts.append("e.label = 1")
            elif lab == "failure":
                parts.append("e.label = 0")
            elif lab == "unlabelled":
                parts.append("e.label IS NULL")
            elif lab == "conflicting":
                parts.append("c.nct_id IS NOT NULL")
            else:
                raise ValueError(f"unknown label filter {lab!r} (choose from {', '.join(LABEL_CHOICES)})")
        clauses.append("(" + " OR ".join(parts) + ")")
    return (" AND ".join(clauses) or "TRUE"), params


def search_trials(
    con: duckdb.DuckDBPyConnection,
    f: TrialFilter,
    limit: int = 50,
    offset: int = 0,
    preference: list[str] | None = None,
) -> tuple[pd.DataFrame, int]:
    """One page of trials matching `f` (ordered by NCT id) and the total number that match."""
    where, params = _where(f)
    base = f"""
        WITH eff AS ({_eff(preference)}),
        conf AS (SELECT nct_id FROM labels WHERE label IS NOT NULL GROUP BY nct_id HAVING count(DISTINCT label) > 1)
        SELECT {{cols}}
        FROM trials t LEFT JOIN eff e USING (nct_id) LEFT JOIN conf c ON c.nct_id = t.nct_id
        WHERE {where}
    """
    cols = f"""
        t.nct_id, t.brief_title AS title,
        CASE e.label WHEN 1 THEN 'success' WHEN 0 THEN 'failure' ELSE 'unlabelled' END
            || CASE WHEN e.label IS NOT NULL THEN ' (' || e.label_source || ')' ELSE '' END
            || CASE WHEN c.nct_id IS NOT NULL THEN ' ⚠ conflict' ELSE '' END AS label,
        coalesce(t.phase, '') AS phase, coalesce(t.overall_status, '') AS status,
        array_to_string(t.conditions, '; ') AS conditions,
        array_to_string(list_transform(t.interventions, lambda x: x.name), '; ') AS interventions,
        array_to_string(t.sources, ', ') AS sources,
        CASE WHEN {full_record_sql('t')} THEN 'full record' ELSE 'TOP row only' END AS record,
        count(*) OVER () AS _total
    """
    # The window count gives the total in the same pass as the page.
    df = _df(con, base.format(cols=cols) + " ORDER BY t.nct_id LIMIT ? OFFSET ?", params + [limit, offset])
    if len(df):
        total = int(df["_total"].iloc[0])
    else:
        total = int(_scalar(con, base.format(cols="count(*)"), params))
    return df.drop(columns="_total"), total


def get_trial(
    con: duckdb.DuckDBPyConnection, nct_id: str, preference: list[str] | None = None
) -> dict[str, Any] | None:
    """Everything the record view shows for one trial, or None when it is not in the store.

    Keys: `record` (the canonical record), `sources`, `source`, `raw_format`, `raw_document`,
    `top_files`, `labels` (one dict per label source), `effective` (label and its source, or
    None), `conflict` (True when sources give different binary labels), `matches` (DrugBank).
    """
    nct_id = nct_id.strip().upper()
    rec = get_records(con, [nct_id]).get(nct_id)
    if rec is None:
        return None
    sources, source, raw_format, raw_document, top_files = con.execute(
        "SELECT sources, source, raw_format, raw_document, top_files FROM trials WHERE nct_id = ?", [nct_id]
    ).fetchone()
    cur = con.execute(
        "SELECT label_source, label, outcome_text FROM labels WHERE nct_id = ? ORDER BY label_source", [nct_id]
    )
    labels = [dict(zip(["label_source", "label", "outcome_text"], r)) for r in cur.fetchall()]
    eff = con.execute(
        f"SELECT label, label_source FROM ({_eff(preference)}) WHERE nct_id = ?", [nct_id]
    ).fetchone()
    cur = con.execute(
        """
        SELECT m.position, m.intervention_name, m.intervention_type, m.drugbank_id, d.common_name, m.rule
        FROM intervention_matches m LEFT JOIN drugbank d USING (drugbank_id)
        WHERE m.nct_id = ? ORDER BY m.position
        """,
        [nct_id],
    )
    matches = [dict(zip(["position", "intervention", "type", "drugbank_id", "drug", "rule"], r))
               for r in cur.fetchall()]
    binary = {lab["label"] for lab in labels if lab["label"] is not None}
    return {
        "record": rec,
        "sources": list(sources or []),
        "source": source,
        "raw_format": raw_format,
        "raw_document": raw_document,
        "top_files": list(top_files or []),
        "labels": labels,
        "effective": {"label": eff[0], "label_source": eff[1]} if eff else None,
        "conflict": len(binary) > 1,
        "matches": matches,
    }
