"""The plain function behind the Celery task ``ecobatch.route``.

The task passes its process context and a publisher; this module keeps the fitted predictor in
the context's cache (refitted every ``PREDICTOR_REFRESH_S`` so new ``ecobatch bench`` profiles
are picked up without a restart) and now and then republishes batches lost between commit and
publish.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, Protocol

import redis
from sqlalchemy import Engine

from pipeline.devices import Registry
from pipeline.grid import GridConditions
from pipeline.heartbeat import alive_devices
from pipeline.settings import Settings
from router.deferral import Planning, plan_pass
from router.liveness import move_from_dead
from router.memory import memory_need
from router.planner import Forecast
from router.predictor import Predictor
from router.profiled import load_predictor
from router.reconcile import republish_stale
from router.recovery import recover_if_reset
from router.route import PublishMany, RouteEnv, route_once

PREDICTOR_REFRESH_S = 60.0
_PREDICTOR_KEY = "router.predictor"
_RECONCILED_KEY = "router.reconciled_at"
_PLANNED_KEY = "router.planned_at"
_ENV_KEY = "router.env"




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
    def grid(self) -> GridConditions:
        """Grid intensity, price and temperature by zone."""
        ...

    @property
    def forecast(self) -> Forecast:
        """Forecast grid intensity for the planner."""
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
    """One router beat: plan and release deferred jobs, move batches off dead devices, route.

    Every ``planner_interval_s`` the planner (:func:`router.deferral.plan_pass`) runs first.
    Devices without a live worker heartbeat are never chosen, and their queued batches are
    routed again. The router that held the lock also republishes, at most once per visibility
    timeout, batches dispatched more than a visibility timeout ago that still have no result.

    Raises:
        ConfigError: bad strategy or empty registry.
        ServiceError: Redis or the database failed.
    """
    s = ctx.settings
    predictor = cached_predictor(ctx)
    now = datetime.now(UTC)
    out: dict[str, Any] = {}
    if _due(ctx, _PLANNED_KEY, s.planner_interval_s):
        planning = Planning(ctx.registry, predictor, ctx.forecast, s, ctx.grid)
        out["planner"] = plan_pass(ctx.engine, ctx.redis, planning, now).as_dict()
    recovered = recover_if_reset(ctx.engine, ctx.redis, publish, s.task_time_limit_s)
    if recovered is not None:  # first start, or Redis lost its data: restore it from SQL
        out["recovered"] = recovered.as_dict()
        out["republished"] = recovered.batches  # every unfinished batch: the periodic
        ctx.cache[_RECONCILED_KEY] = time.monotonic()  # republish is not due again yet
    alive = alive_devices(ctx.redis, ctx.registry.names)
    out["moved"] = move_from_dead(ctx.engine, ctx.redis, set(ctx.registry.names) - alive)
    report = route_once(s, ctx.engine, ctx.redis, ctx.registry, predictor, ctx.grid, publish,
                        env=_env(ctx, alive))
    out.update(report.as_dict())
    if not report.locked_out and _due(ctx, _RECONCILED_KEY, s.visibility_timeout_s):
        out["republished"] = republish_stale(ctx.engine, publish, s.visibility_timeout_s)
    return out


def _env(ctx: RouterContext, alive: set[str]) -> RouteEnv:
    """This call's route environment; strategy state and memory sizing persist in the cache."""
    kept = ctx.cache.get(_ENV_KEY)
    if kept is None:
        kept = RouteEnv(memory_need=memory_need(ctx.settings))
        ctx.cache[_ENV_KEY] = kept
    return RouteEnv(alive=alive, memory_need=kept.memory_need, strategies=kept.strategies)


def _due(ctx: RouterContext, key: str, every_s: float) -> bool:
    """True (and the clock reset) when ``every_s`` passed since the last time, or never ran."""
    last = ctx.cache.get(key)
    if last is not None and time.monotonic() - last <= every_s:
        return False
    ctx.cache[key] = time.monotonic()
    return True
