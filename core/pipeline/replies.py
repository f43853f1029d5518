"""Ask until a reply is readable: the loop both LLM stages share.

A chat model gets the messages, a base model the document to continue; with `schema` the reply is
structured (json_schema / json_object on OpenAI-compatible servers, a grammar on the embedded model) and
the backend records how (`LLMResponse.output_mode`). Each attempt has its own seed, so a retry reads
differently; `parse` raises FormatError for a reply that is not usable (unreadable, placeholders,
repeats, ...), and after `attempts` of those the stage fails with the last reply's text.
"""
from __future__ import annotations

import json
from typing import Any, Callable, TypeVar

T = TypeVar("T")


class FormatError(ValueError):
    """The model's reply does not have the required shape (or content)."""


def loads_lenient(text: str) -> Any:
    """JSON from a model: strict first, then PyPI json-repair (unclosed strings and brackets, trailing
    commas, single quotes, comments, text around the object). None when nothing JSON-like is there."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    import json_repair

    try:
        value = json_repair.loads(text)
    except Exception:  # noqa: BLE001 - the repairer gives up on some inputs: nothing readable
        return None
    return None if value in ("", [], {}) else value


async def ask_until_readable(llm: Any, messages: list[dict], document: str, stop: list[str],
                             parse: Callable[[str], T], *, stage: str, attempts: int, temperature: float,
                             max_tokens: int, seed: int | None, run_id: str | None, opening: str = "",
                             schema: dict | None = None, schema_name: str = "reply",
                             repeat_penalty: float = 1.0, grammar: str | None = None,
                             avoid_words: dict[str, list[str]] | None = None) -> tuple[T, str, int, list]:
    """-> (what `parse` returned, the text it read, the attempt, all responses). A base model's reply is
    read after `opening` (the part of the answer the document already wrote; with a schema the grammar
    writes the whole reply, unless `grammar` continues the opening). FormatError after `attempts` unusable
    replies, with the raw text."""
    from core.llm import LLMRequest  # core.llm is heavy: imported when a request is made

    responses = []
    last_error: FormatError | None = None
    for attempt in range(1, attempts + 1):
        req = LLMRequest(
            messages=messages, document=None if llm.chat else document, temperature=temperature,
            max_tokens=max_tokens, stop=None if (llm.chat or schema is not None) else stop,
            seed=None if seed is None else seed + attempt - 1, purpose=stage, run_id=run_id,
            schema=schema, schema_name=schema_name, repeat_penalty=repeat_penalty, grammar=grammar,
            avoid_words=avoid_words,
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


def output_mode(responses: list) -> str:
    """How the reply that was used was constrained (the last response's mode)."""
    return getattr(responses[-1], "output_mode", "free") if responses else "free"
