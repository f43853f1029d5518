"""A small, real stand-in of OpenAI's Files and Batch endpoints for tests (stdlib only).

Serves on 127.0.0.1:
- POST /v1/files (multipart: purpose, file), GET /v1/files/{id}, GET /v1/files/{id}/content;
- POST /v1/batches, GET /v1/batches/{id}, GET /v1/batches (list, newest first), POST /v1/batches/{id}/cancel.
A batch moves validating -> in_progress -> completed over `polls_to_finish` GETs of it. Each request
line of the input file (a POST /v1/chat/completions body) is answered like tests/servers/openai_server.py
answers it (`answer`: 5 reasons or a JSON trial; `structured_answer` for a response_format request),
in the output file, in the official line format
{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}.

Faults:
- `fail_lines`: a predicate on custom_id; those lines go to the error file with status 500;
- `expire`: the batch ends "expired" after answering only the first `expire_after` lines (the rest go to
  the error file with code "batch_expired"), as OpenAI does when the 24 h window passes;
- `expire_first`: only the first N batches created expire that way;
- `fail_validation`: the batch ends "failed" with errors.data (bad input file);
- `hold`: a predicate on the batch; batches it holds stay in_progress (to kill a client mid-batch).

    with serve(polls_to_finish=2) as srv:
        srv.base_url          # "http://127.0.0.1:PORT/v1"
        srv.batches, srv.files  # what was created
        srv.expire = True      # later batches expire

Standalone: python tests/servers/batch_server.py --port 8766
"""
from __future__ import annotations

import argparse
import email.parser
import email.policy
import json
import re
import secrets
import sys
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Callable, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, when run as a script
from tests.servers.openai_server import _tokens, answer, structured_answer  # noqa: E402  (the chat endpoint's answers)
from tests.servers.common import StateServer, running, serve_until_interrupted  # noqa: E402


class _State:
    def __init__(self, polls_to_finish: int, fail_lines: Callable[[str], bool] | None, expire: bool,
                 expire_after: int, fail_validation: bool, expire_first: int = 0,
                 hold: Callable[[dict[str, Any]], bool] | None = None):
        self.lock = threading.Lock()
        self.files: dict[str, dict[str, Any]] = {}
        self.content: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.polls: dict[str, int] = {}
        self.polls_to_finish = polls_to_finish
        self.fail_lines = fail_lines
        self.expire = expire
        self.expire_after = expire_after
        self.fail_validation = fail_validation
        self.expire_first = expire_first   # the first N batches created expire
        self.hold = hold                   # batches for which hold(batch) is true stay in_progress
        self.answered: list[str] = []   # custom_ids answered, over all batches (to count duplicates)

    def new_file(self, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        fid = "file-" + secrets.token_hex(8)
        meta = {"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                "filename": filename, "purpose": purpose, "status": "processed"}
        self.files[fid] = meta
        self.content[fid] = data
        return meta

    def finish(self, batch: dict[str, Any]) -> None:
        """Answer every line of the batch's input file (called with the lock held)."""
        lines = [json.loads(x) for x in self.content[batch["input_file_id"]].decode().splitlines() if x.strip()]
        if self.fail_validation or batch.get("_fail_validation"):
            batch.update(status="failed", failed_at=int(time.time()), errors={"object": "list", "data": [
                {"code": "invalid_json_line", "message": "line 1 is not a valid request", "line": 1, "param": None}]})
            return
        out, err = [], []
        expire = batch.get("_expire", False)
        for n, line in enumerate(lines):
            cid = line.get("custom_id")
            if expire and n >= self.expire_after:
                err.append({"id": "batch_req_" + secrets.token_hex(6), "custom_id": cid, "response": None,
                            "error": {"code": "batch_expired",
                                      "message": "This request could not be executed before the completion window expired."}})
                continue
            if self.fail_lines and self.fail_lines(cid):
                err.append({"id": "batch_req_" + secrets.token_hex(6), "custom_id": cid,
                            "response": {"status_code": 500, "request_id": secrets.token_hex(8),
                                         "body": {"error": {"message": "The server had an error processing your "
                                                            "request.", "type": "server_error", "code": None}}},
                            "error": None})
                continue
            body = line.get("body") or {}
            text = structured_answer(body, n) if body.get("response_format") else answer(body, n)
            self.answered.append(cid)
            prompt = " ".join(str(m.get("content", "")) for m in body.get("messages") or [])
            completion = {
                "id": "chatcmpl-" + secrets.token_hex(8), "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model", "test-model"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": _tokens(prompt), "completion_tokens": _tokens(text),
                          "total_tokens": _tokens(prompt) + _tokens(text)},
            }
            out.append({"id": "batch_req_" + secrets.token_hex(6), "custom_id": cid,
                        "response": {"status_code": 200, "request_id": secrets.token_hex(8), "body": completion},
                        "error": None})
        now = int(time.time())
        if out:
            batch["output_file_id"] = self.new_file("".join(json.dumps(x) + "\n" for x in out).encode(),
                                                    f"{batch['id']}_output.jsonl", "batch_output")["id"]
        if err:
            batch["error_file_id"] = self.new_file("".join(json.dumps(x) + "\n" for x in err).encode(),
                                                   f"{batch['id']}_error.jsonl", "batch_output")["id"]
        batch["request_counts"] = {"total": len(lines), "completed": len(out), "failed": len(err)}
        if expire:
            batch.update(status="expired", expired_at=now)
        else:
            batch.update(status="completed", completed_at=now, finalizing_at=now)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True   # headers and body go as two writes: Nagle + delayed ACK added ~40 ms a reply
    server: "StateServer"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, payload: Any = None, raw: bytes | None = None,
              ctype: str = "application/json") -> None:
        data = raw if raw is not None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        self._send(status, {"error": {"message": message, "type": "invalid_request_error", "param": None,
                                      "code": None}})

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _public(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in batch.items() if not k.startswith("_")}

    def do_GET(self) -> None:
        st = self.server.state
        path = self.path.split("?")[0].rstrip("/")
        with st.lock:
            if m := re.fullmatch(r"/v1/files/([\w-]+)/content", path):
                if m[1] not in st.content:
                    return self._error(404, f"No such File object: {m[1]}")
                return self._send(200, raw=st.content[m[1]], ctype="application/octet-stream")
            if m := re.fullmatch(r"/v1/files/([\w-]+)", path):
                if m[1] not in st.files:
                    return self._error(404, f"No such File object: {m[1]}")
                return self._send(200, st.files[m[1]])
            if m := re.fullmatch(r"/v1/batches/([\w-]+)", path):
                batch = st.batches.get(m[1])
                if batch is None:
                    return self._error(404, f"No such Batch object: {m[1]}")
                st.polls[m[1]] = st.polls.get(m[1], 0) + 1
                if batch["status"] in ("validating", "in_progress"):
                    if st.polls[m[1]] >= st.polls_to_finish and not (st.hold and st.hold(batch)):
                        st.finish(batch)
                    else:
                        batch.update(status="in_progress", in_progress_at=batch.get("in_progress_at") or int(time.time()))
                return self._send(200, self._public(batch))
            if path == "/v1/batches":
                data = [self._public(b) for b in sorted(st.batches.values(), key=lambda b: -b["_n"])]
                return self._send(200, {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                                        "last_id": data[-1]["id"] if data else None, "has_more": False})
        self._error(404, f"no route {self.path}")

    def do_POST(self) -> None:
        st = self.server.state
        path = self.path.split("?")[0].rstrip("/")
        raw = self._body()
        if path == "/v1/files":
            msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                b"Content-Type: " + self.headers.get("Content-Type", "").encode() + b"\r\n\r\n" + raw)
            fields: dict[str, Any] = {}
            for part in msg.iter_parts():
                name = part.get_param("name", header="content-disposition")
                fields[name] = (part.get_filename(), part.get_payload(decode=True))
            if "file" not in fields or "purpose" not in fields:
                return self._error(400, "'file' and 'purpose' are required")
            filename, data = fields["file"]
            with st.lock:
                return self._send(200, st.new_file(data or b"", filename or "upload.jsonl",
                                                   (fields["purpose"][1] or b"").decode()))
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return self._error(400, "body is not JSON")
        with st.lock:
            if path == "/v1/batches":
                fid = body.get("input_file_id")
                if fid not in st.files:
                    return self._error(400, f"No such File object: {fid}")
                if body.get("endpoint") not in ("/v1/chat/completions", "/v1/completions", "/v1/responses"):
                    return self._error(400, f"unsupported endpoint {body.get('endpoint')!r}")
                bid = "batch_" + secrets.token_hex(8)
                batch = {"id": bid, "object": "batch", "endpoint": body["endpoint"], "errors": None,
                         "input_file_id": fid, "completion_window": body.get("completion_window", "24h"),
                         "status": "validating", "output_file_id": None, "error_file_id": None,
                         "created_at": int(time.time()), "in_progress_at": None, "expires_at": int(time.time()) + 86400,
                         "completed_at": None, "failed_at": None, "expired_at": None, "cancelled_at": None,
                         "request_counts": {"total": 0, "completed": 0, "failed": 0},
                         "metadata": body.get("metadata"), "_n": len(st.batches),
                         "_expire": st.expire or len(st.batches) < st.expire_first, "_fail_validation": st.fail_validation}
                st.batches[bid] = batch
                return self._send(200, self._public(batch))
            if m := re.fullmatch(r"/v1/batches/([\w-]+)/cancel", path):
                batch = st.batches.get(m[1])
                if batch is None:
                    return self._error(404, f"No such Batch object: {m[1]}")
                if batch["status"] in ("validating", "in_progress"):
                    batch.update(status="cancelled", cancelled_at=int(time.time()))
                return self._send(200, self._public(batch))
        self._error(404, f"no route {self.path}")


class Handle:
    def __init__(self, server: StateServer):
        self._server = server
        host, port = server.server_address[:2]
        self.base_url = f"http://{host}:{port}/v1"

    @property
    def state(self) -> _State:
        return self._server.state

    @property
    def batches(self) -> list[dict[str, Any]]:
        with self.state.lock:
            return [dict(b) for b in sorted(self.state.batches.values(), key=lambda b: b["_n"])]

    @property
    def answered(self) -> list[str]:
        with self.state.lock:
            return list(self.state.answered)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("expire", "expire_after", "expire_first", "fail_lines", "fail_validation", "polls_to_finish",
                    "hold"):
            with self.state.lock:
                setattr(self.state, name, value)
        else:
            super().__setattr__(name, value)


@contextmanager
def serve(polls_to_finish: int = 2, *, fail_lines: Callable[[str], bool] | None = None, expire: bool = False,
          expire_after: int = 1, fail_validation: bool = False, expire_first: int = 0,
          hold: Callable[[dict[str, Any]], bool] | None = None, port: int = 0,
          host: str = "127.0.0.1") -> Iterator[Handle]:
    state = _State(polls_to_finish, fail_lines, expire, expire_after, fail_validation, expire_first, hold)
    with running(StateServer((host, port), _Handler, state)) as server:
        yield Handle(server)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="stand-in of OpenAI's /v1/files and /v1/batches")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8766)
    ap.add_argument("--polls-to-finish", type=int, default=2)
    args = ap.parse_args(argv)
    return serve_until_interrupted(serve(args.polls_to_finish, port=args.port, host=args.host),
                                   lambda srv: f"serving {srv.base_url}; Ctrl-C stops")


if __name__ == "__main__":
    raise SystemExit(main())
