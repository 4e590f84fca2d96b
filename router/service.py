"""The plain function behind the Celery task ``ecobatch.route``.

The task passes its process context and a publisher; this module keeps the fitted predictor in
the context's cache (refitted every ``PREDICTOR_REFRESH_S`` so new ``ecobatch bench`` profiles
are picked up without a restart) and now and then republishes batches lost between commit and
publish.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any, Protocol

import redis
from sqlalchemy import Engine

from pipeline.broker.alive import alive_devices
from pipeline.fleet.devices import Registry
from pipeline.grid.trace import GridConditions
from pipeline.metrics.defs import metrics_of
from pipeline.metrics.gauges import (
    GAUGES_EVERY_S,
    FleetState,
    read_broker,
    read_intensity,
    read_ledger,
    set_gauges,
)
from pipeline.outage import failure_kind, outages_of
from pipeline.settings import Settings
from router.deferral.planner import Forecast
from router.deferral.release import Planning, plan_pass
from router.live.liveness import move_from_dead
from router.live.memory import memory_need
from router.live.route import PublishMany, RouteEnv, route_once
from router.predict.predictor import Predictor
from router.predict.profiled import load_predictor
from router.recovery.lostwork import LostWorkerWatch, take_back_lost
from router.recovery.recovery import recover_if_reset
from router.recovery.requeue import republish_stale

PREDICTOR_REFRESH_S = 60.0
_PREDICTOR_KEY = "router.predict.predictor"
_RECONCILED_KEY = "router.reconciled_at"
_PLANNED_KEY = "router.planned_at"
_ENV_KEY = "router.env"
_LOST_CHECKED_KEY = "router.lost_checked_at"
_LOST_WATCH_KEY = "router.lost_watch"
_GAUGES_KEY = "router.gauges_at"
log = logging.getLogger(__name__)


class RouterContext(Protocol):
    """What the router needs of a process context (``pipeline.app.context.AppContext``)."""

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

    Every ``planner_interval_s`` the planner (:func:`router.deferral.release.plan_pass`) runs first.
    Every third of ``heartbeat_ttl_s`` running batches of workers whose heartbeat stopped are
    taken back and published again (:mod:`router.recovery.lostwork`). Devices without a live worker
    heartbeat are never chosen, and their queued batches are routed again. The router that
    held the lock also republishes, at most once per visibility timeout, batches dispatched
    more than a visibility timeout ago that still have no result.

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
    if _due(ctx, _LOST_CHECKED_KEY, s.heartbeat_ttl_s / 3):
        watch = ctx.cache.setdefault(_LOST_WATCH_KEY, LostWorkerWatch(s.heartbeat_ttl_s / 2))
        out["taken_back"] = take_back_lost(ctx.engine, ctx.redis, publish, watch)
    alive = alive_devices(ctx.redis, ctx.registry.names)
    out["moved"] = move_from_dead(ctx.engine, ctx.redis, set(ctx.registry.names) - alive)
    report = route_once(s, ctx.engine, ctx.redis, ctx.registry, predictor, ctx.grid, publish,
                        env=_env(ctx, alive))
    out.update(report.as_dict())
    if not report.locked_out and _due(ctx, _RECONCILED_KEY, s.visibility_timeout_s):
        out["republished"] = republish_stale(ctx.engine, publish, s.visibility_timeout_s)
    return out


def guarded_route_pass(ctx: RouterContext, publish: PublishMany) -> dict[str, Any]:
    """:func:`route_pass`, quiet and backing off while it keeps failing.

    The beat asks for a pass every ``router_interval_s``; while the database or Redis is
    away (or a pass fails for any reason) one line says so, passes are skipped for a growing
    backoff (1, 2, 4 ... 30 s) instead of failing four times a second, and one line says when
    a pass succeeds again. A pass that did something logs one INFO line; an idle one nothing.
    """
    outages = outages_of(ctx.cache, "router")
    if not outages.due():
        return {"backing_off": True}
    try:
        out = route_pass(ctx, publish)
        update_gauges(ctx)
    except Exception as e:  # said once by outages; the next pass retries after the backoff
        outages.failed(e)
        return {"failed": failure_kind(e)}
    outages.succeeded()
    if summary := pass_summary(out):
        log.info("%s", summary)
    return out


def update_gauges(ctx: RouterContext) -> None:
    """Refresh the fleet gauges every ``GAUGES_EVERY_S`` while metrics are served.

    Raises:
        ServiceError: Redis or the database failed.
    """
    if not ctx.settings.metrics_port or not _due(ctx, _GAUGES_KEY, GAUGES_EVERY_S):
        return
    names, state = ctx.registry.names, FleetState()
    read_ledger(ctx.engine, state, names)
    read_broker(ctx.redis, state, names, ctx.settings.heartbeat_ttl_s)
    read_intensity(ctx.grid, ctx.registry, state, datetime.now(UTC))
    set_gauges(metrics_of(ctx.cache), state)


def pass_summary(out: dict[str, Any]) -> str:
    """One line on what a pass did, empty when it did nothing."""
    parts = []
    if out.get("batches"):
        devices = ", ".join(f"{d} {n}" for d, n in sorted(out.get("by_device", {}).items()))
        parts.append(f"routed {out['batches']} batches ({out.get('prompts', 0)} prompts: "
                     f"{devices})")
    released = (out.get("planner") or {}).get("released") or []
    for label, n in (("moved off dead devices", out.get("moved")),
                     ("worker lost, redelivering", out.get("taken_back")),
                     ("republished", out.get("republished")),
                     ("deferred jobs released", len(released))):
        if n:
            parts.append(f"{label} {n}")
    return "; ".join(parts)


def _env(ctx: RouterContext, alive: set[str]) -> RouteEnv:
    """This call's route environment; strategy state and memory sizing persist in the cache."""
    kept = ctx.cache.get(_ENV_KEY)
    if kept is None:
        kept = RouteEnv(memory_need=memory_need(ctx.settings, ctx.redis))
        ctx.cache[_ENV_KEY] = kept
    return RouteEnv(alive=alive, memory_need=kept.memory_need, strategies=kept.strategies,
                    grid_warnings=kept.grid_warnings)


def _due(ctx: RouterContext, key: str, every_s: float) -> bool:
    """True (and the clock reset) when ``every_s`` passed since the last time, or never ran."""
    last = ctx.cache.get(key)
    if last is not None and time.monotonic() - last <= every_s:
        return False
    ctx.cache[key] = time.monotonic()
    return True
