"""Per-process handles built lazily from one Settings object.

A Celery worker forks its pool children after the app is made, so nothing that opens a
connection or loads a model may be built before the first task runs in the child: every
member here is built on first use and cached on the instance (never at module level).
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

import redis
from sqlalchemy import Engine

from pipeline.app.tracing import trace_engine
from pipeline.broker.queue import connect
from pipeline.fleet.devices import Registry
from pipeline.grid.carbon_api import carbon_api_from_settings, grid_from_settings
from pipeline.grid.clock import PinnedGrid
from pipeline.grid.data import GridData, checked_registry
from pipeline.grid.forecast import Forecaster
from pipeline.grid.trace import GridConditions
from pipeline.ledger.db import make_engine
from pipeline.settings import Settings

if TYPE_CHECKING:
    from router.config import RouterConfig
    from router.service import RouterState
    from workers.backends.llama.tokenizer import ModelTokenizer
    from workers.config import WorkerConfig
    from workers.service.infer import WorkerState


class AppContext:
    """Engine, Redis client, tokenizer, device registry and grid data of one process, and what
    its router or worker keeps between tasks."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.worker_id: str | None = None
        """A device worker's identity (``pipeline.broker.alive.worker_identity``); None elsewhere."""

    @cached_property
    def engine(self) -> Engine:
        """The SQL ledger."""
        return trace_engine(make_engine(self.settings.database_url))

    @cached_property
    def redis(self) -> redis.Redis:
        """Client of the broker's Redis (pending prompt refs live there)."""
        return connect(self.settings.require_redis_url())

    @cached_property
    def tokenizer(self) -> ModelTokenizer:
        """The workers' tokenizer of ``settings.model``, for submit-time limits; it reads the
        vocabulary only when a prompt has to be counted."""
        from workers.backends.llama.tokenizer import ModelTokenizer  # llama.cpp: only if used

        return ModelTokenizer(self.settings.model)

    @cached_property
    def registry(self) -> Registry:
        """Devices from the TOML registry, or the detected local machine, checked against the
        grid data (see :func:`pipeline.grid.data.checked_registry`)."""
        return checked_registry(self.settings, self.grid_data)

    @cached_property
    def grid_data(self) -> GridData:
        """The packaged traces with the files of ``settings.grid_dir`` over them."""
        return GridData(self.settings.grid_dir)

    @cached_property
    def grid(self) -> GridConditions:
        """Carbon intensity, price and temperature by zone and hour: the grid data, with live
        carbon when ``settings.carbon_api`` names an API, or frozen at ``grid_at``."""
        if self.settings.grid_at is not None:
            return PinnedGrid(self.grid_data, self.settings.grid_at)
        return grid_from_settings(self.settings, self.grid_data)

    @cached_property
    def forecast(self) -> Forecaster | PinnedGrid:
        """Carbon forecast for the planner: the API's where configured, else the same hours of
        the past week from the grid data (never its own future); the pinned data with
        ``grid_at``."""
        if self.settings.grid_at is not None:
            return PinnedGrid(self.grid_data, self.settings.grid_at)
        return Forecaster(self.grid_data, carbon_api_from_settings(self.settings))

    @cached_property
    def router_state(self) -> RouterState:
        """What a router process keeps between passes (imported here, on first use, so that
        a worker never loads the router)."""
        from router.service import RouterState

        return RouterState()

    @cached_property
    def worker_state(self) -> WorkerState:
        """What a worker process keeps between batches: its models, meters and outage log."""
        from workers.service.infer import WorkerState

        return WorkerState()

    @cached_property
    def router_config(self) -> RouterConfig:
        """The router's part of the settings, built here at the entry layer and passed down."""
        from router.config import RouterConfig

        return RouterConfig.from_settings(self.settings)

    @cached_property
    def worker_config(self) -> WorkerConfig:
        """A device worker's part of the settings, built here and passed down."""
        from workers.config import WorkerConfig

        return WorkerConfig.from_settings(self.settings)
