"""A small JSON-over-HTTP client for the data services: timeouts, retry with backoff, a cache.

Standard library only (``urllib``): the data services need a handful of GETs, not a client
library. Transient failures (timeouts, connection errors, HTTP 429 and 5xx) are retried with
exponential backoff; other HTTP errors (401/403: a key or a plan that does not allow the call,
404) are raised at once as :class:`~pipeline.errors.DataSourceError` with their status.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import DataSourceError


def _transient(status: int) -> bool:
    return status == 429 or status >= 500


@dataclass
class HttpJson:
    """GET JSON with a per-request timeout, retries and a time-to-live cache.

    Attributes:
        timeout_s: socket timeout of one attempt.
        retries: attempts after the first one for a transient failure.
        backoff_s: wait before the first retry; doubled before each next one.
        cache_ttl_s: seconds a successful answer is reused for the same URL and headers.
        sleep: how to wait (tests pass a recorder).
        clock: monotonic clock for the cache.
    """

    timeout_s: float = 10.0
    retries: int = 3
    backoff_s: float = 1.0
    cache_ttl_s: float = 300.0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    _cache: dict[str, tuple[float, Any]] = field(default_factory=dict, repr=False)

    def get(self, url: str, params: Mapping[str, Any] | None = None,
            headers: Mapping[str, str] | None = None) -> Any:
        """The decoded JSON body of ``GET url?params``.

        Raises:
            DataSourceError: a non-transient HTTP error, or a transient one after every retry,
                or a body that is not JSON.
        """
        full = url + ("?" + urllib.parse.urlencode(params) if params else "")
        key = full + "|" + repr(sorted((headers or {}).items()))
        hit = self._cache.get(key)
        if hit is not None and self.clock() - hit[0] < self.cache_ttl_s:
            return hit[1]
        body = self._with_retries(full, dict(headers or {}))
        self._cache[key] = (self.clock(), body)
        return body

    def _with_retries(self, url: str, headers: dict[str, str]) -> Any:
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                return self._once(url, headers)
            except DataSourceError as e:
                if (e.status is not None and not _transient(e.status)) or attempt == self.retries:
                    raise
            self.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")  # the loop returns or raises

    def _once(self, url: str, headers: dict[str, str]) -> Any:
        request = urllib.request.Request(url, headers={"Accept": "application/json", **headers})
        where = urllib.parse.urlsplit(url)
        name = f"{where.netloc}{where.path}"
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as e:
            raise DataSourceError(f"{name}: HTTP {e.code} {e.reason}", status=e.code) from e
        except TimeoutError as e:
            raise DataSourceError(f"{name}: timed out after {self.timeout_s} s") from e
        except (urllib.error.URLError, OSError) as e:
            raise DataSourceError(f"{name}: {e}") from e
        try:
            return json.loads(raw)
        except ValueError as e:
            raise DataSourceError(f"{name}: not JSON: {e}") from e
