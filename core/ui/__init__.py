"""Small helpers shared by the Streamlit pages (no SQL here: queries live in core.store)."""
from __future__ import annotations

from pathlib import Path

from core import config

# Page URL paths (Streamlit derives them from the file names in pages/).
PAGES = {
    "Trials": "pages/1_Trials.py",
    "Generate": "pages/2_Generate.py",
    "Synthetic reports": "pages/3_Synthetic_reports.py",
    "Fine-tune": "pages/4_Fine-tune.py",
    "Experiments": "pages/5_Experiments.py",
    "Embeddings": "pages/6_Embeddings.py",
}


def db_path() -> Path:
    """The store the app works on (CTGEN_DB or data/ctgen.duckdb)."""
    return config.db_path()


def trial_url(nct_id: str) -> str:
    """Link to a trial's record view on the Trials page."""
    return f"/Trials?nct={nct_id}"


# ---- store access for pages: short-lived read-only connections, briefly cached results ----

import os  # noqa: E402
from typing import Any  # noqa: E402

import duckdb  # noqa: E402
import streamlit as st  # noqa: E402

from core.store import SchemaError, StoreLocked, connect  # noqa: E402

CACHE_TTL_S = 30  # long enough to make reruns instant, short enough to show a background job's writes
READ_WAIT_S = 5.0  # how long a page waits for a writer (an import) to let go of the store


def store_version(path: str | os.PathLike) -> tuple[int, int]:
    """Changes whenever the store file (or its write-ahead log) is written: part of every cache key."""
    def mtime(p: str) -> int:
        try:
            return os.stat(p).st_mtime_ns
        except FileNotFoundError:
            return 0

    return mtime(str(path)), mtime(str(path) + ".wal")


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False, max_entries=512)
def _cached_query(name: str, db: str, version: tuple[int, int], pref: tuple[str, ...], args: tuple,
                  kwargs: tuple) -> Any:
    import inspect

    from core.store import browse

    fn = getattr(browse, name)
    kw = dict(kwargs)
    if "preference" in inspect.signature(fn).parameters:
        kw.setdefault("preference", list(pref))
    with connect(db, read_only=True, wait_s=READ_WAIT_S) as con:
        return fn(con, *args, **kw)


def query(name: str, *args: Any, **kwargs: Any) -> Any:
    """Run `core.store.browse.<name>(con, *args, **kwargs)` on a short-lived read-only connection,
    cached for CACHE_TTL_S seconds per store file version."""
    db = db_path()
    pref = tuple(config.label_preference())
    return _cached_query(name, str(db), store_version(db), pref, args, tuple(sorted(kwargs.items())))


def store_state(path: str | os.PathLike | None = None) -> tuple[str, str]:
    """('ready' | 'missing' | 'empty' | 'busy' | 'outdated' | 'schema' | 'broken', message) for the store.
    'outdated': written by an older version of the program; upgrade_store() migrates it."""
    db = Path(path) if path else db_path()
    if not db.exists():
        return "missing", f"No store at {db} yet."
    try:
        n = _cached_query("trial_count", str(db), store_version(db), (), (), ())
    except SchemaError as exc:
        return ("outdated" if "older than this program" in str(exc) else "schema"), str(exc)
    except (StoreLocked, duckdb.ConnectionException) as exc:
        # Another process holds the write lock, or this one does (an import started from the app:
        # DuckDB refuses a read-only connection beside a writing one in the same process).
        return "busy", f"The store {db} is being written right now (an import or a background job): {exc}"
    except duckdb.Error as exc:
        return "broken", f"{db} cannot be read as a store: {exc}"
    if n == 0:
        return "empty", f"The store at {db} holds no trials yet."
    return "ready", f"{n:,} trials"


def upgrade_store() -> None:
    """Open the store once for writing, which applies the pending migrations."""
    with connect(db_path(), wait_s=READ_WAIT_S):
        pass
    clear_cache()


def clear_cache() -> None:
    _cached_query.clear()


def sidebar_nav() -> None:
    """The page list (Streamlit's own is hidden in .streamlit/config.toml: it would call the first page "app",
    after the entry script's file name)."""
    from streamlit.errors import StreamlitPageNotFoundError

    try:
        st.sidebar.page_link("app.py", label="Home", icon=":material/home:")
        for name, path in PAGES.items():
            st.sidebar.page_link(path, label=name)
    except StreamlitPageNotFoundError:
        pass   # a page script run on its own (AppTest.from_file of one page) knows no other page


def sidebar_store() -> None:
    """Show the pages and which store the app works on (every page's sidebar)."""
    sidebar_nav()
    st.sidebar.caption("Store")
    st.sidebar.code(str(db_path()), language=None, wrap_lines=True)
    st.sidebar.caption("Label preference on conflict: " + " > ".join(config.label_preference()))


def page(title: str, icon: str, *, page_title: str | None = None, caption: str | None = None,
         home_link: bool = False) -> Path:
    """Every page's header: page config, the store in the sidebar, the title (and caption); then the store
    it works on, or the reason it cannot (and the page stops there)."""
    st.set_page_config(page_title=page_title or title, page_icon=icon, layout="wide")
    sidebar_store()
    st.title(title)
    if caption:
        st.caption(caption)
    state, message = store_state()
    if state != "ready":
        (st.warning if state in ("busy", "missing", "empty") else st.error)(message)
        if home_link:
            st.page_link("app.py", label="Home (load the sample data there)", icon=":material/home:")
        st.stop()
    return db_path()


def label_text(label: int | None) -> str:
    return {1: "success", 0: "failure"}.get(label, "no binary label")
