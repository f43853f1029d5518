"""Ordered, named schema migrations; each applied once and recorded in `_migrations`.

Every migration of the store is here, as a `@migration("NNN_name")` function, in number order; the
number decides the order they are applied in. Append only: never edit, rename or renumber a migration
that has shipped (its name is what `_migrations` records). Number ranges by area: 001-009 trials,
labels and DrugBank; 010-019 synthetic trials and reviews; 020-029 the LLM call log; 030-039 jobs;
040-049 fine-tuning runs; 050-059 embeddings and analysis results.
"""
from __future__ import annotations

import re
from typing import Callable

import duckdb

Migration = tuple[str, Callable[[duckdb.DuckDBPyConnection], None]]


class SchemaError(RuntimeError):
    """The store's schema cannot be used by this program as it is."""


_REGISTRY: dict[str, Callable[[duckdb.DuckDBPyConnection], None]] = {}


def migration(name: str) -> Callable:
    """Register a migration under its permanent name ("NNN_what"); the number orders them."""
    if not re.fullmatch(r"\d{3}_[a-z0-9_]+", name):
        raise ValueError(f"migration name {name!r} must look like 'NNN_what'")

    def register(fn: Callable[[duckdb.DuckDBPyConnection], None]) -> Callable:
        if name in _REGISTRY or any(n[:3] == name[:3] for n in _REGISTRY):
            raise ValueError(f"migration number {name[:3]} is used twice")
        _REGISTRY[name] = fn
        return fn

    return register


def all_migrations() -> list[Migration]:
    """Every migration, in the order applied (by number)."""
    return sorted(_REGISTRY.items())


def _ensure_table(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        "CREATE TABLE IF NOT EXISTS _migrations (name VARCHAR PRIMARY KEY, applied_at TIMESTAMP DEFAULT current_timestamp)"
    )


def applied(con: duckdb.DuckDBPyConnection) -> list[str]:
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = '_migrations'"
    ).fetchone()[0]
    if not exists:
        return []
    return [r[0] for r in con.execute("SELECT name FROM _migrations ORDER BY applied_at, name").fetchall()]


def pending(con: duckdb.DuckDBPyConnection) -> list[str]:
    done = set(applied(con))
    known = {name for name, _ in all_migrations()}
    unknown = done - known
    if unknown:
        raise SchemaError(
            f"store was written by a newer version of this program (unknown migrations: {', '.join(sorted(unknown))}); "
            "upgrade the program or use another --db"
        )
    return [name for name, _ in all_migrations() if name not in done]


def migrate(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Apply every pending migration, each in its own transaction. Returns their names."""
    _ensure_table(con)
    todo = set(pending(con))
    ran = []
    for name, fn in all_migrations():
        if name not in todo:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            fn(con)
            con.execute("INSERT INTO _migrations (name) VALUES (?)", [name])
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        ran.append(name)
    return ran


# ----------------------------------------------------------------------------------------------
# The migrations, in number order

# Frozen with migration 001: later columns come as new migrations, never as edits here.
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


@migration("001_trials_labels_drugbank")
def m001_trials_labels_drugbank(con: duckdb.DuckDBPyConnection) -> None:
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


@migration("010_synthetic_trials")
def m010_synthetic_trials(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE TABLE synthetic_trials (
            id VARCHAR PRIMARY KEY,          -- run_id + ':' + item index, or source + ':' + report index
            run_id VARCHAR,                  -- generation run (NULL for imported sets)
            source VARCHAR NOT NULL,         -- 'run:<run_id>' for generated, the --source name for imported
            item_index INTEGER,
            intended_intervention VARCHAR,
            intended_label INTEGER,          -- 1 success, 0 failure
            generated_intervention VARCHAR,
            intervention_match BOOLEAN,
            record JSON,                     -- canonical record (same keys as the trials table)
            raw_text VARCHAR,                -- the model's output as returned
            reasons VARCHAR[],
            example_nct_ids VARCHAR[],
            validation JSON,                 -- {check: {ok: bool, detail: ...}}
            validation_status VARCHAR,       -- 'ok', 'warning' or 'invalid'
            review_status VARCHAR,           -- NULL, 'accepted', 'rejected', 'flagged'
            review_note VARCHAR,
            created_at TIMESTAMP DEFAULT current_timestamp
        )
        """
    )


@migration("011_generation_failures")
def m011_generation_failures(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE TABLE generation_failures (
            id VARCHAR PRIMARY KEY,          -- run_id + ':' + item index
            run_id VARCHAR,
            item_index INTEGER,
            intended_intervention VARCHAR,
            intended_label INTEGER,
            stage VARCHAR,                   -- 'retrieval', 'reasoning', 'generation', 'parse', ...
            reason VARCHAR,
            raw_text VARCHAR,
            created_at TIMESTAMP DEFAULT current_timestamp
        )
        """
    )


@migration("012_synthetic_provenance")
def m012_synthetic_provenance(con: duckdb.DuckDBPyConnection) -> None:
    # What produced each trial: the prompts' hash (the prompts themselves are in generation_runs),
    # the drug, how the reply was read, the backend/model, and the retrieval (examples, token counts,
    # truncation) plus attempts/tokens/cost in `meta`.
    for col, typ in [("drugbank_id", "VARCHAR"), ("prompt_hash", "VARCHAR"), ("parse_format", "VARCHAR"),
                     ("backend", "VARCHAR"), ("model", "VARCHAR"), ("meta", "JSON")]:
        con.execute(f"ALTER TABLE synthetic_trials ADD COLUMN {col} {typ}")
    for col, typ in [("attempts", "INTEGER"), ("prompt_hash", "VARCHAR"), ("example_nct_ids", "VARCHAR[]"),
                     ("reasons", "VARCHAR[]"), ("error_kind", "VARCHAR"), ("updated_at", "TIMESTAMP")]:
        con.execute(f"ALTER TABLE generation_failures ADD COLUMN {col} {typ}")


@migration("013_generation_runs")
def m013_generation_runs(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE TABLE generation_runs (
            run_id VARCHAR PRIMARY KEY,
            n INTEGER NOT NULL,              -- items asked for (item indices 0..n-1)
            status VARCHAR NOT NULL,         -- 'running', 'done' (every item has a trial or a failure), 'interrupted'
            params JSON,                     -- intervention, label, seed, backend, base_url, model, ... (never a key)
            prompts JSON,                    -- the prompts used (paper's, with this run's overrides)
            prompt_hash VARCHAR,
            done INTEGER DEFAULT 0,          -- items with a synthetic trial
            failed INTEGER DEFAULT 0,        -- items whose last attempt failed
            cost_usd DOUBLE DEFAULT 0,
            pid INTEGER,
            error VARCHAR,
            created_at TIMESTAMP DEFAULT current_timestamp,
            updated_at TIMESTAMP DEFAULT current_timestamp,
            finished_at TIMESTAMP
        )
        """
    )


@migration("014_review_history")
def _review_history(con: duckdb.DuckDBPyConnection) -> None:
    # Every change of a synthetic trial's review decision: who (OS user), when, old and new values;
    # so an overwritten decision is never lost.
    con.execute("CREATE SEQUENCE review_history_seq")
    con.execute(
        """
        CREATE TABLE review_history (
            seq BIGINT DEFAULT nextval('review_history_seq') PRIMARY KEY,
            synthetic_id VARCHAR NOT NULL,
            changed_at TIMESTAMP DEFAULT current_timestamp,
            reviewer VARCHAR,
            old_status VARCHAR, new_status VARCHAR,
            old_note VARCHAR, new_note VARCHAR
        )
        """
    )


@migration("020_llm_calls")
def m020_llm_calls(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE SEQUENCE llm_calls_id START 1")
    con.execute(
        """
        CREATE TABLE llm_calls (
            id BIGINT PRIMARY KEY DEFAULT nextval('llm_calls_id'),
            created_at TIMESTAMP,        -- UTC
            backend VARCHAR,
            model VARCHAR,
            purpose VARCHAR,             -- 'reasoning', 'generation', ...
            run_id VARCHAR,
            attempt INTEGER,             -- 1 for the first try of a request
            messages JSON,               -- chat form: [{role, content}]
            document VARCHAR,            -- completion form (base models)
            params JSON,                 -- temperature, max_tokens, stop, seed, timeout_s, ...
            response_text VARCHAR,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            latency_s DOUBLE,
            cost_usd DOUBLE,
            finish_reason VARCHAR,
            error VARCHAR,               -- NULL on success
            error_kind VARCHAR,          -- 'rate_limit', 'server', 'timeout', 'connection', ...
            status INTEGER               -- HTTP status of a failed call, when there was one
        )
        """
    )
    con.execute("CREATE INDEX llm_calls_run ON llm_calls (run_id)")


@migration("021_llm_calls_output_mode")
def m021_llm_calls_output_mode(con: duckdb.DuckDBPyConnection) -> None:
    # How each reply was constrained: 'json_schema', 'json_object', 'grammar' (llama.cpp) or 'free';
    # a server that refuses json_schema shows here as the fallback it got.
    con.execute("ALTER TABLE llm_calls ADD COLUMN output_mode VARCHAR")


@migration("040_experiment_runs")
def m040_experiment_runs(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE TABLE experiment_runs (
            run_id VARCHAR PRIMARY KEY,
            grid_id VARCHAR,                    -- runs launched together (`experiment table3`)
            experiment VARCHAR NOT NULL,        -- 'in-distribution', 'ratio', 'generalization'
            train VARCHAR NOT NULL,             -- 'none', 'real', 'synthetic', 'hybrid'
            synthetic_ratio DOUBLE,             -- ratio test: share of synthetic trials in the training set
            model_requested VARCHAR,
            model_used VARCHAR,                 -- what actually ran (after any fallback)
            model_note VARCHAR,                 -- why another model ran / what 'none' means for it
            seeds INTEGER[],
            epochs INTEGER,
            max_length INTEGER,
            scrub_mode VARCHAR,
            synthetic_source VARCHAR,           -- NULL: every usable synthetic trial
            n_train INTEGER,
            n_val INTEGER,
            n_test INTEGER,
            device VARCHAR,
            samples_per_s DOUBLE,               -- training throughput, mean over seeds
            started_at TIMESTAMP,
            finished_at TIMESTAMP,
            duration_s DOUBLE,
            summary JSON,                       -- {metric: {mean, sd}}
            created_at TIMESTAMP DEFAULT current_timestamp
        )
        """
    )
    con.execute(
        """
        CREATE TABLE experiment_results (
            run_id VARCHAR NOT NULL,
            seed INTEGER NOT NULL,
            accuracy DOUBLE, "precision" DOUBLE, recall DOUBLE, f1 DOUBLE, roc_auc DOUBLE, pr_auc DOUBLE,
            n_train INTEGER, n_val INTEGER, n_test INTEGER,
            train_seconds DOUBLE,
            samples_per_s DOUBLE,
            PRIMARY KEY (run_id, seed)
        )
        """
    )
    con.execute(
        """
        CREATE TABLE experiment_curves (
            run_id VARCHAR NOT NULL,
            seed INTEGER NOT NULL,
            kind VARCHAR NOT NULL,              -- 'roc' (x=fpr, y=tpr) or 'pr' (x=recall, y=precision)
            x DOUBLE[],
            y DOUBLE[],
            PRIMARY KEY (run_id, seed, kind)
        )
        """
    )


@migration("050_embeddings_cache")
def m050_embeddings_cache(con: duckdb.DuckDBPyConnection) -> None:
    # One vector per (text, model): the text is the scrubbed serialization, so the same trial
    # text is embedded once whatever page, run or synthetic set asks for it.
    con.execute(
        """
        CREATE TABLE embeddings (
            text_hash VARCHAR NOT NULL,      -- sha256 of the embedded text
            model VARCHAR NOT NULL,          -- encoder key, e.g. 'all-MiniLM-L6-v2@256'
            dim INTEGER NOT NULL,
            vector FLOAT[] NOT NULL,
            created_at TIMESTAMP DEFAULT current_timestamp,
            PRIMARY KEY (text_hash, model)
        )
        """
    )


@migration("051_analysis_results")
def m051_analysis_results(con: duckdb.DuckDBPyConnection) -> None:
    # A result is keyed by everything that determines it (kind, parameters, seed), so asking
    # again with the same parameters reuses it and another choice of parameters sits beside it.
    con.execute(
        """
        CREATE TABLE analysis_results (
            id VARCHAR PRIMARY KEY,          -- sha256 of kind + canonical parameters JSON
            kind VARCHAR NOT NULL,           -- 'quality' (metrics + histograms) or 'projection'
            synthetic_source VARCHAR,        -- NULL = every synthetic set together
            model VARCHAR,                   -- encoder that actually ran
            params JSON NOT NULL,            -- every parameter, seed included
            seed INTEGER,
            result JSON NOT NULL,
            elapsed_s DOUBLE,
            created_at TIMESTAMP DEFAULT current_timestamp
        )
        """
    )
