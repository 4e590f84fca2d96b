"""The plain function behind the Celery task ``ecobatch.route``.

The task passes its process context and a publisher; this module keeps the fitted predictor in
the context's cache (refitted every ``PREDICTOR_REFRESH_S`` so new ``ecobatch bench`` profiles
are picked up without a restart) and now and then republishes batches lost between commit and
publish.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import redis
from sqlalchemy import Engine

from pipeline.devices import Registry
from pipeline.grid import CarbonSource
from pipeline.settings import Settings
from router.predictor import Predictor
from router.profiled import load_predictor
from router.reconcile import republish_stale
from router.route import PublishMany, route_once

PREDICTOR_REFRESH_S = 60.0
_PREDICTOR_KEY = "router.predictor"
_RECONCILED_KEY = "router.reconciled_at"


class RouterContext(Protocol):
    """What the router needs of a process context (``pipeline.context.AppContext``)."""

    settings: Settings
    cache: dict[str, Any]

    @property
    def engine(self) -> Engine:
        """The SQL ledger."""
        ...

    @property
    def redis(self) -> redis.Redis:
        """The broker's Redis, holding the pending list."""
        ...

    @property
    def registry(self) -> Registry:
        """The devices."""
        ...

    @property
    def grid(self) -> CarbonSource:
        """Grid carbon intensity by zone."""
        ...


def cached_predictor(ctx: RouterContext) -> Predictor:
    """The context's predictor, refitted from SQL when older than ``PREDICTOR_REFRESH_S``."""
    entry = ctx.cache.get(_PREDICTOR_KEY)
    if entry is None or time.monotonic() - entry[0] > PREDICTOR_REFRESH_S:
        entry = (time.monotonic(), load_predictor(ctx.engine, ctx.registry))
        ctx.cache[_PREDICTOR_KEY] = entry
    predictor: Predictor = entry[1]
    return predictor


def route_pass(ctx: RouterContext, publish: PublishMany) -> dict[str, Any]:
    """Route pending prompts once (see :func:`router.route.route_once`); return the report.

    The router that held the lock also republishes, at most once per visibility timeout,
    batches dispatched more than a visibility timeout ago that still have no result.

    Raises:
        ConfigError: bad strategy or empty registry.
        ServiceError: Redis or the database failed.
    """
    s = ctx.settings
    report = route_once(s, ctx.engine, ctx.redis, ctx.registry, cached_predictor(ctx), ctx.grid,
                        publish)
    out = report.as_dict()
    last = ctx.cache.get(_RECONCILED_KEY)
    if not report.locked_out and (last is None
                                  or time.monotonic() - last > s.visibility_timeout_s):
        ctx.cache[_RECONCILED_KEY] = time.monotonic()
        out["republished"] = republish_stale(ctx.engine, publish, s.visibility_timeout_s)
    return out
