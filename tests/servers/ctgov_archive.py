"""Build a large ClinicalTrials.gov bulk JSON archive (the `ctg-studies.json.zip` layout: one API v2 study
per member, `ctg-studies/NCT........json`) from the stand-in's fixture studies, with rewritten ids, for the
streaming ingest test and benchmarks/bench_ingest_json.py. Or one member holding a JSON list of studies."""
from __future__ import annotations

import copy
import json
import zipfile
from pathlib import Path

from tests.servers.ctgov_server import load_studies


def nct(i: int) -> str:
    return f"NCT8{i:07d}"


def build_archive(path: Path, n: int, one_member: bool = False) -> Path:
    """n studies, ids NCT80000000.. (cycling through the fixtures' content)."""
    base = list(load_studies().values())
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        if one_member:
            with zf.open("ctg-studies.json", "w", force_zip64=True) as fh:
                fh.write(b"[")
                for i in range(n):
                    fh.write((b"," if i else b"") + json.dumps(_study(base, i)).encode())
                fh.write(b"]")
            return path
        for i in range(n):
            zf.writestr(f"ctg-studies/{nct(i)}.json", json.dumps(_study(base, i), ensure_ascii=False))
    return path


def _study(base: list[dict], i: int) -> dict:
    s = copy.deepcopy(base[i % len(base)])
    ident = s["protocolSection"]["identificationModule"]
    ident["nctId"] = nct(i)
    ident["briefTitle"] = f"{ident['briefTitle']} (copy {i})"
    return s
