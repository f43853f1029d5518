"""The pipeline's prompts, as data: core/prompts/paper.toml holds the paper's Table 1 and 2 texts.

A run may override any part (`load_prompts({"reasoning": {"diversity": "..."}})`); the prompts a run
used and their hash are stored with every output (synthetic_trials.prompt_hash, generation_runs.prompts).
"""
from __future__ import annotations

import copy
import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any

PAPER_FILE = Path(__file__).with_name("paper.toml")
STAGES = ("reasoning", "generation")
# Parts each stage must have; overrides may only touch these (and `order`).
PARTS = {
    "reasoning": ["context", "example", "constraint", "generation", "diversity", "document_answer"],
    "generation": ["context", "reasoning", "example", "constraint", "generation", "diversity", "document_answer"],
}


class PromptError(ValueError):
    """An override names an unknown stage or part, or has the wrong type."""


def paper_prompts() -> dict[str, dict[str, Any]]:
    with open(PAPER_FILE, "rb") as f:
        return tomllib.load(f)


def load_prompts(overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """The paper's prompts with `overrides` ({stage: {part: text}}) applied."""
    prompts = copy.deepcopy(paper_prompts())
    for stage, parts in (overrides or {}).items():
        if stage not in STAGES:
            raise PromptError(f"prompt override: unknown stage {stage!r} (known: {', '.join(STAGES)})")
        for part, value in (parts or {}).items():
            if part == "order":
                allowed = {"examples", *PARTS[stage]} - {"example", "document_answer"}
                if not isinstance(value, list) or not set(value) <= allowed:
                    raise PromptError(f"prompt override {stage}.order: a list of {sorted(allowed)}")
            elif part not in PARTS[stage]:
                raise PromptError(f"prompt override: unknown part {stage}.{part} (known: {', '.join(PARTS[stage])})")
            elif not isinstance(value, str):
                raise PromptError(f"prompt override {stage}.{part}: must be text")
            try:  # a placeholder typo or a stray brace would only fail mid-run: check now
                value.format(**_DUMMY)
            except (KeyError, IndexError, ValueError) as exc:
                raise PromptError(f"prompt override {stage}.{part}: bad placeholder ({exc}); known: "
                                  f"{', '.join('{' + k + '}' for k in _DUMMY)}; write literal braces as {{{{ }}}}") from None
            prompts[stage][part] = value
    return prompts


_DUMMY = {"intervention": "X", "label_word": "Successful", "outcome_verb": "succeed", "outcome_noun": "success",
          "outcome_adj": "successful", "example": "{}", "reasons": "1. r", "opening": "{"}


def prompt_hash(prompts: dict[str, Any]) -> str:
    """A short content hash of the prompts (stable across key order)."""
    blob = json.dumps(prompts, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def outcome_words(label: int) -> dict[str, str]:
    """The label-dependent words the templates use."""
    if label == 1:
        return {"label_word": "Successful", "outcome_verb": "succeed", "outcome_noun": "success",
                "outcome_adj": "successful"}
    return {"label_word": "Failed", "outcome_verb": "fail", "outcome_noun": "failure", "outcome_adj": "failed"}


def stop_strings(prompts: dict[str, dict[str, Any]], stage: str, values: dict[str, str] | None = None,
                 n_items: int = 5) -> list[str]:
    """Where a base model's free continuation of `stage`'s document should end, derived from the loaded
    prompts: where it starts another example (the `example` part up to its {example}, for either label),
    three newlines, and for reasoning an item numbered past `n_items`."""
    head = prompts[stage]["example"].split("{example}")[0]
    starts = []
    for label in (1, 0):
        text = head.format(**{**_DUMMY, **(values or {}), **outcome_words(label)}).strip()
        if text:
            starts.append(("" if stage == "reasoning" else "\n") + text)
    extra = [f"\n{n_items + 1}."] if stage == "reasoning" else []
    return extra + starts + ["\n\n\n"]


def render(stage: dict[str, Any], values: dict[str, str], examples: list[tuple[int, str]],
           opening: str = "") -> tuple[list[dict], str]:
    """Concatenate a stage's parts in its `order`: (chat messages, base-model document).

    Chat: the context part is the system message, the other parts (each example a part of its own,
    "<Successful|Failed> clinical trial example: <text>") form the user message, blank-line separated.
    Document (base models): the same parts in the same order, then the opening of the answer
    (`document_answer`) so that the model's continuation has the shape of the examples.
    """
    parts: list[tuple[str, str]] = []
    for name in stage["order"]:
        if name == "examples":
            for label, text in examples:
                parts.append(("example", stage["example"].format(**{**values, **outcome_words(label), "example": text})))
        else:
            parts.append((name, stage[name].format(**values)))
    system = [text for name, text in parts if name == "context"]
    user = [text for name, text in parts if name != "context"]
    messages = ([{"role": "system", "content": "\n\n".join(system)}] if system else []) + \
               [{"role": "user", "content": "\n\n".join(user)}]
    answer = stage["document_answer"].format(**{**values, "opening": opening})
    document = "\n\n".join([text for _, text in parts] + [answer])
    return messages, document
