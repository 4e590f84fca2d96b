"""The plain function behind the Celery task ``ecobatch.route``.

The task passes its process context and a publisher; this module keeps the fitted predictor in
the process's :class:`RouterState` (refitted every ``PREDICTOR_REFRESH_S`` so new ``ecobatch
bench`` profiles are picked up without a restart) and now and then republishes batches lost
between commit and publish.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import redis
from sqlalchemy import Engine

from pipeline.broker.alive import alive_devices
from pipeline.fleet.devices import Registry
from pipeline.grid.trace import GridConditions
from pipeline.metrics.defs import Metrics
from pipeline.metrics.gauges import (
    GAUGES_EVERY_S,
    FleetState,
    read_broker,
    read_intensity,
    read_ledger,
    set_gauges,
)
from pipeline.outage import Outages, failure_kind
from router.config import RouterConfig
from router.deferral.planner import Forecast
from router.deferral.release import Planning, plan_pass
from router.live.liveness import move_from_dead
from router.live.memory import memory_need
from router.live.route import PublishMany, RouteEnv, route_once
from router.predict.permodel import load_model_predictors
from router.predict.predictor import Predictor
from router.recovery.lostwork import LostWorkerWatch, take_back_lost
from router.recovery.recovery import recover_if_reset
from router.recovery.requeue import republish_stale

PREDICTOR_REFRESH_S = 60.0
log = logging.getLogger(__name__)


@dataclass
class Every:
    """A period: due when ``every_s`` passed since it last ran, or when it never ran."""

    last: float | None = None
    """When it last ran, in monotonic seconds."""

    def due(self, every_s: float) -> bool:
        """True (and the clock reset) when ``every_s`` passed since the last time."""
        now = time.monotonic()
        if self.last is not None and now - self.last <= every_s:
            return False
        self.last = now
        return True


@dataclass
class RouterState:
    """What a router process keeps from one pass to the next (held by its context)."""

    outages: Outages = field(default_factory=lambda: Outages("router"))
    predictor: Predictor | None = None
    predictor_fitted_at: float = 0.0
    """When the predictor was fitted, in monotonic seconds."""
    env: RouteEnv | None = None
    """Strategy state and memory sizing, kept across passes."""
    lost_watch: LostWorkerWatch | None = None
    planned: Every = field(default_factory=Every)
    reconciled: Every = field(default_factory=Every)
    lost_checked: Every = field(default_factory=Every)
    gauges: Every = field(default_factory=Every)
    metrics: Metrics = field(default_factory=Metrics)
    """This process's Prometheus metrics (served only when a metrics port is set)."""


class RouterContext(Protocol):
    """What the router needs of a process context (``pipeline.app.context.AppContext``)."""

    @property
    def router_config(self) -> RouterConfig:
        """The router's part of the settings."""
        ...

    @property
    def router_state(self) -> RouterState:
        """What this process keeps between passes."""
        ...

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
    state = ctx.router_state
    if state.predictor is None or time.monotonic() - state.predictor_fitted_at > PREDICTOR_REFRESH_S:
        state.predictor = load_model_predictors(ctx.engine, ctx.registry,
                                                ctx.router_config.model)
        state.predictor_fitted_at = time.monotonic()
    return state.predictor


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
    s, state = ctx.router_config, ctx.router_state
    predictor = cached_predictor(ctx)
    now = datetime.now(UTC)
    out: dict[str, Any] = {}
    if state.planned.due(s.planner_interval_s):
        planning = Planning(ctx.registry, predictor, ctx.forecast, s.batch_size, ctx.grid)
        out["planner"] = plan_pass(ctx.engine, ctx.redis, planning, now).as_dict()
    recovered = recover_if_reset(ctx.engine, ctx.redis, publish, s.task_time_limit_s)
    if recovered is not None:  # first start, or Redis lost its data: restore it from SQL
        out["recovered"] = recovered.as_dict()
        out["republished"] = recovered.batches  # every unfinished batch: the periodic
        state.reconciled.last = time.monotonic()  # republish is not due again yet
    if state.lost_checked.due(s.heartbeat_ttl_s / 3):
        if state.lost_watch is None:
            state.lost_watch = LostWorkerWatch(s.heartbeat_ttl_s / 2)
        out["taken_back"] = take_back_lost(ctx.engine, ctx.redis, publish, state.lost_watch)
    alive = alive_devices(ctx.redis, ctx.registry.names)
    out["moved"] = move_from_dead(ctx.engine, ctx.redis, set(ctx.registry.names) - alive)
    report = route_once(s, ctx.engine, ctx.redis, ctx.registry, predictor, ctx.grid, publish,
                        env=_env(ctx, alive))
    out.update(report.as_dict())
    if not report.locked_out and state.reconciled.due(s.visibility_timeout_s):
        out["republished"] = republish_stale(ctx.engine, publish, s.visibility_timeout_s)
    return out


def guarded_route_pass(ctx: RouterContext, publish: PublishMany) -> dict[str, Any]:
    """:func:`route_pass`, quiet and backing off while it keeps failing.

    The beat asks for a pass every ``router_interval_s``; while the database or Redis is
    away (or a pass fails for any reason) one line says so, passes are skipped for a growing
    backoff (1, 2, 4 ... 30 s) instead of failing four times a second, and one line says when
    a pass succeeds again. A pass that did something logs one INFO line; an idle one nothing.
    """
    outages = ctx.router_state.outages
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
    s, kept = ctx.router_config, ctx.router_state
    if not s.metrics_port or not kept.gauges.due(GAUGES_EVERY_S):
        return
    names, state = ctx.registry.names, FleetState()
    read_ledger(ctx.engine, state, names)
    read_broker(ctx.redis, state, names, s.heartbeat_ttl_s)
    read_intensity(ctx.grid, ctx.registry, state, datetime.now(UTC))
    set_gauges(kept.metrics, state)


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
    """This call's route environment; strategy state and memory sizing persist in the state."""
    state = ctx.router_state
    if state.env is None:
        cfg = ctx.router_config
        state.env = RouteEnv(memory_need=memory_need(cfg.model, cfg.n_ctx_per_seq, ctx.redis))
    kept = state.env
    return RouteEnv(alive=alive, memory_need=kept.memory_need, strategies=kept.strategies,
                    grid_warnings=kept.grid_warnings)
