"""A small, real OpenAI-compatible HTTP server for tests and benchmarks (stdlib only).

Serves POST /v1/chat/completions, POST /v1/completions and GET /v1/models on 127.0.0.1 with:
- a fixed per-request delay (`delay`, seconds), to measure concurrency;
- a fault plan: `faults` is a list applied to the first requests in order (request 1 gets faults[0],
  ...; "ok" or None for a normal answer), and/or `random_faults` {fault: probability} (seeded);
  faults: "429", "500", "502", "503", "400", "401" (echoes the key it was sent, to test scrubbing),
  "hang" (answers only after `hang_s`, past any sensible client timeout), "drop" (closes the
  connection without answering), "malformed" (200 with a body that is not JSON),
  "bad_content" (a valid completion whose text has neither reasons nor a trial), "empty" (""),
  "placeholder" (the 5 reasons are template placeholders like "[X] [X] [X]", as JSON or numbered text),
  "leaky_title" (the usual trial, but its title states the outcome: "Failed clinical trial of X: A case
  report", as the embedded model wrote), "copy" (the first few-shot example of the prompt, word for word).
- answers the pipeline can use: a prompt asking for 5 reasons gets "1. ... 2. ... 3. ... 4. ... 5. ...";
  a prompt asking for a trial report gets a JSON trial (brief_title, conditions,
  interventions[{type,name}], eligibility_criteria, phase, ...) using the intervention named in
  the prompt; content varies with the request's seed (or with the request, when it has none).
  JSON trials come in a ```json fence for about half the seeds (fence=None) or always/never.
- structured output (`structured`): "honour" (default) answers a `response_format` json_schema request with
  an object that follows the schema it was sent (the same content, fitted to the schema), and json_object
  with plain JSON; "reject" refuses json_schema with a 400 (as older vLLM / Ollama / llama.cpp servers do)
  but honours json_object; "reject_all" refuses both (free text only); "junk" answers json_schema and
  json_object requests with text that is not JSON.

From Python:
    with serve(delay=0.2, faults=["429", "500"]) as srv:
        srv.base_url   # "http://127.0.0.1:PORT/v1"
        srv.count      # requests seen so far (srv.requests: their paths, bodies, fault, auth header)
        srv.max_in_flight

Standalone:  python tests/servers/openai_server.py --port 8765 --delay 0.2 [--faults 429,500] [--hang-s 30]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import socket
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any, Iterator, Sequence
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, when run as a script
from tests.servers.common import StateServer, running, serve_until_interrupted  # noqa: E402

FAULTS = {"ok", "429", "500", "502", "503", "400", "401", "hang", "drop", "malformed", "bad_content", "empty",
          "placeholder", "leaky_title", "copy"}
PLACEHOLDER_REASONS = ["[Original reason for the failure]", "[X] [X] [X]", "[Reason 3]", "(...)",
                       "[Original reason for the failure]"]
STRUCTURED = {"honour", "reject", "reject_all", "junk"}

# ------------------------------------------------------------------------------------------------
# Content

_CONDITIONS = [
    "Type 2 Diabetes Mellitus", "Hypertension", "Rheumatoid Arthritis", "Non-Small Cell Lung Cancer",
    "Major Depressive Disorder", "Chronic Obstructive Pulmonary Disease", "Asthma", "Heart Failure",
    "Psoriasis", "Hepatitis C", "Breast Cancer", "Schizophrenia", "Osteoporosis", "Migraine",
]
_PHASES = ["Phase 1", "Phase 1/Phase 2", "Phase 2", "Phase 2/Phase 3", "Phase 3", "Phase 4"]
# The most participants a trial of the phase gets here: real-sized (under validation's per-phase ceilings).
_MOST_ENROLLED = {"Phase 1": 200, "Phase 1/Phase 2": 300, "Phase 2": 700}
_DESIGNS = ["Randomized, double-blind, placebo-controlled", "Open-label, single-arm",
            "Randomized, active-controlled, parallel-group", "Multicenter, dose-ranging"]
_OUTCOMES = ["Change from baseline in HbA1c", "Overall survival", "Progression-free survival",
             "Change in systolic blood pressure", "ACR20 response rate", "Incidence of adverse events",
             "Change in FEV1", "Time to first exacerbation", "PASI 75 response"]
_SUCCESS_REASONS = [
    "A well-characterized pharmacokinetic profile supported a dosing regimen that maintained therapeutic exposure",
    "Enrollment criteria selected a homogeneous population most likely to respond to the mechanism of action",
    "The primary endpoint was clinically validated and sensitive to change within the study period",
    "Adequate sample size and power calculations allowed detection of a clinically meaningful difference",
    "Low discontinuation rates owing to a favourable tolerability profile preserved statistical power",
    "Robust randomization and blinding minimized bias in outcome assessment",
    "Prior phase data informed an optimal dose, reducing the risk of under-treatment",
    "Multicenter recruitment achieved target enrollment on schedule",
]
_FAILURE_REASONS = [
    "Insufficient efficacy signal relative to placebo at the selected dose",
    "Slow enrollment led to early termination before the primary endpoint could be assessed",
    "An unfavourable safety profile with dose-limiting toxicities prompted discontinuation",
    "Heterogeneous patient population diluted the treatment effect",
    "The primary endpoint lacked sensitivity to detect change within the follow-up period",
    "High dropout rates reduced statistical power below the planned threshold",
    "Pharmacokinetic variability produced subtherapeutic exposure in a subset of patients",
    "Sponsor decision to reallocate resources after interim analysis",
]


def _prompt_text(body: dict[str, Any]) -> tuple[str, str]:
    """(whole prompt, the part that states the task: the last user message or the document)."""
    if "messages" in body:
        msgs = body.get("messages") or []
        whole = "\n".join(str(m.get("content", "")) for m in msgs)
        users = [str(m.get("content", "")) for m in msgs if m.get("role") == "user"]
        return whole, (users[-1] if users else whole)
    prompt = body.get("prompt", "")
    if isinstance(prompt, list):
        prompt = "\n".join(map(str, prompt))
    return str(prompt), str(prompt)[-2000:]


_TRIAL_ASK = re.compile(r"write a (?:simulated )?(?:clinical trial )?report|generate (?:a|one) (?:synthetic |simulated )?"
                        r"(?:clinical )?trial|previously generated reports|simulated clinical trial", re.I)
_REASON_ASK = re.compile(r"\breasons?\b", re.I)
_INTERVENTION = [
    re.compile(r"intervention name must be\s*\(?\s*([^()\n.,;]+?)\s*\)?\s*(?:[.,;\n]|$)", re.I),
    re.compile(r"reasons leading\s*\(?\s*(.+?)\s*\)?\s+to\s+\(?(?:succeed|fail)", re.I),
    re.compile(r"clinical trials? of\s*\(?\s*([^()\n.,;:]+?)\s*\)?\s*(?:[.,;:\n]|$)", re.I),
    re.compile(r"intervention(?: name)?\s*:\s*([^\n,;]+)", re.I),
]


def _intervention(text: str) -> str:
    for pat in _INTERVENTION:
        m = pat.search(text)
        if m:
            name = m.group(1).strip().strip("\"'`*")
            if name and len(name) < 80:
                return name
    return "Metformin"


def _label(*texts: str) -> int:
    """1 success, 0 failure: the last outcome word of the first text that has one."""
    for text in texts:
        words = re.findall(r"\b(successful|succeed|success|failed|fail|failure)\b", text, re.I)
        if words:
            return 0 if words[-1].lower().startswith("fail") else 1
    return 1


def make_reasons(rng: random.Random, intervention: str, label: int) -> str:
    pool = _SUCCESS_REASONS if label else _FAILURE_REASONS
    picked = rng.sample(pool, 5)
    return " ".join(f"{i}. {r} for {intervention}." for i, r in enumerate(picked, 1))


def make_trial(rng: random.Random, intervention: str, label: int) -> dict[str, Any]:
    condition = rng.choice(_CONDITIONS)
    phase = rng.choice(_PHASES)
    design = rng.choice(_DESIGNS)
    outcome = rng.choice(_OUTCOMES)
    n = max(12, rng.randint(24, 900) * _MOST_ENROLLED.get(phase, 900) // 900)   # the same draws as before
    weeks = rng.choice([8, 12, 24, 26, 52])
    return {
        "brief_title": f"{design.split(',')[0]} Study of {intervention} in {condition}",
        "official_title": f"A {design} {phase} Study to Evaluate the Efficacy and Safety of {intervention} "
                          f"in Adults With {condition}",
        "brief_summary": f"This {phase.lower()} study evaluates {intervention} in {n} participants with "
                         f"{condition.lower()} over {weeks} weeks; the primary measure is {outcome.lower()}.",
        "conditions": [condition],
        "interventions": [{"type": "Drug", "name": intervention,
                           "description": f"{intervention} {rng.choice([5, 10, 20, 50, 100])} mg "
                                          f"{rng.choice(['once', 'twice'])} daily"},
                          {"type": "Drug", "name": "Placebo", "description": "matching placebo"}],
        "eligibility_criteria": f"Inclusion Criteria:\n- Age {rng.choice([18, 21, 40])} to "
                                f"{rng.choice([65, 75, 80])} years\n- Diagnosis of {condition.lower()}\n"
                                f"Exclusion Criteria:\n- Pregnancy\n- Severe renal impairment",
        "phase": phase,
        "study_type": "Interventional",
        "enrollment": n,
        "gender": rng.choice(["All", "All", "Female", "Male"]),
        "minimum_age": "18 Years",
        "primary_outcomes": [{"measure": outcome, "time_frame": f"Week {weeks}"}],
        "design_info": {"allocation": "Randomized", "intervention_model": "Parallel Assignment",
                        "primary_purpose": "Treatment", "masking": rng.choice(["Double", "None (Open Label)"])},
    }


def make_trial_extra(rng: random.Random, trial: dict[str, Any]) -> dict[str, Any]:
    """The fields a schema asks for beyond make_trial's (drawn after it, so make_trial's stay the same)."""
    name = trial["interventions"][0]["name"]
    return {
        "detailed_description": f"Participants are randomized to {name} or placebo; visits every "
                                f"{rng.choice([2, 4, 6])} weeks assess efficacy and safety.",
        "keywords": [name, trial["conditions"][0].split()[0]],
        "arm_groups": [{"label": f"{name} arm", "type": "Experimental", "description": f"{name} as assigned"},
                       {"label": "Placebo arm", "type": "Placebo Comparator", "description": "Matching placebo"}],
        "secondary_outcomes": [{"measure": "Incidence of adverse events", "time_frame": "Through study completion"}],
        "maximum_age": f"{rng.choice([65, 75, 80])} Years",
        "sponsor_class": rng.choice(["Industry", "Other", "NIH"]),
    }


def fit_schema(schema: dict[str, Any], value: Any, path: str = "") -> Any:
    """`value` made to follow `schema` (the subset of JSON Schema structured outputs use): const and enum
    respected, objects get exactly their properties, arrays their item counts, strings their lengths and
    patterns, integers their bounds."""
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return value if value in schema["enum"] else schema["enum"][0]
    kind = schema.get("type")
    kind = next((k for k in kind if k != "null"), "null") if isinstance(kind, list) else kind
    if kind == "object":
        value = value if isinstance(value, dict) else {}
        return {k: fit_schema(s, value.get(k), f"{path}/{k}") for k, s in schema.get("properties", {}).items()}
    if kind == "array":
        items = list(value) if isinstance(value, list) else []
        lo, hi = schema.get("minItems", 0), schema.get("maxItems", len(items) or 1)
        items = items[:hi]
        while len(items) < lo:
            items.append(items[-1] if items else None)
        return [fit_schema(schema.get("items", {}), v, f"{path}/{i}") for i, v in enumerate(items)]
    if kind == "integer":
        v = value if isinstance(value, int) else 100
        return max(schema.get("minimum", v), min(schema.get("maximum", v), v))
    if kind == "string":
        text = str(value) if value not in (None, "") else f"Not reported ({path.rsplit('/', 1)[-1]})"
        if "pattern" in schema:
            for candidate in (text, "18 Years", "N/A"):
                if re.fullmatch(schema["pattern"], candidate):
                    return candidate
            return text
        text = text[: schema.get("maxLength", len(text))]
        return text + "." * max(0, schema.get("minLength", 0) - len(text))
    return value


def structured_answer(body: dict[str, Any], request_index: int) -> str:
    """The JSON reply to a json_schema (fitted to the schema) or json_object request."""
    whole, ask = _prompt_text(body)
    seed = body.get("seed")
    if seed is None:
        seed = int(hashlib.sha256(f"{request_index}|{whole}".encode()).hexdigest()[:12], 16)
    rng = random.Random(seed)
    fmt = body.get("response_format") or {}
    schema = (fmt.get("json_schema") or {}).get("schema") if fmt.get("type") == "json_schema" else None
    intervention = _intervention(ask) if _intervention(ask) != "Metformin" else _intervention(whole)
    label = _label(ask, whole)
    props = (schema or {}).get("properties") or {}
    wants_reasons = "reasons" in props if schema else ('"reasons"' in whole or not _TRIAL_ASK.search(ask))
    if wants_reasons:
        pool = _SUCCESS_REASONS if label else _FAILURE_REASONS
        value: Any = {"reasons": [f"{r} for {intervention}." for r in rng.sample(pool, 5)]}
    else:
        trial = make_trial(rng, intervention, label)
        value = {**trial, **make_trial_extra(rng, trial)}
    return json.dumps(fit_schema(schema, value) if schema else value, indent=None)


def answer(body: dict[str, Any], request_index: int, fence: bool | None = None) -> str:
    """The completion text for a request (deterministic given its seed, or the request itself)."""
    whole, ask = _prompt_text(body)
    seed = body.get("seed")
    if seed is None:
        seed = int(hashlib.sha256(f"{request_index}|{whole}".encode()).hexdigest()[:12], 16)
    rng = random.Random(seed)
    intervention = _intervention(ask) if _intervention(ask) != "Metformin" else _intervention(whole)
    label = _label(ask, whole)
    if _TRIAL_ASK.search(ask) or (not _REASON_ASK.search(ask) and _TRIAL_ASK.search(whole)):
        text = json.dumps(make_trial(rng, intervention, label), indent=2)
        use_fence = (rng.random() < 0.5) if fence is None else fence
        return f"```json\n{text}\n```" if use_fence else text
    if _REASON_ASK.search(ask) or _REASON_ASK.search(whole):
        return make_reasons(rng, intervention, label)
    return f"{intervention} was studied in a {rng.choice(_PHASES).lower()} trial."


def leaky_title(text: str, body: dict[str, Any]) -> str:
    """A trial reply (JSON, fenced or not) whose brief title states the outcome the prompt asks for."""
    whole, ask = _prompt_text(body)
    trial = json.loads(re.sub(r"^```json\n|\n```$", "", text.strip()))
    intervention = _intervention(ask) if _intervention(ask) != "Metformin" else _intervention(whole)
    outcome = "Successful" if _label(ask, whole) else "Failed"
    trial["brief_title"] = f"{outcome} clinical trial of {intervention}: A case report"[:100]
    return json.dumps(trial)


def first_example(body: dict[str, Any]) -> str:
    """The first few-shot example of the prompt as it stands there (what a model copying it writes)."""
    whole, _ = _prompt_text(body)
    m = re.search(r"clinical trial example: (.+?)(?:\n\n|$)", whole, re.S)
    return m.group(1) if m else whole


def _tokens(text: str) -> int:
    # Rough: the server is a stand-in for the wire protocol, not for a tokenizer.
    return max(1, len(re.findall(r"\w+|[^\w\s]", text)))


# ------------------------------------------------------------------------------------------------
# Server


class _State:
    def __init__(self, delay: float, faults: Sequence[str | None] | None, random_faults: dict[str, float] | None,
                 seed: int, hang_s: float, fence: bool | None, model: str | None, structured: str = "honour"):
        if structured not in STRUCTURED:
            raise ValueError(f"unknown structured mode {structured!r}; known: {sorted(STRUCTURED)}")
        self.structured = structured
        for f in list(faults or []) + list((random_faults or {}).keys()):
            if f is not None and f not in FAULTS:
                raise ValueError(f"unknown fault {f!r}; known: {sorted(FAULTS)}")
        self.delay = delay
        self.faults = list(faults or [])
        self.random_faults = dict(random_faults or {})
        self.rng = random.Random(seed)
        self.hang_s = hang_s
        self.fence = fence
        self.model = model
        self.lock = threading.Lock()
        self.count = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.requests: list[dict[str, Any]] = []
        self.stopping = threading.Event()

    def admit(self, path: str, body: Any, auth: str | None) -> tuple[int, str]:
        with self.lock:
            self.count += 1
            index = self.count
            fault = self.faults[index - 1] if index <= len(self.faults) else None
            if fault is None and self.random_faults:
                r = self.rng.random()
                acc = 0.0
                for name, p in self.random_faults.items():
                    acc += p
                    if r < acc:
                        fault = name
                        break
            fault = fault or "ok"
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.requests.append({"index": index, "path": path, "body": body, "fault": fault,
                                  "authorization": auth, "t": time.monotonic()})
        return index, fault

    def done(self) -> None:
        with self.lock:
            self.in_flight -= 1


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True   # headers and body go as two writes: Nagle + delayed ACK added ~40 ms a reply
    server: "StateServer"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, payload: Any, raw: bytes | None = None, headers: dict[str, str] | None = None) -> None:
        data = raw if raw is not None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _error(self, status: int, message: str, type_: str, code: str | None = None) -> None:
        self._send(status, {"error": {"message": message, "type": type_, "param": None, "code": code}})

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            model = self.server.state.model or "test-model"
            self._send(200, {"object": "list", "data": [{"id": model, "object": "model", "owned_by": "tests"}]})
        else:
            self._error(404, f"no route {self.path}", "invalid_request_error")

    def do_POST(self) -> None:
        state = self.server.state
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            body = None
        path = self.path.split("?")[0].rstrip("/")
        index, fault = state.admit(path, body, self.headers.get("Authorization"))
        try:
            self._handle(state, path, body, index, fault)
        finally:
            state.done()

    def _handle(self, state: _State, path: str, body: Any, index: int, fault: str) -> None:
        if state.delay:
            time.sleep(state.delay)
        if fault == "drop":
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if fault == "hang":
            state.stopping.wait(state.hang_s)
            fault = "ok"
            if state.stopping.is_set():
                self.close_connection = True
                return
        if fault == "429":
            return self._error(429, "Rate limit reached for requests", "requests", "rate_limit_exceeded")
        if fault in ("500", "502", "503"):
            return self._error(int(fault), "The server had an error while processing your request.", "server_error")
        if fault == "400":
            return self._error(400, "Invalid request (fault injected)", "invalid_request_error")
        if fault == "401":
            key = (self.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
            return self._error(401, f"Incorrect API key provided: {key}.", "invalid_request_error", "invalid_api_key")
        if not isinstance(body, dict):
            return self._error(400, "body is not a JSON object", "invalid_request_error")
        if path.endswith("/chat/completions"):
            if not isinstance(body.get("messages"), list) or not body["messages"]:
                return self._error(400, "'messages' is required", "invalid_request_error")
            chat = True
        elif path.endswith("/completions"):
            if "prompt" not in body:
                return self._error(400, "'prompt' is required", "invalid_request_error")
            chat = False
        else:
            return self._error(404, f"no route {path}", "invalid_request_error")
        if fault == "malformed":
            return self._send(200, None, raw=b'{"id": "cmpl-broken", "choices": [{"message": {"content": "1. tru')
        fmt = (body.get("response_format") or {}).get("type") if chat else None
        if fmt not in (None, "text", "json_schema", "json_object"):
            return self._error(400, f"response_format type {fmt!r} is not supported", "invalid_request_error")
        if fmt == "json_schema" and state.structured in ("reject", "reject_all"):
            return self._error(400, "response_format type 'json_schema' is not supported by this server; "
                                    "use 'json_object'", "invalid_request_error", "unsupported_response_format")
        if fmt == "json_object" and state.structured == "reject_all":
            return self._error(400, "response_format is not supported by this server", "invalid_request_error",
                               "unsupported_response_format")
        if fault == "placeholder":
            text = (json.dumps({"reasons": PLACEHOLDER_REASONS}) if fmt in ("json_schema", "json_object")
                    else " ".join(f"{i}. {r}" for i, r in enumerate(PLACEHOLDER_REASONS, 1)))
        elif fault == "bad_content":
            text = "I am sorry, I cannot help with that request."
        elif fault == "empty":
            text = ""
        elif fault == "copy":
            text = first_example(body)
        elif fmt in ("json_schema", "json_object"):
            text = 'Sure! {"brief_title": "unfinished' if state.structured == "junk" else structured_answer(body, index)
        else:
            text = answer(body, index, state.fence)
        if fault == "leaky_title":
            text = leaky_title(text, body)
        finish = "stop"
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        if isinstance(max_tokens, int) and max_tokens > 0:
            words = re.findall(r"\S+\s*", text)
            if len(words) > max_tokens * 3:  # crude: ~0.75 words per token, and keep JSON intact mostly
                text = "".join(words[: max_tokens * 3])
                finish = "length"
        whole, _ = _prompt_text(body)
        usage = {"prompt_tokens": _tokens(whole), "completion_tokens": _tokens(text) if text else 0}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        model = state.model or body.get("model") or "test-model"
        created = int(time.time())
        if chat:
            payload = {"id": f"chatcmpl-{index}", "object": "chat.completion", "created": created, "model": model,
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                    "logprobs": None, "finish_reason": finish}], "usage": usage}
        else:
            payload = {"id": f"cmpl-{index}", "object": "text_completion", "created": created, "model": model,
                       "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
                       "usage": usage}
        self._send(200, payload)


class Handle:
    """What `serve` yields: the base URL and what the server saw."""

    def __init__(self, server: StateServer):
        self._server = server
        host, port = server.server_address[:2]
        self.port = port
        self.base_url = f"http://{host}:{port}/v1"

    @property
    def state(self) -> _State:
        return self._server.state

    @property
    def count(self) -> int:
        return self.state.count

    @property
    def max_in_flight(self) -> int:
        return self.state.max_in_flight

    @property
    def requests(self) -> list[dict[str, Any]]:
        with self.state.lock:
            return list(self.state.requests)

    def set_faults(self, faults: Sequence[str | None]) -> None:
        """A new plan for the next requests (counted from now)."""
        with self.state.lock:
            self.state.faults = [None] * self.state.count + list(faults)

    def set_delay(self, delay: float) -> None:
        self.state.delay = delay

    def __iter__(self):  # allows `with serve() as (base_url, srv):`
        return iter((self.base_url, self))


@contextmanager
def serve(delay: float = 0.0, faults: Sequence[str | None] | None = None, *,
          random_faults: dict[str, float] | None = None, seed: int = 0, hang_s: float = 30.0,
          fence: bool | None = None, model: str | None = None, port: int = 0,
          host: str = "127.0.0.1", structured: str = "honour") -> Iterator[Handle]:
    """Run the server on a free port in a background thread for the duration of the block."""
    state = _State(delay, faults, random_faults, seed, hang_s, fence, model, structured)
    with running(StateServer((host, port), _Handler, state), on_stop=state.stopping.set) as server:
        yield Handle(server)   # on the way out, hanging handlers are released first


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="OpenAI-compatible test server with fault injection")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--delay", type=float, default=0.0, help="seconds each request takes")
    ap.add_argument("--faults", default="", help="comma-separated plan for the first requests, e.g. 429,500,drop")
    ap.add_argument("--hang-s", type=float, default=30.0)
    ap.add_argument("--model", default=None, help="model name to report (default: the one requested)")
    ap.add_argument("--structured", default="honour", choices=sorted(STRUCTURED),
                    help="how json_schema / json_object requests are answered")
    args = ap.parse_args(argv)
    faults = [f.strip() or None for f in args.faults.split(",")] if args.faults else []
    return serve_until_interrupted(
        serve(args.delay, faults, hang_s=args.hang_s, model=args.model, port=args.port, host=args.host,
              structured=args.structured),
        lambda srv: f"serving {srv.base_url} (delay {args.delay}s, faults {faults or 'none'}); Ctrl-C stops")


if __name__ == "__main__":
    raise SystemExit(main())
