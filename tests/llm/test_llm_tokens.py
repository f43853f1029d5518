"""Exact, offline token counts for OpenAI models: our tiktoken encoding (built from bpe-openai's
rank file) must agree token for token with bpe-openai's own tokenizer, on real trial text too."""
from __future__ import annotations

import zipfile

import bpe_openai
import pytest

from core.llm import LLMRequest, encoding_name_for, get_llm, tiktoken_encoding
from core.llm.pricing import context_window, estimate_cost

TEXTS = [
    "Hello world",
    "Patients   with\n\n  type 2 diabetes (HbA1c ≥ 7.0%) received 500mg metformin b.i.d.; they're OK.",
    "日本語のテキスト 🧪 émigré naïve — ÆØÅ",
    "  \t\n  ",
    "Inclusion Criteria:\n\n  - Age 18-75\n  - ECOG 0-1\r\n\r\nExclusion: CrCl < 30 mL/min/1.73m²",
    "<brief_title>A Phase III Study of Imatinib</brief_title><phase>Phase 3</phase>",
    "1234567890 12,345.678 0.000001 1e-9",
    "<|endoftext|> appears in text",
]


def _trial_texts(mirror, n=5) -> list[str]:
    zpath = mirror / "ctgov" / "AllPublicXML-NCT0000xxxx.zip"
    with zipfile.ZipFile(zpath) as z:
        names = sorted(x for x in z.namelist() if x.endswith(".xml"))[:: 997][:n]
        return [z.read(x).decode("utf-8") for x in names]


@pytest.mark.parametrize("model,encoding", [
    ("gpt-4o-mini", "o200k_base"), ("gpt-4o", "o200k_base"), ("gpt-4.1", "o200k_base"), ("o3-mini", "o200k_base"),
    ("gpt-4", "cl100k_base"), ("gpt-3.5-turbo", "cl100k_base"),
])
def test_counts_equal_bpe_openai(model, encoding, mirror):
    ours = get_llm("openai", base_url="http://127.0.0.1:9/v1", api_key="x", model=model)
    ref = bpe_openai.get_encoding(encoding)
    assert ours.tokens_exact and ours.encoding_name == encoding
    texts = TEXTS + _trial_texts(mirror)
    for text in texts:
        assert ours.count_tokens(text) == len(ref.encode(text, disallowed_special=()))
    # and the ids themselves, on a real record
    assert tiktoken_encoding(ref.name).encode(texts[-1]) == ref.encode(texts[-1])
    assert tiktoken_encoding(ref.name).decode(tiktoken_encoding(ref.name).encode(texts[-1])) == texts[-1]


def test_model_families_and_windows():
    assert encoding_name_for("gpt-4o-mini-2024-07-18") == ("o200k_base", True)
    assert encoding_name_for("gpt-4") == ("cl100k_base", True)
    assert encoding_name_for("llama-3-8b-instruct") == ("o200k_base", False)   # unknown: said so
    assert context_window("gpt-4o-mini") == 128_000 and context_window("gpt-4o-mini-2024-07-18") == 128_000
    assert context_window("gpt-4.1-mini") == 1_047_576
    llm = get_llm("openai", base_url="http://127.0.0.1:9/v1", api_key="x", model="my-vllm-model", n_ctx=4096)
    assert llm.context_window == 4096


def test_chat_prompt_tokens_include_the_framing():
    llm = get_llm("openai", base_url="http://127.0.0.1:9/v1", api_key="x")
    msgs = [{"role": "system", "content": "You are a medical expert."}, {"role": "user", "content": "Write 5 reasons."}]
    body = sum(llm.count_tokens(m["content"]) + llm.count_tokens(m["role"]) for m in msgs)
    assert llm.count_prompt_tokens(LLMRequest(messages=msgs)) == body + 3 * len(msgs) + 3


def test_cost_table():
    assert estimate_cost("gpt-4o-mini", 1_000_000, 1_000_000) == pytest.approx(0.75)
    assert estimate_cost("gpt-4o-mini-2024-07-18", 2000, 500) == pytest.approx((2000 * 0.15 + 500 * 0.60) / 1e6)
    assert estimate_cost("gpt-4o", 1000, 0) == pytest.approx(0.0025)   # not gpt-4o-mini's price
    assert estimate_cost("ft:gpt-4o-mini:org::abc", 1000, 0) == pytest.approx(0.00015)
    assert estimate_cost("gemma-3-270m-q4_k_m", 5000, 5000) == 0.0
    assert estimate_cost("some-self-hosted-model", 10, 10) is None
