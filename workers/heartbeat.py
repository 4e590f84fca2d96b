"""The Celery bootstep that keeps a device worker's heartbeat alive in Redis.

It runs on the worker's timer in the main process, which stays responsive while a pool child
decodes, so a long batch never looks like a dead worker.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps
from redis.exceptions import RedisError

from pipeline.heartbeat import beat, stop_beating

log = logging.getLogger(__name__)


def heartbeat_step(device: str, ttl_s: float) -> type[bootsteps.StartStopStep]:
    """A bootstep class that beats for ``device`` every ``ttl_s / 3`` seconds.

    The worker's app must have a ``ctx`` (``pipeline.celery_app.EcobatchCelery``) whose
    ``redis`` is the broker's Redis.
    """

    class Heartbeat(bootsteps.StartStopStep):
        requires = ("celery.worker.components:Timer",)

        def __init__(self, parent: Any, **kwargs: Any) -> None:
            super().__init__(parent, **kwargs)
            self.tref: Any = None

        def start(self, parent: Any) -> None:
            self._beat(parent)
            self.tref = parent.timer.call_repeatedly(ttl_s / 3, self._beat, (parent,),
                                                     priority=10)

        def stop(self, parent: Any) -> None:
            if self.tref is not None:
                self.tref.cancel()
            try:
                stop_beating(parent.app.ctx.redis, device)
            except RedisError as e:
                log.warning("cannot withdraw the heartbeat of %s: %s", device, e)

        def _beat(self, parent: Any) -> None:
            try:
                beat(parent.app.ctx.redis, device, ttl_s)
            except RedisError as e:  # the router will treat us as dead until Redis is back
                log.warning("cannot send the heartbeat of %s: %s", device, e)

    return Heartbeat
