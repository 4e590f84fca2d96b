"""Per-process handles built lazily from one Settings object.

A Celery worker forks its pool children after the app is made, so nothing that opens a
connection or loads a model may be built before the first task runs in the child: every
member here is built on first use and cached on the instance (never at module level).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import redis
from sqlalchemy import Engine

from pipeline.db import make_engine
from pipeline.devices import Registry, load_registry
from pipeline.grid import GridTrace
from pipeline.queue import connect
from pipeline.settings import Settings


class AppContext:
    """Engine, Redis client, device registry and grid data of one process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.cache: dict[str, Any] = {}

    @cached_property
    def engine(self) -> Engine:
        """The SQL ledger."""
        return make_engine(self.settings.database_url)

    @cached_property
    def redis(self) -> redis.Redis:
        """Client of the broker's Redis (pending prompt refs live there)."""
        return connect(self.settings.require_redis_url())

    @cached_property
    def registry(self) -> Registry:
        """Devices from the TOML registry, or the detected local machine."""
        return load_registry(self.settings.devices)

    @cached_property
    def grid(self) -> GridTrace:
        """Carbon intensity, price and temperature by zone and hour."""
        return GridTrace()
