"""Shared fixtures: the real mirror, a store loaded from it once per session, a real
`streamlit run` server and a real headless Chromium (Debian's) driven by Playwright."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("CTGEN_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="session")
def mirror() -> Path:
    from core import config

    path = config.data_mirror()
    assert path and path.is_dir(), "the data mirror is missing: set CTGEN_DATA_MIRROR"
    return path


@pytest.fixture(scope="session")
def mirror_db(tmp_path_factory, mirror) -> Path:
    """The whole mirror loaded once (`sample-data`). Treat as read-only: copy it to write."""
    from core.ingest import sample_data

    db = tmp_path_factory.mktemp("mirror") / "mirror.duckdb"
    sample_data(db)
    return db


@pytest.fixture
def mirror_db_copy(mirror_db, tmp_path) -> Path:
    """A private, writable copy of the mirror store."""
    dst = tmp_path / "store.duckdb"
    shutil.copy(mirror_db, dst)
    return dst


@pytest.fixture(scope="module")
def syn_db(mirror_db, tmp_path_factory) -> Path:
    """The mirror store plus 120 fixture synthetic trials (20 eligible drugs x 3 per label), one per module."""
    from fixtures.finetune.synthetic import insert_synthetic

    db = tmp_path_factory.mktemp("ft-syn") / "store.duckdb"
    shutil.copy(mirror_db, db)
    insert_synthetic(db, per_label=3, n_drugs=20)
    return db


@pytest.fixture
def runs_dir(tmp_path, monkeypatch) -> Path:
    """A private folder for background jobs' files (CTGEN_RUNS_DIR)."""
    d = tmp_path / "runs"
    monkeypatch.setenv("CTGEN_RUNS_DIR", str(d))
    return d


def wait_until(pred, timeout: float, what: str, every: float = 0.3):
    """Poll `pred` until it returns something true (returned), or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StreamlitServer:
    """`streamlit run app.py` on a free localhost port, with the given store."""

    def __init__(self, db: Path, env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(Path(db).with_suffix(f".streamlit-{self.port}.log"), "w")
        full_env = {**os.environ, "CTGEN_DB": str(db), "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"),
             "--server.headless", "true", "--server.port", str(self.port),
             "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none"],
            cwd=ROOT, env=full_env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"streamlit did not start; log: {Path(self.log.name).read_text()[-2000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture
def streamlit_server():
    """Factory: `server = streamlit_server(db_path)`; stopped at the end of the test."""
    started: list[StreamlitServer] = []

    def start(db: Path, env: dict[str, str] | None = None) -> StreamlitServer:
        server = StreamlitServer(db, env)
        started.append(server)
        return server

    yield start
    for s in started:
        s.stop()


@pytest.fixture(scope="session")
def browser():
    """Debian's headless Chromium, driven by Playwright (no browser download)."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (see .ci/run)")
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        yield b
        b.close()


@pytest.fixture
def page(browser):
    """A fresh browser page; wait for Streamlit's rendering with `wait_for_app(page)`."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)
    yield pg
    ctx.close()


def wait_for_app(pg, timeout_ms: int = 60_000) -> None:
    """Wait until Streamlit has finished running the script.

    The app root carries `data-test-script-state` ('initial' before the first run, then 'running' /
    'notRunning'); waiting on it avoids returning before the script has even started.
    """
    pg.wait_for_selector('[data-testid="stApp"]', timeout=timeout_ms)
    pg.wait_for_function(
        """() => {
            const app = document.querySelector('[data-testid="stApp"]');
            return app && app.getAttribute('data-test-script-state') === 'notRunning'
                && !document.querySelector('[data-testid="stStatusWidget"]');
        }""",
        timeout=timeout_ms,
    )
