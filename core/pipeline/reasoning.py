"""Reasoning module (paper 3.2.3, Table 1): ask the LLM for 5 reasons that led the K examples of one
intervention to their common outcome. Parses exactly 5 numbered reasons; retries (bounded) when the
reply does not have that format."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

from core.prompts import load_prompts, outcome_words, render
from core.pipeline.retrieval import Retrieval

T = TypeVar("T")

N_REASONS = 5
DEFAULT_ATTEMPTS = 3
# Base models run on past the fifth reason; these end the continuation.
DOCUMENT_STOP = ["\n6.", "\n\n\n", "clinical trial example:"]


class FormatError(ValueError):
    """The model's reply does not have the required shape."""


@dataclass
class Reasoning:
    reasons: list[str]
    raw_text: str
    attempts: int
    responses: list[Any] = field(default_factory=list)   # LLMResponse of every attempt


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


async def ask_until_readable(llm: Any, messages: list[dict], document: str, stop: list[str],
                             parse: Callable[[str], T], *, stage: str, attempts: int, temperature: float,
                             max_tokens: int, seed: int | None, run_id: str | None,
                             opening: str = "") -> tuple[T, str, int, list]:
    """Ask until a reply parses: a chat model gets the messages, a base model the document to continue (cut
    at `stop`; its reply is read after `opening`, the part of the answer the document already wrote); each
    attempt its own seed, so a retry can read differently. -> (what `parse` returned, the text it read, the
    attempt, all responses); FormatError after `attempts` unreadable replies, with the raw text."""
    from core.llm import LLMRequest  # core.llm is heavy: imported when a request is made

    responses = []
    last_error: FormatError | None = None
    for attempt in range(1, attempts + 1):
        req = LLMRequest(
            messages=messages, document=None if llm.chat else document, temperature=temperature,
            max_tokens=max_tokens, stop=None if llm.chat else stop,
            seed=None if seed is None else seed + attempt - 1, purpose=stage, run_id=run_id,
        )
        resp = await llm.acomplete(req)
        responses.append(resp)
        text = resp.text if llm.chat else opening + resp.text
        try:
            return parse(text), text, attempt, responses
        except FormatError as exc:
            last_error = exc
    err = FormatError(f"{stage} reply malformed after {attempts} attempts: {last_error}")
    err.raw_text = responses[-1].text if responses else ""  # type: ignore[attr-defined]
    err.responses = responses  # type: ignore[attr-defined]
    raise err


async def areason(llm: Any, retrieval: Retrieval, *, prompts: dict | None = None, temperature: float = 1.0,
                  max_tokens: int = 512, seed: int | None = None, attempts: int = DEFAULT_ATTEMPTS,
                  run_id: str | None = None) -> Reasoning:
    """Generate and parse the 5 reasons; FormatError after `attempts` malformed replies."""
    messages, document = build_prompt(retrieval, prompts)
    answer_open = (prompts or load_prompts())["reasoning"]["document_answer"].format(opening="")
    # A base model continues after "Reasons:\n1.": put the opening back before parsing.
    reasons, _, attempt, responses = await ask_until_readable(
        llm, messages, document, DOCUMENT_STOP, lambda text: parse_reasons(text, strict=llm.chat),
        stage="reasoning", attempts=attempts, temperature=temperature, max_tokens=max_tokens, seed=seed,
        run_id=run_id, opening=answer_open.split("\n")[-1])
    return Reasoning(reasons, responses[-1].text, attempt, responses)


def reason(llm: Any, retrieval: Retrieval, **kwargs: Any) -> Reasoning:
    """Blocking form of `areason` (for pages and scripts without an event loop)."""
    import asyncio

    return asyncio.run(areason(llm, retrieval, **kwargs))
