"""Store area: llmlog (tables and queries)."""
from __future__ import annotations

MIGRATIONS: list = []
