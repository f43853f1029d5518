"""Words shared by the pages and the services: counts with the right plural."""
from __future__ import annotations


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 trial', '2 trials', '1,024 trials' (`many` for irregular plurals)."""
    return f"{n:,} {word if n == 1 else (many or word + 's')}"
