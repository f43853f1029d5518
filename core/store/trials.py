"""Real trials, their labels, the DrugBank vocabulary and intervention matches."""
from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa

from core import config
from core.record import TRIAL_FIELDS

# The canonical trial record. Both ClinicalTrials.gov formats (legacy XML, API v2 JSON)
# and TOP CSV rows map into these columns (see core.record.TRIAL_FIELDS).


# ---- queries shared by every area (retrieval, experiments, analysis, pages) ----


_RECORD_COLS = ", ".join(TRIAL_FIELDS)


def effective_label_sql(preference: list[str] | None = None) -> str:
    """SQL for (nct_id, label, label_source): one binary label per trial, by source preference."""
    pref = preference or config.label_preference()
    order = " ".join(f"WHEN '{s.replace(chr(39), '')}' THEN {i}" for i, s in enumerate(pref))
    return f"""
        SELECT nct_id, label, label_source FROM (
            SELECT nct_id, label, label_source,
                   row_number() OVER (PARTITION BY nct_id ORDER BY CASE label_source {order} ELSE 99 END) AS rn
            FROM labels WHERE label IS NOT NULL
        ) WHERE rn = 1
    """


def get_records(con: duckdb.DuckDBPyConnection, nct_ids: list[str]) -> dict[str, dict]:
    """Canonical records by NCT id (missing ids are absent from the result)."""
    if not nct_ids:
        return {}
    cur = con.execute(f"SELECT {_RECORD_COLS} FROM trials WHERE nct_id IN (SELECT unnest(?))", [list(nct_ids)])
    cols = [d[0] for d in cur.description]
    return {row[0]: dict(zip(cols, row)) for row in cur.fetchall()}


def labeled_trials(con: duckdb.DuckDBPyConnection, preference: list[str] | None = None) -> list[dict]:
    """Every trial with an effective binary label: dicts of the canonical record plus
    `label` and `label_source`."""
    cur = con.execute(
        f"""
        SELECT {', '.join('t.' + c for c in TRIAL_FIELDS)}, l.label, l.label_source
        FROM trials t JOIN ({effective_label_sql(preference)}) l USING (nct_id)
        ORDER BY t.nct_id
        """
    )
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row)) for row in cur.fetchall()]


# ---- what real trials look like (the yardsticks of core.pipeline's plausibility checks) ----


def outcome_time_frames(con: duckdb.DuckDBPyConnection, kind: str = "primary") -> list[str]:
    """The non-empty time frames of every real trial's primary (or secondary) outcomes, as stored."""
    column = {"primary": "primary_outcomes", "secondary": "secondary_outcomes"}[kind]
    rows = con.execute(f"SELECT unnest(list_transform({column}, lambda o: o.time_frame)) FROM trials").fetchall()
    return [r[0] for r in rows if r[0] and r[0].strip()]


def enrollment_quantiles(con: duckdb.DuckDBPyConnection, q: float
                         ) -> tuple[dict[str | None, tuple[int, float]], tuple[int, float]]:
    """The `q` quantile of real trials' enrollment (linear interpolation): ({phase: (trials with an
    enrollment, quantile)}, with None for trials without a phase; (the same over all trials))."""
    rows = con.execute("""
        SELECT grouping(phase) AS overall, phase, count(enrollment), quantile_cont(enrollment, ?)
        FROM trials WHERE enrollment IS NOT NULL GROUP BY GROUPING SETS ((phase), ())""", [q]).fetchall()
    by_phase = {phase: (n, float(value)) for overall, phase, n, value in rows if not overall}
    (everything,) = [(n, float(value)) for overall, _, n, value in rows if overall]
    return by_phase, everything


# ---- ingest: all SQL used by core.ingest (bulk, set-based) ----


_STR = pa.string()
_STR_LIST = pa.list_(_STR)
_ARROW_TYPES: dict[str, pa.DataType] = {
    "enrollment": pa.int32(),
    "has_results": pa.bool_(),
    "conditions": _STR_LIST, "keywords": _STR_LIST, "collaborators": _STR_LIST,
    "interventions": pa.list_(pa.struct([("type", _STR), ("name", _STR), ("description", _STR),
                                         ("other_names", _STR_LIST)])),
    "arm_groups": pa.list_(pa.struct([("label", _STR), ("type", _STR), ("description", _STR)])),
    "primary_outcomes": pa.list_(pa.struct([("measure", _STR), ("time_frame", _STR), ("description", _STR)])),
    "secondary_outcomes": pa.list_(pa.struct([("measure", _STR), ("time_frame", _STR), ("description", _STR)])),
    "design_info": pa.struct([("allocation", _STR), ("intervention_model", _STR), ("primary_purpose", _STR),
                              ("masking", _STR)]),
    "sources": _STR_LIST, "top_files": _STR_LIST,
}
STORED_FIELDS = TRIAL_FIELDS + ["sources", "source", "raw_format", "raw_document", "top_files"]
TRIALS_ARROW_SCHEMA = pa.schema([(c, _ARROW_TYPES.get(c, _STR)) for c in STORED_FIELDS])
_STORED_COLS = ", ".join(STORED_FIELDS)
FULL_SOURCES = ("ctgov_xml", "ctgov_json")


def records_table(records: list[dict]) -> pa.Table:
    """Canonical records (plus sources/raw fields) -> an Arrow table shaped like `trials`."""
    return pa.Table.from_pylist(records, schema=TRIALS_ARROW_SCHEMA)


def dedupe_last(table: pa.Table) -> pa.Table:
    """Keep the last row of each nct_id (a later file of the same command wins)."""
    ids = table.column("nct_id").to_pylist()
    if len(set(ids)) == len(ids):
        return table
    last = {nct: i for i, nct in enumerate(ids)}
    return table.take(sorted(last.values()))


def _upsert(con: duckdb.DuckDBPyConnection, table: pa.Table | str, merged_select: str) -> int:
    """Rows of `table` (an Arrow table, or the name of a staged table: see `staging`), as s, whose nct_id
    is already stored are merged with the stored row (t) by `merged_select` and replaced; new ones are
    inserted straight from the source."""
    staged = isinstance(table, str)
    if staged:
        source = table
    else:
        table = dedupe_last(table)
        source = "_arrow_stage"
        con.register(source, table)
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE _merged AS SELECT {merged_select} "
                    f"FROM {source} s JOIN trials t USING (nct_id)")
        con.execute("DELETE FROM trials WHERE nct_id IN (SELECT nct_id FROM _merged)")
        con.execute(f"INSERT INTO trials ({_STORED_COLS}) SELECT {_STORED_COLS} FROM _merged")
        con.execute(f"INSERT INTO trials ({_STORED_COLS}) SELECT {_STORED_COLS} FROM {source} "
                    "WHERE nct_id NOT IN (SELECT nct_id FROM _merged)")
        con.execute("DROP TABLE _merged")
    finally:
        if not staged:
            con.unregister(source)
    return con.execute(f"SELECT count(*) FROM {source}").fetchall()[0][0] if staged else table.num_rows


class Staging:
    """A scratch DuckDB file beside the store, attached as `stage`, that a bulk source streams into batch by
    batch (each batch its own commit there, so memory stays bounded); the store then takes all of it in
    one transaction with `upsert_full_records(con, stage.table)`. Removed on exit."""

    table = "stage.trials_stage"

    def __init__(self, con: duckdb.DuckDBPyConnection, folder: str | Path):
        import tempfile

        self.con = con
        self.dir = tempfile.mkdtemp(prefix=".ctgen-stage-", dir=str(folder))
        self.path = str(Path(self.dir) / "stage.duckdb")

    def __enter__(self) -> "Staging":
        self.con.execute("ATTACH ? AS stage", [self.path])
        # the stored columns with the trials table's types, in STORED_FIELDS order (as records_table)
        self.con.execute(f"CREATE TABLE {self.table} AS SELECT {_STORED_COLS} FROM trials LIMIT 0")
        return self

    def add(self, records: list[dict], seen_before: list[str]) -> None:
        """Append records; `seen_before`: their ids that an earlier batch staged (the later record wins)."""
        table = dedupe_last(records_table(records))
        if seen_before:
            self.con.execute(f"DELETE FROM {self.table} WHERE nct_id IN (SELECT unnest(?))", [seen_before])
        self.con.register("_arrow_batch", table)
        try:
            self.con.execute(f"INSERT INTO {self.table} SELECT * FROM _arrow_batch")
        finally:
            self.con.unregister("_arrow_batch")

    def __exit__(self, *exc) -> None:
        import shutil

        try:
            self.con.execute("DETACH stage")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def _union_sql(old: str, new: str) -> str:
    """Order-preserving union of two VARCHAR lists (old first)."""
    return (f"list_concat(coalesce({old}, []::VARCHAR[]), "
            f"list_filter(coalesce({new}, []::VARCHAR[]), lambda x: NOT list_contains(coalesce({old}, []::VARCHAR[]), x)))")


def upsert_full_records(con: duckdb.DuckDBPyConnection, records: list[dict] | pa.Table | str) -> int:
    """Insert or replace full ClinicalTrials.gov records (XML or API v2 JSON), by nct_id.

    A trial already known from TOP keeps its TOP provenance (sources, top_files) and, where the
    full record has no eligibility criteria, the TOP criteria.
    """
    table = records if isinstance(records, (pa.Table, str)) else records_table(records)
    if not isinstance(table, str) and table.num_rows == 0:
        return 0
    select = ", ".join(
        f"{_union_sql('t.sources', 's.sources')} AS sources" if c == "sources"
        else "t.top_files AS top_files" if c == "top_files"
        else "coalesce(s.eligibility_criteria, CASE WHEN list_contains(t.sources, 'top') "
             "THEN t.eligibility_criteria END) AS eligibility_criteria" if c == "eligibility_criteria"
        else f"s.{c}"
        for c in STORED_FIELDS
    )
    return _upsert(con, table, select)


def upsert_top_records(con: duckdb.DuckDBPyConnection, records: list[dict] | pa.Table) -> int:
    """Insert or update TOP rows. Where the trial has a full record, only provenance and (when the
    record has none) the eligibility criteria are taken from TOP; otherwise the TOP row replaces the
    previous TOP-only row, keeping the union of TOP files."""
    table = records if isinstance(records, (pa.Table, str)) else records_table(records)
    if not isinstance(table, str) and table.num_rows == 0:
        return 0
    full = "list_has_any(t.sources, ['ctgov_xml', 'ctgov_json'])"
    select = ", ".join(
        f"{_union_sql('t.sources', 's.sources')} AS sources" if c == "sources"
        else f"{_union_sql('t.top_files', 's.top_files')} AS top_files" if c == "top_files"
        else f"CASE WHEN {full} THEN coalesce(t.eligibility_criteria, s.eligibility_criteria) "
             "ELSE s.eligibility_criteria END AS eligibility_criteria" if c == "eligibility_criteria"
        else f"CASE WHEN {full} THEN t.{c} ELSE s.{c} END AS {c}" if c != "nct_id"
        else "s.nct_id"
        for c in STORED_FIELDS
    )
    return _upsert(con, table, select)


def upsert_labels(con: duckdb.DuckDBPyConnection, rows: list[tuple]) -> int:
    """rows: (nct_id, label_source, label or None, outcome_text). Replaces by (nct_id, label_source)."""
    if not rows:
        return 0
    table = pa.table({
        "nct_id": [r[0] for r in rows], "label_source": [r[1] for r in rows],
        "label": pa.array([r[2] for r in rows], pa.int32()), "outcome_text": [r[3] for r in rows],
    })
    con.register("_arrow_labels", table)
    try:
        con.execute("INSERT OR REPLACE INTO labels (nct_id, label_source, label, outcome_text) "
                    "SELECT nct_id, label_source, label, outcome_text FROM _arrow_labels")
    finally:
        con.unregister("_arrow_labels")
    return len(rows)


def name_norm_sql(expr: str) -> str:
    """SQL twin of core.ingest.matching.normalize_name: lowercase, every run of characters that are
    not letters or digits becomes one space, trimmed."""
    return f"trim(regexp_replace(lower({expr}), '[^\\pL\\pN]+', ' ', 'g'))"


def replace_drugbank(con: duckdb.DuckDBPyConnection, rows: list[dict]) -> int:
    """Replace the DrugBank vocabulary (it is published as one whole file) and its name index."""
    table = pa.table({
        "drugbank_id": [r["drugbank_id"] for r in rows],
        "common_name": [r["common_name"] for r in rows],
        "synonyms": pa.array([r["synonyms"] for r in rows], _STR_LIST),
        "cas": [r.get("cas") for r in rows],
        "unii": [r.get("unii") for r in rows],
    })
    con.execute("DELETE FROM drugbank_names")
    con.execute("DELETE FROM drugbank")
    con.register("_arrow_drugbank", table)
    try:
        con.execute("INSERT INTO drugbank SELECT drugbank_id, common_name, synonyms, cas, unii FROM _arrow_drugbank")
    finally:
        con.unregister("_arrow_drugbank")
    con.execute(
        f"""
        INSERT INTO drugbank_names
        SELECT DISTINCT name_norm, drugbank_id, kind FROM (
            SELECT {name_norm_sql('common_name')} AS name_norm, drugbank_id, 'common' AS kind FROM drugbank
            UNION ALL
            SELECT {name_norm_sql('syn')}, drugbank_id, 'synonym'
            FROM (SELECT drugbank_id, unnest(synonyms) AS syn FROM drugbank)
        ) WHERE name_norm <> ''
        """
    )
    return len(rows)


def recompute_matches(con: duckdb.DuckDBPyConnection, nct_ids: list[str] | None = None) -> int:
    """Match every Drug intervention of every trial (or only of `nct_ids`) to DrugBank (set-based). Rules
    in order of preference: common_exact (case-insensitive equal to the common name), common_normalized,
    synonym_normalized. Ties between drugs go to the lowest DrugBank id. Returns the number of matches."""
    only = "" if nct_ids is None else "AND nct_id IN (SELECT unnest($ids))"
    params = {} if nct_ids is None else {"ids": list(nct_ids)}
    con.execute(f"DELETE FROM intervention_matches WHERE TRUE {only}", params)
    con.execute(
        f"""
        INSERT INTO intervention_matches
        WITH iv AS (
            SELECT nct_id, pos - 1 AS position, iv.name AS intervention_name, iv.type AS intervention_type,
                   lower(trim(iv.name)) AS name_lower, {name_norm_sql('iv.name')} AS name_norm
            FROM (SELECT nct_id, unnest(interventions) AS iv, generate_subscripts(interventions, 1) AS pos
                  FROM trials WHERE len(interventions) > 0 {only})
            WHERE iv.type = 'Drug' AND iv.name IS NOT NULL
        ), cand AS (
            SELECT iv.*, d.drugbank_id, 'common_exact' AS rule, 1 AS pref
            FROM iv JOIN drugbank d ON lower(trim(d.common_name)) = iv.name_lower
            UNION ALL
            SELECT iv.*, n.drugbank_id, CASE n.kind WHEN 'common' THEN 'common_normalized'
                                                     ELSE 'synonym_normalized' END,
                   CASE n.kind WHEN 'common' THEN 2 ELSE 3 END
            FROM iv JOIN drugbank_names n ON n.name_norm = iv.name_norm
        )
        SELECT nct_id, position, intervention_name, intervention_type, drugbank_id, rule FROM (
            SELECT *, row_number() OVER (PARTITION BY nct_id, position ORDER BY pref, drugbank_id) AS rn FROM cand
        ) WHERE rn = 1
        """,
        params,
    )
    return con.execute("SELECT count(*) FROM intervention_matches").fetchone()[0]


def full_record_sql(alias: str = "") -> str:
    """SQL condition: the trial has a full ClinicalTrials.gov record (legacy XML or API v2 JSON), not only
    a TOP row. The one definition of "full record" (stats, Home, Trials, retrieval, fetch-ctgov)."""
    col = f"{alias}.sources" if alias else "sources"
    return f"list_has_any({col}, ['ctgov_xml', 'ctgov_json'])"


def lacking_full_record(con: duckdb.DuckDBPyConnection, nct_ids: list[str] | None = None,
                        labelled_only: bool = False) -> list[str]:
    """NCT ids (sorted) that have no full record yet: of `nct_ids` (ids not in the store count as
    lacking one), or of every stored trial; with `labelled_only`, only trials with a binary label."""
    labelled = "AND nct_id IN (SELECT nct_id FROM labels WHERE label IS NOT NULL)" if labelled_only else ""
    if nct_ids is None:
        rows = con.execute(f"SELECT nct_id FROM trials WHERE NOT {full_record_sql()} {labelled} "
                           "ORDER BY nct_id").fetchall()
    else:
        rows = con.execute(
            f"""SELECT nct_id FROM (SELECT DISTINCT unnest(?) AS nct_id)
                WHERE nct_id NOT IN (SELECT nct_id FROM trials WHERE {full_record_sql()}) {labelled}
                ORDER BY nct_id""", [list(nct_ids)]).fetchall()
    return [r[0] for r in rows]


def add_ingest_errors(con: duckdb.DuckDBPyConnection, command_id: str, errors: list[tuple]) -> None:
    """errors: (file, member, message)."""
    if not errors:
        return
    start = con.execute("SELECT coalesce(max(id), 0) FROM ingest_errors").fetchone()[0]
    con.executemany(
        "INSERT INTO ingest_errors (id, command_id, file, member, error) VALUES (?, ?, ?, ?, ?)",
        [(start + i + 1, command_id, f, m, e) for i, (f, m, e) in enumerate(errors)],
    )


def log_ingest(con: duckdb.DuckDBPyConnection, command_id: str, command: str, started, finished,
               summary_json: str) -> None:
    con.execute("INSERT INTO ingest_log VALUES (?, ?, ?, ?, ?)", [command_id, command, started, finished, summary_json])


def store_stats(con: duckdb.DuckDBPyConnection, preference: list[str] | None = None) -> dict:
    """Counts of what is in the store (the `stats` command and the home page)."""
    one = lambda sql: con.execute(sql).fetchone()  # noqa: E731
    out: dict = {}
    out["trials"] = one("SELECT count(*) FROM trials")[0]
    eff = effective_label_sql(preference)
    lab = one(f"SELECT count(*), count(*) FILTER (WHERE label = 1), count(*) FILTER (WHERE label = 0) "
              f"FROM ({eff}) l JOIN trials USING (nct_id)")
    out["labeled"], out["positive"], out["negative"] = lab
    # labelled trials whose record is a full ClinicalTrials.gov one (not only a TOP row)
    out["labelled_full_records"] = one(f"SELECT count(*) FROM ({eff}) l JOIN trials t USING (nct_id) "
                                       f"WHERE {full_record_sql('t')}")[0]
    out["drugbank_drugs"] = one("SELECT count(*) FROM drugbank")[0]
    from core.store.retrieval import rule_counts   # the one eligibility rule

    any_drug, first = rule_counts(con, "drugbank", preference=preference), rule_counts(con, "first-drug", preference=preference)
    out["eligible_interventions"], out["eligible_trials"] = any_drug["interventions"], any_drug["trials"]
    out["eligible_interventions_first_drug"], out["eligible_first_drug_trials"] = first["interventions"], first["trials"]
    out["synthetic"] = one("SELECT count(*) FROM synthetic_trials")[0]
    out["generation_failures"] = one("SELECT count(*) FROM generation_failures")[0]
    src = one(
        """SELECT count(*) FILTER (WHERE list_contains(sources, 'ctgov_xml')),
                  count(*) FILTER (WHERE list_contains(sources, 'ctgov_json')),
                  count(*) FILTER (WHERE list_contains(sources, 'top')),
                  count(*) FILTER (WHERE list_contains(sources, 'top')
                                   AND list_has_any(sources, ['ctgov_xml', 'ctgov_json']))
           FROM trials"""
    )
    out["sources"] = {"ctgov_xml": src[0], "ctgov_json": src[1], "top": src[2], "top_and_full_record": src[3]}
    out["labels_by_source"] = {
        s: {"rows": n, "binary": b, "binary_in_store": bs}
        for s, n, b, bs in con.execute(
            """SELECT label_source, count(*), count(label),
                      count(label) FILTER (WHERE nct_id IN (SELECT nct_id FROM trials))
               FROM labels GROUP BY label_source ORDER BY label_source"""
        ).fetchall()
    }
    out["label_conflicts"] = one(
        """SELECT count(*) FROM labels a JOIN labels b USING (nct_id)
           WHERE a.label_source < b.label_source AND a.label <> b.label
             AND nct_id IN (SELECT nct_id FROM trials)"""
    )[0]
    m = one("SELECT count(*), count(DISTINCT nct_id), count(DISTINCT drugbank_id) FROM intervention_matches")
    out["intervention_matches"] = {"interventions": m[0], "trials": m[1], "drugs": m[2],
                                   "by_rule": dict(con.execute(
                                       "SELECT rule, count(*) FROM intervention_matches GROUP BY rule ORDER BY rule"
                                   ).fetchall())}
    out["ingest_errors"] = one("SELECT count(*) FROM ingest_errors")[0]
    return out


def label_conflicts(con: duckdb.DuckDBPyConnection, nct_id: str | None = None) -> list[dict]:
    """Trials whose label sources disagree: nct_id and {source: (label, outcome_text)}."""
    rows = con.execute(
        """SELECT nct_id, list(struct_pack(label_source, label, outcome_text) ORDER BY label_source)
           FROM labels WHERE nct_id IN (
               SELECT a.nct_id FROM labels a JOIN labels b USING (nct_id)
               WHERE a.label_source < b.label_source AND a.label <> b.label)
             AND (? IS NULL OR nct_id = ?)
           GROUP BY nct_id ORDER BY nct_id""", [nct_id, nct_id]).fetchall()
    return [{"nct_id": n, "labels": {x["label_source"]: (x["label"], x["outcome_text"]) for x in ls}} for n, ls in rows]
