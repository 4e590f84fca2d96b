"""``ecobatch health``: one look at a running cluster, each part judged healthy or not.

Checks, each with what it read:

- ``broker``: Redis answers ``PING``; the prompts pending for the router (``ecobatch:pending``).
- ``ledger``: SQL answers ``SELECT 1`` and its schema revision is this ecobatch's head.
- ``router``: a Celery worker named ``router@...`` answers a remote-control ping.
- ``device <name>``, for every device of the registry: its heartbeat key
  (``ecobatch:alive:<name>``) exists, and how old the last beat is; its backlog (messages
  waiting in ``device.<name>``, batches dispatched or running in SQL, their predicted
  seconds); optionally judged against ``max_backlog_s``.
- ``dead letters``: batches dead-lettered within the last ``dead_window_s``, at most
  ``max_dead``.

An entry point module: it may name the Celery app and the router's backlog reader.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any

import redis
from redis.exceptions import RedisError
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import SQLAlchemyError

from pipeline.broker.alive import alive_key
from pipeline.broker.queue import PENDING_KEY, connect, pending_count
from pipeline.errors import ServiceError
from pipeline.fleet.devices import Device
from pipeline.ledger.db import connect_engine
from pipeline.ledger.migrations import HEAD_REVISION
from pipeline.ledger.models import Batch, BatchStatus, utc_now
from pipeline.ledger.schema import LedgerState, read_revision
from pipeline.settings import Settings

PING_TIMEOUT_S = 2.0
"""How long the router has to answer the remote-control ping."""


@dataclass(frozen=True)
class Limits:
    """What ``health`` tolerates."""

    dead_window_s: float = 3600.0
    max_dead: int = 0
    max_backlog_s: float | None = None


@dataclass
class Check:
    """One part of the cluster: healthy or not, why, and the figures read."""

    name: str
    ok: bool
    detail: str
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Report:
    """Every check; the cluster is healthy when every check is."""

    checks: list[Check]

    @property
    def healthy(self) -> bool:
        """True when every check passed."""
        return all(c.ok for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"healthy": bool, "checks": [{name, ok, detail, ...figures}]}``."""
        return {"healthy": self.healthy,
                "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail, **c.figures}
                           for c in self.checks]}


def check_cluster(settings: Settings, devices: list[Device], limits: Limits) -> Report:
    """Run every check against the cluster ``settings`` names; never raises for a part that
    is down (that part's check fails instead)."""
    engine = connect_engine(settings.database_url)
    try:
        ledger = _guard("ledger", lambda: check_ledger(engine))
        dead = _guard("dead letters", lambda: check_dead_letters(engine, limits))
        try:
            client = connect(settings.require_redis_url())
        except ServiceError as e:
            away = [Check(name, False, "not checked: the broker is unreachable")
                    for name in ("router", *(f"device {d.name}" for d in devices))]
            return Report([Check("broker", False, f"unreachable: {e}"), ledger, *away, dead])
        try:
            return Report([_guard("broker", lambda: check_broker(client)), ledger,
                           _guard("router", lambda: check_router(settings)),
                           *_device_checks(client, engine, devices, settings, limits), dead])
        finally:
            client.close()
    finally:
        engine.dispose()


def _device_checks(client: redis.Redis, engine: Engine, devices: list[Device],
                   settings: Settings, limits: Limits) -> list[Check]:
    return [_guard(f"device {d.name}", partial(check_device, client, engine, d, settings, limits))
            for d in devices]


def _guard(name: str, run: Callable[[], Check]) -> Check:
    """A check whose service is away fails with the reason instead of stopping the rest."""
    try:
        return run()
    except (RedisError, SQLAlchemyError, OSError) as e:
        return Check(name, False, f"unreachable: {type(e).__name__}: {e}")


def check_broker(client: redis.Redis) -> Check:
    """Redis answers PING; the figures are the round trip and the prompts pending."""
    start = time.perf_counter()
    client.ping()
    rtt_ms = (time.perf_counter() - start) * 1000
    pending = pending_count(client, PENDING_KEY)
    return Check("broker", True, f"PING {rtt_ms:.1f} ms; {pending} prompts pending",
                 {"ping_ms": round(rtt_ms, 3), "pending_prompts": pending})


def check_ledger(engine: Engine) -> Check:
    """SQL answers and the ledger's revision is head."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
        found = read_revision(conn)
    ok = found.state is LedgerState.HEAD
    detail = (f"revision {found.revision} (head)" if ok else
              f"revision {found.revision or 'none'} ({found.state.value}); head is "
              f"{HEAD_REVISION}: run `ecobatch db upgrade`")
    return Check("ledger", ok, detail, {"revision": found.revision, "state": found.state.value})


def check_router(settings: Settings) -> Check:
    """A worker named ``router@...`` answers a remote-control ping within PING_TIMEOUT_S."""
    from pipeline.app.celery_app import create_app

    app = create_app(settings)
    try:
        replies = app.control.ping(timeout=PING_TIMEOUT_S)
    finally:
        app.close()
    routers = sorted(name for reply in replies for name in reply if name.startswith("router@"))
    detail = f"answered: {', '.join(routers)}" if routers else (
        f"no router answered a ping within {PING_TIMEOUT_S:g} s")
    return Check("router", bool(routers), detail, {"routers": routers})


def check_device(client: redis.Redis, engine: Engine, device: Device, settings: Settings,
                 limits: Limits) -> Check:
    """The device's heartbeat and backlog."""
    age_s = heartbeat_age_s(client, device.name, settings.heartbeat_ttl_s)
    backlog = device_backlog(client, engine, device)
    figures: dict[str, Any] = {"heartbeat_age_s": age_s, **backlog}
    name = f"device {device.name}"
    if age_s is None:
        return Check(name, False, f"no heartbeat (none within {settings.heartbeat_ttl_s:g} s): "
                                  f"no live worker; {_backlog_text(backlog)}", figures)
    over = limits.max_backlog_s is not None and backlog["backlog_s"] > limits.max_backlog_s
    detail = f"heartbeat {age_s:.1f} s ago; {_backlog_text(backlog)}"
    if over:
        detail += f" > limit {limits.max_backlog_s:g} s"
    return Check(name, not over, detail, figures)


def heartbeat_age_s(client: redis.Redis, device: str, ttl_s: float) -> float | None:
    """Seconds since the device's last beat (each beat sets the key for ``ttl_s``), or None
    when the key has expired or never existed."""
    left_ms = int(client.pttl(alive_key(device)))
    if left_ms < 0:  # -2: no key; -1: no expiry, which a beat never leaves
        return None if left_ms == -2 else 0.0
    return round(max(0.0, ttl_s - left_ms / 1000), 3)


def device_backlog(client: redis.Redis, engine: Engine, device: Device) -> dict[str, Any]:
    """Messages waiting in the device's Celery queue, batches dispatched or running in SQL
    and their predicted seconds."""
    from router.live.backlog import QUEUED_STATUSES

    batch = Batch.__table__.c  # type: ignore[attr-defined]
    stmt = (select(func.count(), func.coalesce(func.sum(batch.predicted_latency_s), 0.0))
            .where(batch.device == device.name, batch.status.in_(QUEUED_STATUSES)))
    with engine.connect() as conn:
        n_batches, backlog_s = conn.execute(stmt).one()
    return {"queued_messages": int(client.llen(device.queue)), "open_batches": int(n_batches),
            "backlog_s": round(float(backlog_s), 3)}


def _backlog_text(backlog: dict[str, Any]) -> str:
    return (f"{backlog['queued_messages']} queued, {backlog['open_batches']} open batches, "
            f"backlog {backlog['backlog_s']:.1f} s")


def check_dead_letters(engine: Engine, limits: Limits) -> Check:
    """Batches dead-lettered within the window, against the limit."""
    batch = Batch.__table__.c  # type: ignore[attr-defined]
    since = utc_now() - timedelta(seconds=limits.dead_window_s)
    stmt = select(func.count()).where(batch.status == BatchStatus.DEAD, batch.finished_at >= since)
    with engine.connect() as conn:
        n_dead = int(conn.execute(stmt).scalar_one())
    ok = n_dead <= limits.max_dead
    return Check("dead letters", ok, f"{n_dead} batches dead-lettered in the last "
                                     f"{limits.dead_window_s:g} s (limit {limits.max_dead})",
                 {"dead_batches": n_dead, "window_s": limits.dead_window_s})
