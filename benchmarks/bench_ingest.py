"""Ingest speed: full ingest of the mirror's ClinicalTrials.gov XML (parse + map + store, into a fresh
DuckDB file) against a paper-style baseline run in the same process (xml.etree parse of every file
and json.dumps of it as nested dicts, nothing stored).

    python benchmarks/bench_ingest.py [--repeat N] [--workers N]

Prints records/s for both and the ratio (goal >= 1.0x on 2 cores).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import config  # noqa: E402
from core.ingest import ingest  # noqa: E402


def _to_dict(el: ET.Element) -> dict:
    return {"tag": el.tag, "attrib": dict(el.attrib), "text": (el.text or "").strip(),
            "children": [_to_dict(c) for c in el]}


def baseline(zip_path: Path) -> int:
    """What the paper's data preparation does per file: parse with xml.etree, dump as JSON."""
    n = 0
    with zipfile.ZipFile(zip_path) as zf:
        for name in zf.namelist():
            if not name.endswith(".xml"):
                continue
            with zf.open(name) as fh:
                root = ET.parse(fh).getroot()
            json.dumps(_to_dict(root))
            n += 1
    return n


PHASES: list[tuple[float, float]] = []


def ours(zip_path: Path, workers: int | None) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        summary = ingest(Path(tmp) / "bench.duckdb", xml=[zip_path], workers=workers, command="bench")
        PHASES.append((summary["parse_seconds"], summary["store_seconds"]))
        return summary["xml"]["records"]


def _cpu() -> float:
    """User + system CPU of this process and of its finished children (the parser workers)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        total += r.ru_utime + r.ru_stime
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1, help="runs of each; the best is reported")
    ap.add_argument("--workers", type=int, default=None, help="parser processes (default: min(2, cores))")
    args = ap.parse_args()
    mirror = config.data_mirror()
    if mirror is None:
        print("no data mirror (set CTGEN_DATA_MIRROR)", file=sys.stderr)
        return 2
    zip_path = mirror / "ctgov" / "AllPublicXML-NCT0000xxxx.zip"
    best: dict[str, float] = {}
    cpu: dict[str, float] = {}
    counts: dict[str, int] = {}
    for _ in range(args.repeat):
        # alternate so that neither side always runs on a warmer machine
        for name, fn in (("baseline", lambda: baseline(zip_path)), ("ingest", lambda: ours(zip_path, args.workers))):
            c0 = _cpu()
            t = time.perf_counter()
            counts[name] = fn()
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - t)
            cpu[name] = min(cpu.get(name, float("inf")), _cpu() - c0)
    rate = {k: counts[k] / best[k] for k in best}
    print(f"records: baseline {counts['baseline']}, ingest {counts['ingest']}; "
          f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f} (other work skews both sides)")
    print(f"baseline (xml.etree + json.dumps, no store): {rate['baseline']:8.0f} records/s ({best['baseline']:.2f} s)")
    print(f"ingest   (defusedxml parse + map + DuckDB):  {rate['ingest']:8.0f} records/s ({best['ingest']:.2f} s)")
    print(f"CPU seconds (this process + parser workers; DuckDB's own threads included): "
          f"baseline {cpu['baseline']:.2f}, ingest {cpu['ingest']:.2f} -> "
          f"{cpu['baseline'] / cpu['ingest']:.2f}x records per CPU second")
    parse_s, store_s = min(PHASES, key=sum)
    print(f"  of which parse + map {parse_s:.2f} s, store (open, insert, match, commit) {store_s:.2f} s")
    print(f"ratio ingest/baseline: {rate['ingest'] / rate['baseline']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
