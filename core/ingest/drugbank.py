"""DrugBank open-data vocabulary CSV (DrugBank ID, Accession Numbers, Common name, CAS, UNII,
Synonyms (" | "-separated), Standard InChI Key) -> drugbank rows."""
from __future__ import annotations

import csv
import io
import re

from core.ingest.common import IngestError, clean, decode_utf8

REQUIRED = ["DrugBank ID", "Common name", "Synonyms"]
_ID = re.compile(r"DB\d{5}")


def parse_drugbank(data: bytes, display: str) -> tuple[list[dict], list[tuple]]:
    text = decode_utf8(data, display)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip() for h in reader.fieldnames or []]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise IngestError(f"{display}: not a DrugBank vocabulary CSV: header lacks {', '.join(missing)}")
    rows, errors, seen = [], [], set()
    for i, row in enumerate(reader, 1):
        did, name = (row.get("DrugBank ID") or "").strip(), clean(row.get("Common name"))
        if not _ID.fullmatch(did) or not name or did in seen:
            errors.append((display, f"row {i}", f"{display}: row {i}: invalid or duplicate DrugBank ID / Common name ({did!r})"))
            continue
        seen.add(did)
        syns = [s.strip() for s in (row.get("Synonyms") or "").split(" | ") if s.strip()]
        rows.append({"drugbank_id": did, "common_name": name, "synonyms": syns,
                     "cas": clean(row.get("CAS")), "unii": clean(row.get("UNII"))})
    if not rows:
        raise IngestError(f"{display}: DrugBank CSV has no usable rows")
    return rows, errors
