"""Reasoning module (paper 3.2.3, Table 1): ask the LLM for 5 reasons that led the K examples of one
intervention to their common outcome.

`output="schema"` (the default) asks for core.pipeline.schema.REASONS_SCHEMA (JSON with exactly 5 reasons);
`"free"` is the paper's reply, 5 numbered reasons parsed from the text. Either way the reasons must be 5
distinct sentences: placeholders ("[X]", "[Original reason ...]", "(...)"), bracketed templates and
repeats are rejected and the stage asks again (bounded)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from core.pipeline.replies import FormatError, ask_until_readable, loads_lenient, output_mode
from core.pipeline.retrieval import Retrieval
from core.pipeline.schema import N_REASONS, REASONS_SCHEMA, reason_problems, reasons_grammar, schema_name
from core.prompts import load_prompts, outcome_words, render, stop_strings

__all__ = ["FormatError", "Reasoning", "areason", "reason", "parse_reasons", "build_prompt", "values_for",
           "ask_until_readable", "N_REASONS", "OUTPUTS"]

DEFAULT_ATTEMPTS = 3
OUTPUTS = ("schema", "free")
# A base model repeats itself: without a penalty the 270M model wrote the same reason 5 times in most
# replies; at 1.3 (llama.cpp's repeat penalty, last 64 tokens) it rarely does (measured in the scratch runs
# of issue 9). OpenAI-compatible servers ignore it.
REPEAT_PENALTY = 1.3


@dataclass
class Reasoning:
    reasons: list[str]
    raw_text: str
    attempts: int
    responses: list[Any] = field(default_factory=list)   # LLMResponse of every attempt
    output: str = "schema"                               # what was asked: 'schema' or 'free'

    @property
    def output_mode(self) -> str:
        """How the used reply was constrained ('json_schema', 'json_object', 'grammar', 'free')."""
        return output_mode(self.responses)


def values_for(retrieval: Retrieval) -> dict[str, str]:
    return {"intervention": retrieval.intervention, **outcome_words(retrieval.label)}


def build_prompt(retrieval: Retrieval, prompts: dict | None = None) -> tuple[list[dict], str]:
    """(messages, document) of the reasoning prompt."""
    stage = (prompts or load_prompts())["reasoning"]
    examples = [(e.label, e.text) for e in retrieval.examples]
    return render(stage, values_for(retrieval), examples)


def _marker(k: int) -> re.Pattern:
    # "3." / "3)" / "(3)" / "**3.**" at the start of a line or after whitespace, followed by space
    return re.compile(rf"(?:^|(?<=\s))(?:\*\*)?\(?{k}[.)](?:\*\*)?(?=\s)")


def _clean(reason: str) -> str:
    text = " ".join(reason.replace("**", "").split())
    if text.startswith("(") and text.endswith(")") and text.count("(") == 1:
        text = text[1:-1].strip()  # the constraint's "(...)" taken literally
    return text


_BULLET = re.compile(r"^\s*(?:[-*•]|\(?\d+(?:\.\d+)*[.)]?)\s*")


def _lines_as_reasons(text: str) -> list[str]:
    """Base-model fallback: the first 5 substantial lines, list markers ("1.2.", "-", "*") removed."""
    lines = [_clean(_BULLET.sub("", line)) for line in text.splitlines()]
    lines = [line for line in lines if len(line) >= 15]
    if len(lines) < N_REASONS:
        raise FormatError(f"found {len(lines)} reason lines of {N_REASONS}")
    return lines[:N_REASONS]


def parse_reasons(text: str, strict: bool = True) -> list[str]:
    """Exactly 5 numbered reasons "1. ... 5. ...". `strict` (chat models, told the format): a sixth
    numbered item is an error. Not strict (base models continuing a document): text after the fifth
    reason's paragraph is ignored, and when the numbering is off the first 5 substantial lines count."""
    try:
        return _parse_numbered(text, strict)
    except FormatError:
        if strict:
            raise
        return _lines_as_reasons(text)


def _parse_numbered(text: str, strict: bool) -> list[str]:
    positions = []
    pos = 0
    for k in range(1, N_REASONS + 1):
        m = _marker(k).search(text, pos)
        if not m:
            raise FormatError(f"no reason numbered {k} (found {k - 1} of {N_REASONS})")
        positions.append((m.start(), m.end()))
        pos = m.end()
    reasons = []
    for k, (_, end) in enumerate(positions):
        stop = positions[k + 1][0] if k + 1 < len(positions) else len(text)
        reasons.append(text[end:stop])
    last = reasons[-1]
    six = _marker(N_REASONS + 1).search(last)
    if six:
        if strict:
            raise FormatError(f"more than {N_REASONS} reasons")
        last = last[: six.start()]
    # the fifth reason ends at its paragraph's end (a closing remark may follow)
    last = re.split(r"\n\s*\n", last.strip(), maxsplit=1)[0]
    reasons[-1] = last
    reasons = [_clean(r) for r in reasons]
    empty = [i + 1 for i, r in enumerate(reasons) if len(r) < 3]
    if empty:
        raise FormatError(f"reason(s) {empty} empty")
    return reasons


def parse_reasons_json(text: str) -> list[str]:
    """The reasons of a structured reply ({"reasons": [...]}, or a bare list)."""
    value = loads_lenient(text)
    if isinstance(value, dict):
        value = value.get("reasons")
    if not isinstance(value, list) or not all(isinstance(r, str) for r in value):
        raise FormatError('reply is not {"reasons": [5 strings]}')
    return [" ".join(r.split()) for r in value]


def _structured_or_numbered(text: str, strict: bool) -> list[str]:
    """A structured reply; or, from a server that refused structured output (it answered in free text),
    the paper's numbered reasons."""
    try:
        return parse_reasons_json(text)
    except FormatError:
        if text.lstrip().startswith(("{", "[", "`")):
            raise
        return parse_reasons(text, strict=strict)


def usable(reasons: list[str]) -> list[str]:
    """The reasons, or FormatError naming what is wrong with them (placeholders, templates, repeats)."""
    problems = reason_problems(reasons)
    if problems:
        raise FormatError("; ".join(problems[:3]))
    return reasons


async def areason(llm: Any, retrieval: Retrieval, *, prompts: dict | None = None, temperature: float = 1.0,
                  max_tokens: int = 512, seed: int | None = None, attempts: int = DEFAULT_ATTEMPTS,
                  run_id: str | None = None, output: str = "schema") -> Reasoning:
    """Generate and parse the 5 reasons; FormatError after `attempts` unusable replies."""
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, not {output!r}")
    prompts = prompts or load_prompts()
    messages, document = build_prompt(retrieval, prompts)
    answer_open = prompts["reasoning"]["document_answer"].format(opening="")
    if output == "schema":
        # Servers get the JSON Schema; a base model continues the paper's document ("Reasons:\n1.") under
        # the same constraints as a numbered list (schema.reasons_grammar).
        parse = lambda text: usable(_structured_or_numbered(text, llm.chat))  # noqa: E731
        extra = {"schema": REASONS_SCHEMA, "schema_name": schema_name("reasons"),
                 "opening": answer_open.split("\n")[-1], "grammar": reasons_grammar()}
    else:
        # A base model continues after "Reasons:\n1.": put the opening back before parsing.
        parse = lambda text: usable(parse_reasons(text, strict=llm.chat))  # noqa: E731
        extra = {"opening": answer_open.split("\n")[-1]}
    reasons, _, attempt, responses = await ask_until_readable(
        llm, messages, document, stop_strings(prompts, "reasoning", values_for(retrieval), N_REASONS), parse,
        stage="reasoning", attempts=attempts, temperature=temperature, max_tokens=max_tokens, seed=seed,
        run_id=run_id, repeat_penalty=REPEAT_PENALTY, **extra)
    return Reasoning(reasons, responses[-1].text, attempt, responses, output)


def reason(llm: Any, retrieval: Retrieval, **kwargs: Any) -> Reasoning:
    """Blocking form of `areason` (for pages and scripts without an event loop)."""
    import asyncio

    return asyncio.run(areason(llm, retrieval, **kwargs))
