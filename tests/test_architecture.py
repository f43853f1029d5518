"""The layout's rules, checked on the source (issue 8): pages render only, through core.services;
streamlit lives in pages and core/ui alone; all SQL lives in core/store."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "app.py", *sorted((ROOT / "pages").glob("*.py"))]
CORE = [p for p in (ROOT / "core").rglob("*.py")]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def _calls(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            f = node.func
            out.add(f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", ""))
    return out


def test_pages_render_only():
    for page in PAGES:
        imported = _imports(page)
        bad = sorted(n for n in imported if n.split(".")[0] in ("duckdb", "subprocess")
                     or n == "core.store" or n.startswith("core.store.") or n.startswith("core.jobs"))
        assert not bad, f"{page.relative_to(ROOT)} imports {bad}: go through core.services"
        calls = _calls(page) & {"connect", "Popen", "spawn", "system"}
        assert not calls, f"{page.relative_to(ROOT)} calls {sorted(calls)}: go through core.services"


def test_streamlit_only_in_the_ui_helpers():
    for path in CORE:
        rel = path.relative_to(ROOT)
        if rel.parts[:2] == ("core", "ui"):
            continue
        assert not any(n.split(".")[0] == "streamlit" for n in _imports(path)), f"{rel} imports streamlit"


_SQL = re.compile(r"""["'](\s*)(SELECT|INSERT INTO|UPDATE \w+ SET|DELETE FROM|CREATE TABLE)\b""")


def test_sql_lives_in_the_store():
    for path in [*CORE, *PAGES]:
        rel = path.relative_to(ROOT)
        if rel.parts[:2] == ("core", "store"):
            continue
        hits = [m.group(0) for m in _SQL.finditer(path.read_text())]
        assert not hits, f"{rel} has SQL ({hits[:2]}): it belongs in core/store"
