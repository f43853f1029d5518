"""Store area: analysis (tables and queries)."""
from __future__ import annotations

MIGRATIONS: list = []
