"""One cache of live carbon answers for every process of a cluster, by source, zone and hour.

The router asks for each zone's intensity on every pass and each worker on every batch, while
the services publish a new value every few minutes at most. Answers are kept under
``ecobatch:carbon:<source>:<kind>:<zone>:<UTC hour>`` in the broker's Redis for
``API_CACHE_TTL_S``, so a zone costs one upstream call per TTL for the whole fleet: the first
process to miss takes a fill lock, asks and stores the answer; the others wait on that lock and
read what it stored. Keys carry the hour, so a new hour is asked for at once, and every key
expires. Without Redis, or while it is unreachable, a bounded in-process cache serves.

A 429 whose ``Retry-After`` is longer than one call should block pauses the source for the
whole cluster: ``ecobatch:carbon:<source>:pause`` lives that long, and until it expires no
process sends that source a request (callers answer their last known value instead).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

import redis
from cachetools import TLRUCache
from redis.exceptions import LockError, RedisError

from pipeline.broker.queue import connect, redact_url
from pipeline.errors import DataSourceError, ServiceError
from pipeline.grid.hourly import hour_start

log = logging.getLogger(__name__)
KEY_PREFIX: Final = "ecobatch:carbon:"
MEMORY_MAX_ENTRIES: Final = 1024
Points = list[tuple[datetime, float]]


class CacheStore(Protocol):
    """Text values with a time to live, and a lock for filling one key."""

    def get(self, key: str) -> str | None:
        """The live value of ``key``, or None."""
        ...

    def put(self, key: str, value: str, ttl_s: float) -> None:
        """Keep ``value`` under ``key`` for ``ttl_s`` seconds."""
        ...

    def fill_lock(self, key: str, wait_s: float) -> AbstractContextManager[object]:
        """Held while one caller fills ``key``; others wait up to ``wait_s`` for it."""
        ...


def _expiry(_key: str, item: tuple[str, float], now: float) -> float:
    return now + item[1]


class MemoryStore:
    """An in-process :class:`CacheStore`: least recently used entries go past ``max_entries``.

    Args:
        max_entries: the bound on entries, expired or not.
        clock: monotonic seconds.
    """

    def __init__(self, max_entries: int = MEMORY_MAX_ENTRIES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._items: TLRUCache[str, tuple[str, float]] = TLRUCache(max_entries, _expiry, clock)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def get(self, key: str) -> str | None:
        """The value of ``key`` if it has not expired."""
        with self._lock:
            item = self._items.get(key)
        return None if item is None else item[0]

    def put(self, key: str, value: str, ttl_s: float) -> None:
        """Keep ``value`` for ``ttl_s`` seconds."""
        with self._lock:
            self._items[key] = (value, ttl_s)

    def fill_lock(self, key: str, wait_s: float) -> AbstractContextManager[object]:
        """No lock: one process asks for a zone at a time."""
        return nullcontext()


class RedisStore:
    """A :class:`CacheStore` in Redis, shared by every process; ``fallback`` serves while Redis
    cannot be reached (one warning per outage).

    Args:
        url: the broker URL (connected on first use, so a forked worker child opens its own).
        fallback: the in-process store.
    """

    def __init__(self, url: str, fallback: MemoryStore) -> None:
        self._url, self.fallback = url, fallback
        self._client: redis.Redis | None = None
        self._down = False

    def _redis(self) -> redis.Redis:
        if self._client is None:
            self._client = connect(self._url)
        return self._client

    def _lost(self, err: Exception) -> None:
        if not self._down:
            log.warning("carbon cache: Redis at %s unreachable (%s); caching in this process "
                        "only", redact_url(self._url), err)
        self._down, self._client = True, None

    def _ok(self) -> None:
        if self._down:
            log.warning("carbon cache: Redis reachable again; the cluster shares answers")
        self._down = False

    def get(self, key: str) -> str | None:
        """The value of ``key`` in Redis (or, while Redis is away, in this process)."""
        try:
            value = self._redis().get(KEY_PREFIX + key)
        except (RedisError, ServiceError) as e:
            self._lost(e)
            return self.fallback.get(key)
        self._ok()
        return None if value is None else str(value)

    def put(self, key: str, value: str, ttl_s: float) -> None:
        """Keep ``value`` for ``ttl_s`` seconds (Redis expires it)."""
        try:
            self._redis().set(KEY_PREFIX + key, value, px=max(1, round(ttl_s * 1000)))
        except (RedisError, ServiceError) as e:
            self._lost(e)
            self.fallback.put(key, value, ttl_s)

    @contextmanager
    def fill_lock(self, key: str, wait_s: float) -> Iterator[object]:
        """A Redis lock that expires after ``wait_s`` (a holder that died frees it); a caller
        that waited that long goes on without it."""
        try:
            lock = self._redis().lock(KEY_PREFIX + key + ":fill", timeout=wait_s,
                                      blocking_timeout=wait_s)
            held = lock.acquire()
        except (RedisError, ServiceError) as e:
            self._lost(e)
            yield None
            return
        try:
            yield lock
        finally:
            if held:  # it may have expired while the answer was fetched: nothing to free
                with suppress(LockError, RedisError):
                    lock.release()


class ZoneHourCache:
    """Points of a source by kind (latest, history, forecast), zone and current UTC hour.

    Args:
        store: where answers live (:class:`RedisStore` for a cluster).
        ttl_s: how long an answer is reused; 0 asks every time (the pause still applies).
        fill_wait_s: longest wait for another process filling the same key.
        clock: timezone-aware UTC now.
    """

    def __init__(self, store: CacheStore, ttl_s: float, fill_wait_s: float = 60.0,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store, self.ttl_s, self.fill_wait_s, self.clock = store, ttl_s, fill_wait_s, clock

    def points(self, source: str, kind: str, zone: str, fetch: Callable[[], Points]) -> Points:
        """The cached answer for ``(source, kind, zone)`` this hour, else ``fetch()``'s.

        Raises:
            DataSourceError: the fetch failed, or the source is paused after a Retry-After.
        """
        if self.ttl_s <= 0:
            return self._fetch(source, fetch)
        key = f"{source}:{kind}:{zone}:{hour_start(self.clock()):%Y%m%dT%H}"
        hit = _decode(self.store.get(key))
        if hit is not None:
            return hit
        with self.store.fill_lock(key, self.fill_wait_s):
            hit = _decode(self.store.get(key))  # filled by another process while this waited
            if hit is not None:
                return hit
            points = self._fetch(source, fetch)
            self.store.put(key, json.dumps([[t.isoformat(), v] for t, v in points]), self.ttl_s)
            return points

    def _fetch(self, source: str, fetch: Callable[[], Points]) -> Points:
        paused = self.store.get(f"{source}:pause")
        if paused is not None:
            raise DataSourceError(f"{source}: not asked until {paused}, as its Retry-After "
                                  "said", status=429)
        try:
            return fetch()
        except DataSourceError as e:
            if e.retry_after_s:
                until = self.clock() + timedelta(seconds=e.retry_after_s)
                self.store.put(f"{source}:pause", f"{until:%Y-%m-%dT%H:%M:%SZ}",
                               e.retry_after_s)
            raise


def _decode(raw: str | None) -> Points | None:
    if raw is None:
        return None
    try:
        data: Any = json.loads(raw)
        return [(datetime.fromisoformat(t), float(v)) for t, v in data]
    except (ValueError, TypeError) as e:
        log.warning("carbon cache: unreadable entry ignored (%s)", e)
        return None


def uncached() -> ZoneHourCache:
    """A cache that stores nothing (each read asks the service) but still honours a pause."""
    return ZoneHourCache(MemoryStore(), ttl_s=0.0)


def cache_from_settings(settings: Any) -> ZoneHourCache:
    """The cluster's cache in the broker's Redis where ``settings.redis_url`` is set, else one
    in this process; entries live ``settings.api_cache_ttl_s``."""
    memory = MemoryStore()
    store: CacheStore = RedisStore(settings.redis_url, memory) if settings.redis_url else memory
    fill_wait_s = (settings.api_timeout_s * (settings.api_retries + 1)
                   + settings.api_backoff_s * 2 ** settings.api_retries)
    return ZoneHourCache(store, settings.api_cache_ttl_s, max(1.0, fill_wait_s))
