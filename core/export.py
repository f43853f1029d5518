"""Export a set of synthetic trials: JSON Lines, Parquet, and a Hugging Face `datasets` directory
(`datasets.load_from_disk`) with a data card (README.md).

Rows come from core.store.synthetic.list_synthetic. `text` is the scrubbed serialization the
classifier and the embedder see (core.serialize); `record` the canonical record (a nested object in
JSONL, a JSON string in the columnar formats, whose schema must be the same for every row).
Nothing else from the store goes out: no call log, no run parameters (and no key is ever stored).
"""
from __future__ import annotations

import io
import json
import shutil
import zipfile
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from core.serialize import classifier_text

FIELDS = ["id", "source", "run_id", "intervention", "label", "label_text", "generated_intervention",
          "intervention_match", "validation_status", "review_status", "review_note", "text", "record",
          "raw_text", "reasons", "example_nct_ids", "validation", "prompt_hash", "backend", "model", "created_at"]


def export_rows(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Synthetic trials (store rows) -> export rows (JSON-able; `record`/`validation` as objects)."""
    out = []
    for t in trials:
        record = t.get("record") or {}
        label = t.get("intended_label")
        created = t.get("created_at")
        out.append({
            "id": t["id"], "source": t.get("source"), "run_id": t.get("run_id"),
            "intervention": t.get("intended_intervention"), "label": label,
            "label_text": {1: "success", 0: "failure"}.get(label),
            "generated_intervention": t.get("generated_intervention"),
            "intervention_match": t.get("intervention_match"),
            "validation_status": t.get("validation_status"), "review_status": t.get("review_status"),
            "review_note": t.get("review_note"),
            "text": classifier_text(record, synthetic=True) if record else "",
            "record": record, "raw_text": t.get("raw_text"),
            "reasons": list(t.get("reasons") or []), "example_nct_ids": list(t.get("example_nct_ids") or []),
            "validation": t.get("validation"), "prompt_hash": t.get("prompt_hash"),
            "backend": t.get("backend"), "model": t.get("model"),
            "created_at": created.isoformat() if hasattr(created, "isoformat") else created,
        })
    return out


def _columnar(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**r, "record": json.dumps(r["record"], ensure_ascii=False, default=str),
             "validation": json.dumps(r["validation"], ensure_ascii=False, default=str)} for r in rows]


def _arrow_table(rows: list[dict[str, Any]]):
    import pyarrow as pa

    schema = pa.schema([
        ("id", pa.string()), ("source", pa.string()), ("run_id", pa.string()), ("intervention", pa.string()),
        ("label", pa.int8()), ("label_text", pa.string()), ("generated_intervention", pa.string()),
        ("intervention_match", pa.bool_()), ("validation_status", pa.string()), ("review_status", pa.string()),
        ("review_note", pa.string()), ("text", pa.string()), ("record", pa.string()), ("raw_text", pa.string()),
        ("reasons", pa.list_(pa.string())), ("example_nct_ids", pa.list_(pa.string())),
        ("validation", pa.string()), ("prompt_hash", pa.string()), ("backend", pa.string()), ("model", pa.string()),
        ("created_at", pa.string()),
    ])
    return pa.Table.from_pylist(_columnar(rows), schema=schema)


def to_jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows).encode("utf-8")


def to_parquet(rows: list[dict[str, Any]]) -> bytes:
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(_arrow_table(rows), buf)
    return buf.getvalue()


def data_card(rows: list[dict[str, Any]], name: str, filters: dict[str, Any] | None = None) -> str:
    """README.md of the exported dataset: what it is, how it was made, its fields and counts."""
    n = len(rows)
    labels = Counter(r["label_text"] or "unknown" for r in rows)
    status = Counter(r["validation_status"] or "not validated" for r in rows)
    review = Counter(r["review_status"] or "not reviewed" for r in rows)
    sources = Counter(r["source"] for r in rows)
    models = Counter(f"{r['backend']}:{r['model']}" for r in rows if r.get("model"))
    interventions = Counter(r["intervention"] for r in rows if r.get("intervention"))
    hashes = sorted({r["prompt_hash"] for r in rows if r.get("prompt_hash")})
    size = "n<1K" if n < 1000 else "1K<n<10K" if n < 10_000 else "10K<n<100K"

    def table(counter: Counter) -> str:
        return "\n".join(f"| {k} | {v} |" for k, v in counter.most_common()) or "| (none) | 0 |"

    applied = ", ".join(f"{k} = {v}" for k, v in (filters or {}).items() if v not in (None, "", [])) or "none"
    return f"""---
pretty_name: {name}
language:
- en
size_categories:
- {size}
task_categories:
- text-classification
tags:
- clinical-trials
- synthetic
- trial-outcome-prediction
---

# {name}

Synthetic clinical trial reports with an intended outcome label (1 = success, 0 = failure), made with
the retrieval → reasoning → generation method of Xu et al., *Retrieval-Reasoning LLM-based Synthetic
Clinical Trial Generation*: for a DrugBank drug intervention with enough successful and failed trials,
three real trials of one outcome are retrieved as few-shot examples, the LLM writes five reasons for that
outcome, then a new trial report of the same intervention and outcome. Imported published sets are kept
apart by `source`.

Exported {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC: **{n}** trials. Filters: {applied}.

**These are synthetic, model-written documents, not records of real studies.** Use them to augment
training data for outcome prediction, never as medical evidence. Each trial was checked automatically
(parses, required fields, intended vs generated intervention, outcome words that leak the label,
near copy of its own few-shot examples): see `validation_status` and `validation`; people's review
decisions are in `review_status` / `review_note`.

## Load

```python
from datasets import load_from_disk
ds = load_from_disk("path/to/this/folder")
```

## Fields

| field | meaning |
| --- | --- |
| id | `run_id:item` for generated trials, `source:index` for imported ones |
| source | `run:<run_id>` or the imported set's name |
| intervention, label, label_text | the intended intervention (DrugBank common name) and outcome |
| generated_intervention, intervention_match | the drug the model actually wrote, and whether it is the intended one |
| text | the scrubbed serialization a classifier sees (outcome fields and words removed) |
| record | the canonical trial record (JSON string) |
| raw_text | the model's reply as returned |
| reasons | the five reasons the generation used |
| example_nct_ids | the real trials used as few-shot examples |
| validation_status, validation | `ok` / `warning` / `invalid` and each check's detail (JSON string) |
| review_status, review_note | accepted / rejected / flagged by a person, with a note |
| prompt_hash, backend, model | the prompts' hash and the model that wrote the trial |

## Counts

| label | trials |
| --- | --- |
{table(labels)}

| validation | trials |
| --- | --- |
{table(status)}

| review | trials |
| --- | --- |
{table(review)}

| source | trials |
| --- | --- |
{table(sources)}

| backend:model | trials |
| --- | --- |
{table(models)}

Interventions: {len(interventions)} ({", ".join(f"{k} ({v})" for k, v in interventions.most_common(15))}{", …" if len(interventions) > 15 else ""}).
Prompt hashes: {", ".join(hashes) or "n/a"}.

## Source data

Few-shot examples come from public ClinicalTrials.gov records, TOP benchmark trials with IQVIA outcome
labels and the DrugBank open-data vocabulary (CC0). Check the terms of the model provider that
generated the set before redistributing it.
"""


def write_hf_dataset(rows: list[dict[str, Any]], out_dir: str | Path, name: str,
                     filters: dict[str, Any] | None = None) -> Path:
    """A `datasets` directory (save_to_disk) plus README.md data card; replaces `out_dir`."""
    from datasets import Dataset

    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    Dataset(_arrow_table(rows)).save_to_disk(str(out))
    (out / "README.md").write_text(data_card(rows, name, filters), encoding="utf-8")
    return out


def zip_dir(path: str | Path) -> bytes:
    """The directory as a zip (for a download button), paths relative to its parent."""
    root = Path(path)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(root.rglob("*")):
            if f.is_file():
                z.write(f, f.relative_to(root.parent))
    return buf.getvalue()
