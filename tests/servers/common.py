"""What the local stand-in servers share (OpenAI-compatible, OpenAI Batch API, ClinicalTrials.gov API v2):
a threaded HTTP server that carries the stand-in's state, run in a background thread for a `with` block,
or in the foreground from the command line."""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, ContextManager, Iterator


class StateServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], handler: type[BaseHTTPRequestHandler], state: Any):
        super().__init__(addr, handler)
        self.state = state


@contextmanager
def running(server: StateServer, on_stop: Callable[[], None] | None = None) -> Iterator[StateServer]:
    """Serve in a daemon thread for the block; `on_stop` runs first on the way out (e.g. to release
    handlers that hang on purpose)."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        if on_stop:
            on_stop()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def serve_until_interrupted(cm: ContextManager[Any], banner: Callable[[Any], str]) -> int:
    """The command-line form: start, print the banner, serve until Ctrl-C."""
    with cm as srv:
        print(banner(srv), flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0
