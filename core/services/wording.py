"""Counted nouns as a person writes them: "1 trial", "2 trials", "1 trial has", "3 trials have"."""
from __future__ import annotations


def plural(n: int, noun: str, many: str | None = None) -> str:
    """'1 trial' / '2,514 trials' (thousands separated); `many` for irregular plurals."""
    return f"{n:,} {noun if n == 1 else (many or noun + 's')}"


def has_have(n: int) -> str:
    return "has" if n == 1 else "have"
