"""A small, real ClinicalTrials.gov API v2 stand-in for tests and benchmarks (stdlib only).

Serves, on 127.0.0.1, the part of https://clinicaltrials.gov/api/v2 that `fetch-ctgov` uses:
- GET /api/v2/version                      -> {"apiVersion": ..., "dataTimestamp": ...}
- GET /api/v2/studies?filter.ids=A,B,...&pageSize=N[&pageToken=T]
                                           -> {"studies": [...], "nextPageToken": T2} (no token on the last page);
                                              ids it does not hold are left out, as upstream does
- GET /api/v2/studies/{nctId}              -> the study, or 404
Studies are API v2 study objects (protocolSection, ...), given as a dict or read from a folder of
NCT*.json files (tests/fixtures/ctgov_api/studies).

Fault plan: `faults` is applied to the first requests in order (request 1 gets faults[0]; "ok" or None
for a normal answer): "429" (with `Retry-After: <retry_after>`), "503", "500", "reset" (the connection
is reset before any answer), "drop" (closed without answering), "truncated" (a 200 whose body stops
half way). `delay` (seconds) is added to every request. `max_page` caps a page below the pageSize asked
for (upstream caps pageSize too), so that a client must follow nextPageToken.

From Python:
    with serve(studies_dir, faults=["429", "reset"]) as srv:
        srv.base_url     # "http://127.0.0.1:PORT/api/v2"
        srv.requests     # [{"path", "query", "fault", "status"}] in arrival order
"""
from __future__ import annotations

import argparse
import json
import socket
import struct
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Iterator, Sequence
from urllib.parse import parse_qs, urlsplit
import sys

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, when run as a script
from tests.servers.common import StateServer, running, serve_until_interrupted  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ctgov_api" / "studies"
FAULTS = {"ok", "429", "500", "503", "reset", "drop", "truncated"}


def load_studies(folder: Path = FIXTURES) -> dict[str, dict]:
    out = {}
    for f in sorted(Path(folder).glob("NCT*.json")):
        study = json.loads(f.read_text(encoding="utf-8"))
        out[study["protocolSection"]["identificationModule"]["nctId"]] = study
    return out


class _State:
    def __init__(self, studies: dict[str, dict], faults: Sequence[str | None] | None, delay: float,
                 retry_after: str, max_page: int | None = None):
        self.studies = studies
        self.max_page = max_page
        self.faults = list(faults or [])
        for f in self.faults:
            if f not in FAULTS and f is not None:
                raise ValueError(f"unknown fault {f!r} (known: {', '.join(sorted(FAULTS))})")
        self.delay = delay
        self.retry_after = retry_after
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []

    def admit(self, path: str, query: dict) -> tuple[int, str]:
        with self.lock:
            index = len(self.requests)
            fault = (self.faults[index] if index < len(self.faults) else None) or "ok"
            self.requests.append({"path": path, "query": query, "fault": fault, "status": None})
            return index, fault


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True   # headers and body go as two writes: Nagle + delayed ACK added ~40 ms a reply

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, index: int, status: int, payload: Any, headers: dict[str, str] | None = None,
              truncate: bool = False) -> None:
        body = json.dumps(payload).encode() if not isinstance(payload, bytes) else payload
        self.server.state.requests[index]["status"] = status  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if truncate else body)
        if truncate:
            self.close_connection = True

    def _reset(self) -> None:
        # SO_LINGER 0: close() sends an RST, so the client sees ECONNRESET rather than a clean EOF
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True

    def do_GET(self) -> None:
        state: _State = self.server.state  # type: ignore[attr-defined]
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        index, fault = state.admit(url.path, query)
        if state.delay:
            time.sleep(state.delay)
        if fault == "reset":
            return self._reset()
        if fault == "drop":
            self.close_connection = True
            return
        if fault == "429":
            return self._send(index, 429, {"message": "Too Many Requests"}, {"Retry-After": state.retry_after})
        if fault in ("500", "503"):
            return self._send(index, int(fault), {"message": "Service Unavailable"})
        truncate = fault == "truncated"
        path = url.path.rstrip("/")
        if path == "/api/v2/version":
            return self._send(index, 200, {"apiVersion": "2.0.3", "dataTimestamp": "2026-11-30T09:00:05"})
        if path == "/api/v2/studies":
            return self._studies(index, query, truncate)
        if path.startswith("/api/v2/studies/"):
            nct = path.rsplit("/", 1)[1]
            study = state.studies.get(nct)
            if study is None:
                return self._send(index, 404, {"message": f"Study {nct} not found"})
            return self._send(index, 200, study, truncate=truncate)
        return self._send(index, 404, {"message": f"no route {url.path}"})

    def _studies(self, index: int, query: dict, truncate: bool) -> None:
        state: _State = self.server.state  # type: ignore[attr-defined]
        try:
            size = int(query.get("pageSize", "10"))
            start = int(query.get("pageToken") or 0)
        except ValueError:
            return self._send(index, 400, {"message": "bad pageSize or pageToken"})
        if not 1 <= size <= 1000:
            return self._send(index, 400, {"message": "pageSize must be 1..1000"})
        size = min(size, state.max_page or size)
        ids = [i for i in (query.get("filter.ids") or "").split(",") if i]
        found = [state.studies[i] for i in (ids or sorted(state.studies)) if i in state.studies]
        page = found[start:start + size]
        payload: dict[str, Any] = {"studies": page}
        if start + size < len(found):
            payload["nextPageToken"] = str(start + size)
        return self._send(index, 200, payload, truncate=truncate)


class Handle:
    def __init__(self, server: StateServer):
        self._server = server

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/api/v2"

    @property
    def requests(self) -> list[dict[str, Any]]:
        with self._server.state.lock:
            return list(self._server.state.requests)

    def study_requests(self) -> list[dict[str, Any]]:
        """The requests for studies (not /version)."""
        return [r for r in self.requests if r["path"].startswith("/api/v2/studies")]

    def set_faults(self, faults: Sequence[str | None]) -> None:
        """A new plan, applied from the next request on."""
        with self._server.state.lock:
            self._server.state.faults = [None] * len(self._server.state.requests) + list(faults)

    def set_delay(self, delay: float) -> None:
        self._server.state.delay = delay


@contextmanager
def serve(studies: dict[str, dict] | Path | None = None, faults: Sequence[str | None] | None = None, *,
          delay: float = 0.0, retry_after: str = "1", max_page: int | None = None, port: int = 0) -> Iterator[Handle]:
    data = studies if isinstance(studies, dict) else load_studies(Path(studies) if studies else FIXTURES)
    with running(StateServer(("127.0.0.1", port), _Handler, _State(data, faults, delay, retry_after, max_page))) as server:
        yield Handle(server)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8766)
    p.add_argument("--studies", type=Path, default=FIXTURES)
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--faults", default="", help="comma-separated plan, e.g. 429,503,reset")
    a = p.parse_args(argv)
    return serve_until_interrupted(serve(a.studies, [f for f in a.faults.split(",") if f], delay=a.delay, port=a.port),
                                   lambda srv: srv.base_url)


if __name__ == "__main__":
    raise SystemExit(main())
