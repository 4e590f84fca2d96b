"""The Celery bootstep that keeps a device worker's heartbeat alive and watches its database.

It runs on the worker's timer in the main process, which stays responsive while a pool child
decodes, so a long batch never looks like a dead worker. On each beat it also checks, now and
then, that the ledger answers (``SELECT 1`` over a connection of its own), so that a worker
whose database is away says so (once, through :class:`pipeline.outage.Outages`) even while
no batch reaches it, and says when it is back.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import bootsteps
from redis.exceptions import RedisError
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from pipeline.broker.alive import beat, hold_identity, stop_beating
from pipeline.ledger.db import normalise_url
from pipeline.outage import Outages

log = logging.getLogger(__name__)
PROBE_EVERY_S = 30.0
"""How often a healthy worker checks its database (a failing one: by the outage backoff)."""
PROBE_TIMEOUT_S = 5


def probe_engine(url: str) -> Engine:
    """An engine that keeps no connection open (nothing for a forked pool child to inherit)
    and gives up connecting after :data:`PROBE_TIMEOUT_S`, so a beat never stalls long."""
    url = normalise_url(url)
    args = {"connect_timeout": PROBE_TIMEOUT_S} if url.startswith("postgresql") else {}
    return create_engine(url, poolclass=NullPool, connect_args=args)


class Health:
    """Heartbeats and database checks of one worker process, each failure said once."""

    def __init__(self, device: str, ttl_s: float, identity: str, database_url: str) -> None:
        self.device, self.ttl_s, self.identity = device, ttl_s, identity
        self.outages = Outages(f"worker {device}")
        self.probe = probe_engine(database_url)
        self.next_probe = 0.0

    def tick(self, client: Any) -> None:
        """Beat, and check the database when due."""
        try:
            beat(client, self.device, self.ttl_s, self.identity)
            self.outages.succeeded("redis")
        except RedisError as e:  # the router treats us as dead until Redis is back
            self.outages.failed(e, "redis")
        now = time.monotonic()
        if now < self.next_probe:
            return
        try:
            with self.probe.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as e:
            self.outages.failed(e, "database")
            self.next_probe = now + self.outages.delay_s("database")
            return
        self.outages.succeeded("database")
        self.next_probe = now + PROBE_EVERY_S


def heartbeat_step(device: str, ttl_s: float, identity: str,
                   hold_s: float) -> type[bootsteps.StartStopStep]:
    """A bootstep class that beats for ``device`` as ``identity`` every ``ttl_s / 3`` seconds.

    It starts after the pool, so it stops before the pool drains at a warm shutdown: it then
    withdraws the device (no new batches come) but holds the identity for ``hold_s`` (the
    task time limit), as the timer stops while the batch in flight finishes; the batch is
    not taken for lost meanwhile. The worker's app must have a ``ctx``
    (``pipeline.app.celery_app.EcobatchCelery``) whose ``redis`` is the broker's Redis.
    """

    class Heartbeat(bootsteps.StartStopStep):
        requires = ("celery.worker.components:Timer", "celery.worker.components:Pool")

        def __init__(self, parent: Any, **kwargs: Any) -> None:
            super().__init__(parent, **kwargs)
            self.tref: Any = None
            self.health: Health | None = None

        def start(self, parent: Any) -> None:
            self.health = Health(device, ttl_s, identity, parent.app.ctx.settings.database_url)
            self._beat(parent)
            self.tref = parent.timer.call_repeatedly(ttl_s / 3, self._beat, (parent,),
                                                     priority=10)

        def stop(self, parent: Any) -> None:
            if self.tref is not None:
                self.tref.cancel()
            try:
                stop_beating(parent.app.ctx.redis, device)
                hold_identity(parent.app.ctx.redis, identity, device, hold_s)
            except RedisError as e:
                log.warning("cannot withdraw the heartbeat of %s: %s", device, e)

        def _beat(self, parent: Any) -> None:
            if self.health is not None:
                self.health.tick(parent.app.ctx.redis)

    return Heartbeat
