"""The fleet's state as gauges, read by the router now and then (``router.service``): pending
prompts, each device's backlog and heartbeat age, each zone's intensity, dead letters and
deferred jobs. One grouped query and two counts in SQL, one pipelined round trip to Redis.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import datetime

import redis
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from pipeline.broker.alive import alive_key
from pipeline.broker.queue import PENDING_KEY
from pipeline.errors import EcobatchError, ServiceError
from pipeline.fleet.devices import Registry
from pipeline.grid.trace import CarbonSource
from pipeline.ledger.models import Batch, BatchStatus, Job, JobStatus
from pipeline.metrics.defs import Metrics

log = logging.getLogger(__name__)
GAUGES_EVERY_S = 2.0
"""How often the router refreshes the gauges (a scrape every 15 s sees at most this old)."""
_QUEUED = (BatchStatus.DISPATCHED, BatchStatus.RUNNING)


@dataclass
class FleetState:
    """What the gauges show, read at one moment."""

    pending_prompts: int = 0
    backlog: dict[str, tuple[int, float]] = field(default_factory=dict)
    heartbeat_age_s: dict[str, float] = field(default_factory=dict)
    intensity_g_per_kwh: dict[str, float] = field(default_factory=dict)
    dead_batches: int = 0
    deferred_jobs: int = 0


def read_ledger(engine: Engine, state: FleetState, devices: list[str]) -> None:
    """Backlog per device (batches and predicted seconds), dead letters and deferred jobs.

    Raises:
        ServiceError: the database cannot be read.
    """
    b = Batch.__table__.c  # type: ignore[attr-defined]
    backlog = (select(b.device, func.count(), func.coalesce(func.sum(b.predicted_latency_s), 0.0))
               .where(b.status.in_(_QUEUED)).group_by(b.device))
    dead = select(func.count()).select_from(Batch).where(b.status == BatchStatus.DEAD)
    deferred = select(func.count()).select_from(Job).where(
        Job.__table__.c.status == JobStatus.DEFERRED)  # type: ignore[attr-defined]
    try:
        with engine.connect() as conn:
            queued = {str(d): (int(n), float(s)) for d, n, s in conn.execute(backlog)}
            state.dead_batches = int(conn.execute(dead).scalar_one())
            state.deferred_jobs = int(conn.execute(deferred).scalar_one())
    except SQLAlchemyError as e:
        raise ServiceError(f"cannot read the fleet's state for metrics: {e}") from e
    state.backlog = {d: queued.get(d, (0, 0.0)) for d in devices}


def read_broker(client: redis.Redis, state: FleetState, devices: list[str], ttl_s: float) -> None:
    """Pending prompts, and each device's heartbeat age: ``ttl_s`` less its key's time to live
    (the worker sets the key to live ``ttl_s`` at each beat); +Inf where no worker beats.

    Raises:
        ServiceError: Redis cannot be read.
    """
    try:
        with client.pipeline(transaction=False) as pipe:
            pipe.llen(PENDING_KEY)
            for d in devices:
                pipe.pttl(alive_key(d))
            pending, *ttls_ms = pipe.execute()
    except redis.RedisError as e:
        raise ServiceError(f"cannot read the fleet's state for metrics: {e}") from e
    state.pending_prompts = int(pending)
    state.heartbeat_age_s = {d: max(0.0, ttl_s - ms / 1000) if ms >= 0 else math.inf
                             for d, ms in zip(devices, ttls_ms, strict=True)}


def read_intensity(carbon: CarbonSource, registry: Registry, state: FleetState,
                   now: datetime) -> None:
    """Each zone's intensity now; a zone whose source fails is left out (logged at DEBUG)."""
    for zone in sorted({d.zone for d in registry.devices if d.zone}):
        try:
            state.intensity_g_per_kwh[zone] = carbon.intensity_g_per_kwh(zone, now)
        except EcobatchError as e:  # the route pass reports grid failures itself
            log.debug("no intensity for zone %s: %s", zone, e)


def set_gauges(metrics: Metrics, state: FleetState) -> None:
    """Show ``state``."""
    metrics.pending.set(state.pending_prompts)
    for device, (n, seconds) in state.backlog.items():
        metrics.backlog_batches.labels(device).set(n)
        metrics.backlog_seconds.labels(device).set(seconds)
    for device, age_s in state.heartbeat_age_s.items():
        metrics.heartbeat_age.labels(device).set(age_s)
    for zone, value in state.intensity_g_per_kwh.items():
        metrics.intensity.labels(zone).set(value)
    metrics.dead_batches.set(state.dead_batches)
    metrics.deferred_jobs.set(state.deferred_jobs)
