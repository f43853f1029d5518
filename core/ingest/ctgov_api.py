"""A polite client for the ClinicalTrials.gov API v2 (stdlib HTTP): rate limited, retrying 429 (honouring
Retry-After), 5xx, timeouts and dropped or reset connections with exponential backoff.

Only what `fetch-ctgov` needs: pages of studies by id (`GET /studies?filter.ids=...&pageSize=N`, following
`nextPageToken`), one study (`GET /studies/{nctId}`, None on 404) and a quick reachability probe.
"""
from __future__ import annotations

import http.client
import json
import random
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Callable, Iterator

DEFAULT_RATE = 0.8          # requests per second: under the public API's ~50 requests per minute
USER_AGENT = "ctgen-workbench/1.0 (fetch-ctgov)"
MAX_RETRY_AFTER_S = 300.0   # a longer Retry-After is treated as an outage (the attempt fails)


class FetchError(RuntimeError):
    """A request that still failed after every retry (or a reply that is not API v2 JSON)."""


class ApiClient:
    def __init__(self, base_url: str, rate: float = DEFAULT_RATE, timeout: float = 30.0, retries: int = 6,
                 backoff_s: float = 1.0, sleep: Callable[[float], None] = time.sleep,
                 log: Callable[[str], None] | None = None):
        if rate <= 0:
            raise ValueError("rate must be > 0 requests per second")
        self.base_url = base_url.rstrip("/")
        self.interval = 1.0 / rate
        self.timeout, self.retries, self.backoff_s = timeout, retries, backoff_s
        self.sleep, self.log = sleep, log or (lambda msg: None)
        self.requests = 0          # HTTP requests sent, retries included
        self._next_at = 0.0
        self._lock = threading.Lock()

    def _wait_turn(self) -> None:
        with self._lock:
            now = time.monotonic()
            wait = self._next_at - now
            self._next_at = max(now, self._next_at) + self.interval
        if wait > 0:
            self.sleep(wait)

    def _delay(self, attempt: int) -> float:
        return self.backoff_s * (2 ** attempt) * random.uniform(0.8, 1.2)

    def get(self, path: str, params: dict[str, str] | None = None) -> dict | None:
        """GET base/path?params as JSON; None on 404. Raises FetchError once the retries are spent."""
        url = f"{self.base_url}/{path.lstrip('/')}"
        if params:
            url += "?" + urllib.parse.urlencode(params, safe=",")
        last = ""
        for attempt in range(self.retries + 1):
            self._wait_turn()
            self.requests += 1
            wait: float | None = None
            try:
                req = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": USER_AGENT})
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    body = resp.read()
                try:
                    return json.loads(body)
                except ValueError as exc:
                    last = f"reply is not JSON ({exc})"   # e.g. a body cut short: worth another try
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    return None
                last = f"HTTP {exc.code}"
                if exc.code == 429:
                    wait = _retry_after(exc.headers.get("Retry-After"))
                    if wait is not None and wait > MAX_RETRY_AFTER_S:
                        raise FetchError(f"{url}: HTTP 429 with Retry-After {wait:.0f} s") from None
                elif exc.code < 500:
                    raise FetchError(f"{url}: HTTP {exc.code} {exc.reason}") from None
            except (urllib.error.URLError, http.client.HTTPException, ConnectionError, socket.timeout,
                    TimeoutError, OSError) as exc:
                last = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
            if attempt == self.retries:
                break
            wait = wait if wait is not None else self._delay(attempt)
            self.log(f"{url}: {last}; retrying in {wait:.1f} s")
            self.sleep(wait)
        raise FetchError(f"{url}: failed after {self.retries + 1} attempts ({last})")

    def study(self, nct_id: str) -> dict | None:
        doc = self.get(f"studies/{nct_id}")
        if doc is not None and not isinstance(doc, dict):
            raise FetchError(f"{self.base_url}/studies/{nct_id}: reply is not a study object")
        return doc

    def study_pages(self, nct_ids: list[str], page_size: int) -> Iterator[list[dict]]:
        """Pages of studies for these ids (upstream leaves out ids it does not hold)."""
        params = {"filter.ids": ",".join(nct_ids), "pageSize": str(page_size), "format": "json"}
        token = None
        while True:
            doc = self.get("studies", {**params, **({"pageToken": token} if token else {})})
            if not isinstance(doc, dict) or not isinstance(doc.get("studies"), list):
                raise FetchError(f"{self.base_url}/studies: reply is not a page of studies")
            yield doc["studies"]
            token = doc.get("nextPageToken")
            if not token:
                return


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the delta form; an HTTP date is converted)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def probe(base_url: str, timeout: float = 2.0) -> tuple[bool, str]:
    """Whether the API answers within `timeout` seconds: (ok, what was seen), one request, no retries."""
    url = f"{base_url.rstrip('/')}/version"
    try:
        req = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": USER_AGENT})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            doc = json.loads(resp.read())
        return True, f"API {doc.get('apiVersion', '?')}, data of {doc.get('dataTimestamp', '?')}"
    except urllib.error.HTTPError as exc:
        return False, f"{url} answered HTTP {exc.code}"
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        return False, f"{url} is not reachable ({getattr(exc, 'reason', exc)})"
