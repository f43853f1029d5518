"""Streaming ingest of a bulk API v2 archive (`ctg-studies.json.zip` layout, one study per member) built from
the stand-in's fixture studies with rewritten ids: records/s and peak RSS of `ingest --ctgov-json` (parse,
map, stage, one transaction into a fresh store), against a baseline in the same way (a subprocess each):
what the importer did before streaming, every member json.loads'ed and mapped, all records held in
memory, nothing stored.

    python benchmarks/bench_ingest_json.py [--studies 100000] [--baseline-studies 20000] [--keep DIR]

Goal: peak RSS under 2 GB whatever the archive's size.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


# Peak memory is the child's own VmHWM: ru_maxrss would carry over this (parent) process's high-water mark
# across fork+exec.
RUN = """
import json, re, sys, time, zipfile
mode, archive, db = sys.argv[1:4]
t = time.perf_counter()
if mode == "stream":
    from core.ingest import ingest
    n = ingest(db, ctgov_json=[archive], command="bench")["ctgov_json"]["records"]
else:
    from core.ingest.json_ctgov import parse_json_text
    held = []
    with zipfile.ZipFile(archive) as zf:
        for name in zf.namelist():
            held += parse_json_text(zf.read(name).decode("utf-8"), name)[0]
    n = len(held)
dt = time.perf_counter() - t
print(json.dumps({"records": n, "seconds": dt, "peak_rss_mb": int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) / 1024}))
"""


def run(mode: str, archive: Path, db: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", RUN, mode, str(archive), str(db)], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    from tests.servers.ctgov_archive import build_archive

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--studies", type=int, default=100_000)
    p.add_argument("--baseline-studies", type=int, default=20_000,
                   help="the baseline holds every record in memory: keep it to a size this machine can hold")
    p.add_argument("--keep", type=Path, help="build the archives here and keep them")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        where = a.keep or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        rows = []
        for mode, n in (("baseline", a.baseline_studies), ("stream", a.baseline_studies), ("stream", a.studies)):
            archive = where / f"ctg-studies-{n}.json.zip"
            if not archive.exists():
                t = time.perf_counter()
                build_archive(archive, n)
                print(f"built {archive.name}: {n:,} studies, {archive.stat().st_size / 2**20:.0f} MB zipped "
                      f"({time.perf_counter() - t:.0f} s)", flush=True)
            db = where / f"bench-{mode}-{n}.duckdb"
            db.unlink(missing_ok=True)
            r = run(mode, archive, db)
            db.unlink(missing_ok=True)
            r.update(mode=mode, rate=r["records"] / r["seconds"])
            rows.append(r)
            print(f"{mode:>8} {r['records']:>8,} studies: {r['rate']:>7,.0f} records/s, "
                  f"peak RSS {r['peak_rss_mb']:>6,.0f} MB", flush=True)
        base, same, big = rows
        print(f"at {a.baseline_studies:,} studies: streaming ingest (parse + store) runs at "
              f"{same['rate'] / base['rate']:.2f}x the baseline's records/s (parse only) with "
              f"{same['peak_rss_mb'] / base['peak_rss_mb']:.2f}x its peak RSS")
        print(f"at {a.studies:,} studies: peak RSS {big['peak_rss_mb']:,.0f} MB "
              f"({'under' if big['peak_rss_mb'] < 2048 else 'OVER'} the 2 GB goal), {big['rate']:,.0f} records/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
