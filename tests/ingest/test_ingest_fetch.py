"""`fetch-ctgov` against a real local API v2 stand-in (tests/servers/ctgov_server.py): paging with filter.ids and
nextPageToken, 404, 429 with Retry-After, 503, reset and dropped connections; per-page commits, the raw
JSON cache, kill -9 and a rerun; the merge of a TOP row with its full record."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.servers.ctgov_server import load_studies, serve
from core.cli import main
from core.ingest import ingest
from core.ingest.ctgov_api import ApiClient, probe
from core.ingest.fetch_ctgov import fetch_ctgov, raw_cache_dir
from core.store import connect

ROOT = Path(__file__).resolve().parents[2]
CTA = ROOT / "tests" / "fixtures" / "ctgov_api"
FIX = ROOT / "tests" / "fixtures" / "ingest"
UPSTREAM = sorted(load_studies())                      # the 7 studies the stand-in holds
TOP_ONLY = UPSTREAM + ["NCT91000008", "NCT91000009"]   # the TOP rows of the store (2 unknown upstream)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("CTGEN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def top_store(tmp_path, cache) -> Path:
    """9 TOP-only trials with TOP and IQVIA labels, and the DrugBank fixture vocabulary."""
    db = tmp_path / "store.duckdb"
    ingest(db, top=[CTA / "top_fetch.csv"], outcomes=CTA / "outcomes_fetch.csv",
           outcome_map=FIX / "outcome2label.txt", drugbank=FIX / "drugbank_small.csv")
    return db


def _state(db: Path) -> dict:
    with connect(db, read_only=True) as con:
        trials = {r[0]: r[1:] for r in con.execute(
            "SELECT nct_id, sources, source, brief_title, top_files, eligibility_criteria FROM trials").fetchall()}
        labels = sorted(con.execute("SELECT * FROM labels").fetchall())
        matches = sorted(con.execute("SELECT nct_id, drugbank_id FROM intervention_matches").fetchall())
    return {"trials": trials, "labels": labels, "matches": matches}


def _asked(requests: list[dict]) -> list[str]:
    """The NCT ids asked for, request by request (filter.ids lists and /studies/{id})."""
    out = []
    for r in requests:
        if r["path"] == "/api/v2/studies":
            out += r["query"].get("filter.ids", "").split(",")
        elif r["path"].startswith("/api/v2/studies/"):
            out.append(r["path"].rsplit("/", 1)[1])
    return out


def test_fetch_completes_top_rows_through_faults_and_a_rerun_asks_once(top_store, cache, capsys):
    before = _state(top_store)
    assert all(v[0] == ["top"] for v in before["trials"].values()) and len(before["trials"]) == 9
    faults = ["429", "503", "reset", None, "drop", "truncated"]
    with serve(faults=faults, max_page=2) as srv:
        rc = main(["fetch-ctgov", "--db", str(top_store), "--missing", "--base-url", srv.base_url,
                   "--page-size", "4", "--rate", "50"])
        out = capsys.readouterr().out
        first = srv.requests
        assert rc == 0, out
        assert "fetched 7" in out and "not found upstream 2" in out and "failed 0" in out
        assert "NCT91000008, NCT91000009" in out
        # every fault was met and retried (the same request again after each)
        assert [r["fault"] for r in first[:len(faults)]] == [f or "ok" for f in faults]
        assert first[0]["query"] == first[1]["query"] == first[2]["query"] == first[3]["query"]
        assert first[3]["status"] == 200
        # the last chunk is one id (9 = 4 + 4 + 1): asked by id, and upstream does not hold it
        assert first[-1]["path"] == "/api/v2/studies/NCT91000009" and first[-1]["status"] == 404
        # paging: pages of 2 (the stand-in's cap) for 4 ids asked, so nextPageToken was followed
        assert any(r["query"].get("pageToken") for r in first)
        assert set(_asked(first)) == set(TOP_ONLY)

        after = _state(top_store)
        # one trial per id, as before: the TOP rows got their full records, nothing was added
        assert after["trials"].keys() == before["trials"].keys()
        studies = load_studies()
        for nct in UPSTREAM:
            sources, source, title, top_files, criteria = after["trials"][nct]
            assert sources == ["top", "ctgov_json"] and source == "ctgov_json"
            assert title == studies[nct]["protocolSection"]["identificationModule"]["briefTitle"]
            assert top_files == before["trials"][nct][3]   # TOP provenance kept
            assert criteria.startswith("Inclusion Criteria:\n\n* Adults with")
            assert (cache / "ctgov-api-v2" / f"{nct}.json").is_file()
        for nct in ("NCT91000008", "NCT91000009"):
            assert after["trials"][nct] == before["trials"][nct]
        # TOP and IQVIA labels are all kept, unchanged
        assert after["labels"] == before["labels"]
        assert {s for n, s, *_ in after["labels"] if n == "NCT91000001"} == {"iqvia", "top"}
        # the full records' interventions were matched to DrugBank (Methotrexate, Acetylsalicylic acid)
        assert ("NCT91000001", "DB00563") in after["matches"] and ("NCT91000002", "DB00945") in after["matches"]

        # a rerun asks only for what is still missing: the 2 unknown ids, in one request
        assert main(["fetch-ctgov", "--db", str(top_store), "--missing", "--base-url", srv.base_url,
                     "--page-size", "4", "--rate", "50"]) == 0
        rerun = srv.requests[len(first):]
        assert len(rerun) <= 1 and set(_asked(rerun)) == {"NCT91000008", "NCT91000009"}
        assert "fetched 0" in capsys.readouterr().out
        assert _state(top_store) == after


def test_single_ids_use_studies_by_id_and_404_is_reported(top_store, cache, tmp_path, capsys):
    ids = tmp_path / "ids.txt"
    ids.write_text("# wanted\nNCT91000003\n\n")
    with serve() as srv:
        assert main(["fetch-ctgov", "--db", str(top_store), "--ids", str(ids), "--base-url", srv.base_url,
                     "--rate", "50"]) == 0
        ids.write_text("nct91000009\n")   # lower case is accepted; upstream does not hold it
        assert main(["fetch-ctgov", "--db", str(top_store), "--ids", str(ids), "--base-url", srv.base_url,
                     "--rate", "50"]) == 0
        paths = [r["path"] for r in srv.requests]
        assert paths == ["/api/v2/studies/NCT91000003", "/api/v2/studies/NCT91000009"]
        assert [r["status"] for r in srv.requests] == [200, 404]
    out = capsys.readouterr().out
    assert "fetched 1" in out and "not found upstream 1" in out and "NCT91000009" in out
    assert _state(top_store)["trials"]["NCT91000003"][1] == "ctgov_json"


def test_bad_input_is_named(top_store, tmp_path, capsys):
    ids = tmp_path / "ids.txt"
    ids.write_text("NCT91000003\nNCT123\n")
    assert main(["fetch-ctgov", "--db", str(top_store), "--ids", str(ids)]) == 2
    assert f"{ids}: line 2: not an NCT id" in capsys.readouterr().err
    assert main(["fetch-ctgov", "--db", str(top_store)]) == 2
    assert "give --missing, --labelled or --ids" in capsys.readouterr().err
    assert main(["fetch-ctgov", "--db", str(top_store), "--missing", "--rate", "0"]) == 2


def test_labelled_only_and_failures_are_reported_then_retried(top_store, cache, capsys):
    """--labelled skips unlabelled trials; a page that fails after every retry is reported (not fatal),
    its ids stay missing, and the next run fetches them."""
    with connect(top_store) as con:
        con.execute("DELETE FROM labels WHERE nct_id = 'NCT91000007'")   # now unlabelled
    with serve(faults=["503"] * 3) as srv:
        client = ApiClient(srv.base_url, rate=100, retries=2, backoff_s=0.01)
        s = fetch_ctgov(top_store, labelled=True, page_size=3, client=client)
        assert s["requested"] == 8 and "NCT91000007" not in _asked(srv.requests)
        assert s["failed"] == ["NCT91000001", "NCT91000002", "NCT91000003"]
        assert s["fetched"] == 3 and s["not_found"] == ["NCT91000008", "NCT91000009"]
        assert any("failed after 3 attempts (HTTP 503)" in e for e in s["errors"])
        again = fetch_ctgov(top_store, labelled=True, page_size=3,
                            client=ApiClient(srv.base_url, rate=100, retries=2, backoff_s=0.01))
        assert again["fetched"] == 3 and again["failed"] == []
    assert _state(top_store)["trials"]["NCT91000007"][0] == ["top"]


def test_kill_9_mid_run_loses_nothing_and_the_rerun_asks_only_for_the_rest(top_store, cache):
    with serve(delay=0.4) as srv:
        env = {**os.environ, "CTGEN_CACHE": str(cache)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "core", "fetch-ctgov", "--db", str(top_store), "--missing",
             "--base-url", srv.base_url, "--page-size", "2", "--rate", "50"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while sum(r["status"] == 200 for r in srv.requests) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)   # somewhere inside the third page's request or the second page's commit
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        assert proc.returncode == -signal.SIGKILL
        killed_at = len(srv.requests)
        committed = {n for n, v in _state(top_store)["trials"].items() if v[1] == "ctgov_json"}
        cached = {p.stem for p in raw_cache_dir().glob("NCT*.json")}
        assert committed <= cached and len(cached) >= 2 and len(committed) < 7

        summary = fetch_ctgov(top_store, missing=True, base_url=srv.base_url, page_size=2, rate=50)
        rerun = _asked(srv.requests[killed_at:])
        # nothing received before the kill is asked for again
        assert not set(rerun) & cached
        assert summary["from_cache"] == len(cached - committed)
        assert summary["fetched"] + summary["from_cache"] == 7 - len(committed)
    state = _state(top_store)
    assert len(state["trials"]) == 9
    assert {n for n, v in state["trials"].items() if v[1] == "ctgov_json"} == set(UPSTREAM)


def test_probe_says_whether_the_api_answers():
    with serve(faults=["503"]) as srv:
        ok, why = probe(srv.base_url)
        assert not ok and "HTTP 503" in why
        ok, why = probe(srv.base_url)
        assert ok and "API 2.0.3" in why
        base = srv.base_url
    ok, why = probe(base, timeout=1.0)   # the stand-in is gone
    assert not ok and "not reachable" in why


def test_client_is_polite_and_honours_retry_after():
    """The rate limit spaces requests; a 429's Retry-After is waited out (sleeps recorded, not timed)."""
    waits: list[float] = []
    with serve(faults=["429", "503"], retry_after="3") as srv:
        client = ApiClient(srv.base_url, rate=5, backoff_s=0.5, sleep=waits.append)
        assert client.study("NCT91000001")["protocolSection"]["identificationModule"]["nctId"] == "NCT91000001"
        assert client.requests == 3 and [r["status"] for r in srv.requests] == [429, 503, 200]
    assert 3.0 in waits                                   # Retry-After: 3
    # the backoff of the second attempt (after the 503): 0.5 s * 2 +-20%
    assert any(0.8 <= w <= 1.2 for w in waits)
    # and the rate limit: 1/rate = 0.2 s apart (the recorded sleeps do not advance the clock, so they add up)
    spacing = [w for w in waits if w != 3.0 and not 0.8 <= w <= 1.2]
    assert spacing and all(0.15 <= w <= 0.41 for w in spacing)
