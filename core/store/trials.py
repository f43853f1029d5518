"""Real trials, their labels, the DrugBank vocabulary and intervention matches."""
from __future__ import annotations

import duckdb

# The canonical trial record. Both ClinicalTrials.gov formats (legacy XML, API v2 JSON)
# and TOP CSV rows map into these columns (see core.record.TRIAL_FIELDS).
TRIALS_DDL = """
CREATE TABLE trials (
    nct_id VARCHAR PRIMARY KEY,
    brief_title VARCHAR,
    official_title VARCHAR,
    acronym VARCHAR,
    brief_summary VARCHAR,
    detailed_description VARCHAR,
    phase VARCHAR,
    study_type VARCHAR,
    overall_status VARCHAR,
    why_stopped VARCHAR,
    start_date VARCHAR,
    start_date_type VARCHAR,
    completion_date VARCHAR,
    completion_date_type VARCHAR,
    primary_completion_date VARCHAR,
    primary_completion_date_type VARCHAR,
    enrollment INTEGER,
    enrollment_type VARCHAR,
    conditions VARCHAR[],
    keywords VARCHAR[],
    interventions STRUCT(type VARCHAR, name VARCHAR, description VARCHAR, other_names VARCHAR[])[],
    arm_groups STRUCT(label VARCHAR, type VARCHAR, description VARCHAR)[],
    primary_outcomes STRUCT(measure VARCHAR, time_frame VARCHAR, description VARCHAR)[],
    secondary_outcomes STRUCT(measure VARCHAR, time_frame VARCHAR, description VARCHAR)[],
    eligibility_criteria VARCHAR,
    gender VARCHAR,
    minimum_age VARCHAR,
    maximum_age VARCHAR,
    healthy_volunteers VARCHAR,
    lead_sponsor VARCHAR,
    sponsor_class VARCHAR,
    collaborators VARCHAR[],
    design_info STRUCT(allocation VARCHAR, intervention_model VARCHAR, primary_purpose VARCHAR, masking VARCHAR),
    has_results BOOLEAN,
    sources VARCHAR[],          -- every source that contributed: 'ctgov_xml', 'ctgov_json', 'top'
    source VARCHAR,             -- the source of the structured fields (a full record beats a TOP row)
    raw_format VARCHAR,         -- 'xml', 'json' or 'csv'
    raw_document VARCHAR,       -- the source document as imported
    top_files VARCHAR[],        -- TOP files that list the trial
    updated_at TIMESTAMP DEFAULT current_timestamp
)
"""


def _m001_trials(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(TRIALS_DDL)
    # One row per (trial, label source): TOP and IQVIA labels are both kept.
    con.execute(
        """
        CREATE TABLE labels (
            nct_id VARCHAR NOT NULL,
            label_source VARCHAR NOT NULL,   -- 'iqvia' or 'top'
            label INTEGER,                   -- 1 success, 0 failure, NULL not usable
            outcome_text VARCHAR,            -- the original annotation (IQVIA trialOutcome, TOP status/why_stop)
            PRIMARY KEY (nct_id, label_source)
        )
        """
    )
    con.execute(
        """
        CREATE TABLE drugbank (
            drugbank_id VARCHAR PRIMARY KEY,
            common_name VARCHAR NOT NULL,
            synonyms VARCHAR[],
            cas VARCHAR,
            unii VARCHAR
        )
        """
    )
    # name_norm -> drug; one row per normalized name (common name or synonym).
    con.execute(
        """
        CREATE TABLE drugbank_names (
            name_norm VARCHAR NOT NULL,
            drugbank_id VARCHAR NOT NULL,
            kind VARCHAR NOT NULL            -- 'common' or 'synonym'
        )
        """
    )
    # Which DrugBank drug each intervention of a trial matched, and by which rule.
    con.execute(
        """
        CREATE TABLE intervention_matches (
            nct_id VARCHAR NOT NULL,
            position INTEGER NOT NULL,       -- index in trials.interventions (0 = first)
            intervention_name VARCHAR,
            intervention_type VARCHAR,
            drugbank_id VARCHAR NOT NULL,
            rule VARCHAR NOT NULL,           -- 'common_exact', 'common_normalized', 'synonym_normalized'
            PRIMARY KEY (nct_id, position)
        )
        """
    )
    con.execute(
        """
        CREATE TABLE ingest_errors (
            id BIGINT,
            command_id VARCHAR,
            file VARCHAR,
            member VARCHAR,
            error VARCHAR,
            created_at TIMESTAMP DEFAULT current_timestamp
        )
        """
    )
    con.execute(
        """
        CREATE TABLE ingest_log (
            command_id VARCHAR PRIMARY KEY,
            command VARCHAR,
            started_at TIMESTAMP,
            finished_at TIMESTAMP,
            summary JSON
        )
        """
    )


MIGRATIONS = [("001_trials_labels_drugbank", _m001_trials)]


# ---- queries shared by every area (retrieval, experiments, analysis, pages) ----

from core import config  # noqa: E402
from core.record import TRIAL_FIELDS  # noqa: E402

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
