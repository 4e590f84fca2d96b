"""A small JSON-over-HTTP client for the data services: timeouts, and retry with backoff.

Standard library only (``urllib``): the data services need a handful of GETs, not a client
library. Transient failures (timeouts, connection errors, HTTP 429 and 5xx) are retried with
exponential backoff; other HTTP errors (401/403: a key or a plan that does not allow the call,
404) are raised at once as :class:`~pipeline.errors.DataSourceError` with their status.

A ``Retry-After`` header (seconds or an HTTP-date) on a 429 or 503 replaces the backoff: the
client waits what the service asked, never less. When the service asks for longer than
``max_retry_wait_s`` the client does not block its caller that long: it gives up at once and
the error carries ``retry_after_s``, which the carbon cache (:mod:`pipeline.grid.carbon_cache`) turns
into a pause of the whole cluster's requests. Answers are cached there, by zone and hour, not
here by URL.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from email.utils import parsedate_to_datetime
from typing import Any

from pipeline.errors import DataSourceError


def _transient(status: int) -> bool:
    return status == 429 or status >= 500


def retry_after_s(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header value: delta-seconds or an HTTP-date.

    Returns:
        The wait (0 for a date already past), or None without a usable value.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; parsedate leaves "-0000" naive
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


@dataclass
class HttpJson:
    """GET JSON with a per-request timeout and retries that honour ``Retry-After``.

    Attributes:
        timeout_s: socket timeout of one attempt.
        retries: attempts after the first one for a transient failure.
        backoff_s: wait before the first retry; doubled before each next one.
        max_retry_wait_s: the longest ``Retry-After`` waited for inside one call; a longer one
            ends the call at once with ``DataSourceError.retry_after_s`` set.
        sleep: how to wait (tests pass a recorder).
        wall_clock: the current time, for ``Retry-After`` dates.
    """

    timeout_s: float = 10.0
    retries: int = 3
    backoff_s: float = 1.0
    max_retry_wait_s: float = 30.0
    sleep: Callable[[float], None] = time.sleep
    wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def get(self, url: str, params: Mapping[str, Any] | None = None,
            headers: Mapping[str, str] | None = None) -> Any:
        """The decoded JSON body of ``GET url?params``.

        Raises:
            DataSourceError: a non-transient HTTP error, a transient one after every retry or
                with a ``Retry-After`` beyond ``max_retry_wait_s``, or a body that is not JSON.
        """
        full = url + ("?" + urllib.parse.urlencode(params) if params else "")
        return self._with_retries(full, dict(headers or {}))

    def _with_retries(self, url: str, headers: dict[str, str]) -> Any:
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                return self._once(url, headers)
            except DataSourceError as e:
                wait_s = self._wait_before_retry(e, attempt, delay)
            self.sleep(wait_s)
            delay *= 2
        raise AssertionError("unreachable")  # the loop returns or raises

    def _wait_before_retry(self, err: DataSourceError, attempt: int, backoff_s: float) -> float:
        """The wait before the next attempt: ``Retry-After`` where given, else the backoff;
        re-raises ``err`` where there is to be no next attempt."""
        if (err.status is not None and not _transient(err.status)) or attempt == self.retries:
            raise err
        if err.retry_after_s is None:
            return backoff_s
        if err.retry_after_s > self.max_retry_wait_s:
            raise err  # not worth blocking the caller: the carbon cache pauses the cluster
        return err.retry_after_s

    def _once(self, url: str, headers: dict[str, str]) -> Any:
        request = urllib.request.Request(url, headers={"Accept": "application/json", **headers})
        where = urllib.parse.urlsplit(url)
        name = f"{where.netloc}{where.path}"
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as e:
            raise self._http_error(name, e) from e
        except TimeoutError as e:
            raise DataSourceError(f"{name}: timed out after {self.timeout_s} s") from e
        except (urllib.error.URLError, OSError) as e:
            raise DataSourceError(f"{name}: {e}") from e
        try:
            return json.loads(raw)
        except ValueError as e:
            raise DataSourceError(f"{name}: not JSON: {e}") from e

    def _http_error(self, name: str, e: urllib.error.HTTPError) -> DataSourceError:
        headers: Message | None = e.headers
        asked = retry_after_s(headers.get("Retry-After") if headers else None, self.wall_clock())
        after = f" (Retry-After {asked:.0f} s)" if asked is not None else ""
        return DataSourceError(f"{name}: HTTP {e.code} {e.reason}{after}", status=e.code,
                               retry_after_s=asked)
