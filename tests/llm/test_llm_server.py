"""The test server's answers are usable by the pipeline (5 reasons; a JSON trial with the
intervention asked for), vary with the seed, and the server runs standalone."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from core.llm import LLMError, LLMRequest, get_llm
from conftest import free_port
from tests.servers.openai_server import serve

CONTEXT = ("You are now a medical expert in the clinical area. You are given information of a medical "
           "intervention, and three clinical trial reports of it, either all successful or all failed.")


def _reasons(text: str) -> list[str]:
    parts = re.split(r"(?:^|\s)[1-5]\.\s", text)
    return [p.strip() for p in parts if p.strip()]


def _trial(text: str) -> dict:
    return json.loads(re.sub(r"^```(?:json)?\s*|\s*```$", "", text.strip()))


def test_reasons_and_trials_follow_the_prompt():
    with serve() as srv:
        llm = get_llm("openai", base_url=srv.base_url, api_key="k")
        reasons_msgs = [{"role": "system", "content": CONTEXT},
                        {"role": "user", "content": "Failed clinical trial example: <x/>\nYour output should strictly "
                         "follow the following format: 1. (...) 2. (...) 3. (...) 4. (...) 5. (...)\n"
                         "Write 5 reasons leading (Sorafenib) to (fail) in these trials."}]
        r = llm.complete(LLMRequest(messages=reasons_msgs, seed=1)).text
        assert len(_reasons(r)) == 5 and "Sorafenib" in r
        more = llm.complete(LLMRequest(messages=reasons_msgs + [
            {"role": "assistant", "content": r},
            {"role": "user", "content": "Can you provide something more diverse compared to the previously generated reasons?"}],
            seed=2)).text
        assert len(_reasons(more)) == 5 and more != r
        gen = [{"role": "system", "content": CONTEXT},
               {"role": "user", "content": "Here are five reasons that could lead to the failure of clinical trials of "
                "Sorafenib: " + r + "\nThe intervention name must be Sorafenib, and you must refer to these reasons "
                "when writing clinical trials.\nWrite a report of a failed clinical trial of Sorafenib."}]
        trials = [_trial(llm.complete(LLMRequest(messages=gen, seed=s)).text) for s in range(6)]
    for t in trials:
        assert t["interventions"][0] == {**t["interventions"][0], "type": "Drug", "name": "Sorafenib"}
        assert t["brief_title"] and t["conditions"] and t["eligibility_criteria"] and t["phase"]
    assert len({t["brief_title"] + t["phase"] + str(t["enrollment"]) for t in trials}) >= 4   # varied


def test_seeded_answers_repeat_and_fence_is_configurable():
    msgs = [{"role": "user", "content": "Write a report of a successful clinical trial of Aspirin."}]
    with serve(fence=False) as plain, serve(fence=True) as fenced:
        a = get_llm("openai", base_url=plain.base_url, api_key="k")
        b = get_llm("openai", base_url=fenced.base_url, api_key="k")
        t1 = a.complete(LLMRequest(messages=msgs, seed=4)).text
        assert t1 == a.complete(LLMRequest(messages=msgs, seed=4)).text
        assert t1.startswith("{") and json.loads(t1)["interventions"][0]["name"] == "Aspirin"
        t2 = b.complete(LLMRequest(messages=msgs, seed=4)).text
        assert t2.startswith("```json") and _trial(t2) == json.loads(t1)


def test_fault_plan_can_be_reset_and_bad_content_is_a_valid_reply():
    with serve(faults=["bad_content", "empty"]) as srv:
        llm = get_llm("openai", base_url=srv.base_url, api_key="k", max_retries=0)
        req = LLMRequest(messages=[{"role": "user", "content": "Write 5 reasons leading X to succeed."}])
        assert "cannot help" in llm.complete(req).text
        assert llm.complete(req).text == ""
        srv.set_faults(["500"])
        assert srv.count == 2
        with pytest.raises(LLMError) as info:
            llm.complete(req)
        assert info.value.kind == "server" and srv.requests[-1]["fault"] == "500"
        assert len(_reasons(llm.complete(req).text)) == 5


def test_runs_standalone():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "tests/servers/openai_server.py", "--port", str(port), "--delay", "0.05"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert "serving http://127.0.0.1:%d/v1" % port in proc.stdout.readline()
        llm = get_llm("openai", base_url=f"http://127.0.0.1:{port}/v1", api_key="k")
        t0 = time.monotonic()
        text = llm.complete(LLMRequest(messages=[{"role": "user", "content": "Write 5 reasons leading X to fail."}])).text
        assert len(_reasons(text)) == 5 and time.monotonic() - t0 >= 0.05
    finally:
        proc.terminate()
        proc.wait(timeout=10)
