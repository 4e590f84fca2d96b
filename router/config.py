"""The settings the router reads, as one small frozen object built by the entry layer.

``pipeline.app`` builds a :class:`RouterConfig` from the process's
:class:`~pipeline.settings.Settings` and hands it down; router functions take it, or the one or
two values they read, never the whole settings object.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pipeline.settings import Settings


@dataclass(frozen=True)
class RouterConfig:
    """What the live router, the planner and the simulator read of the settings.

    Attributes:
        batch_size: prompts per batch (capped by the largest device's max batch size).
        max_wait_s: longest a partial batch waits for more prompts.
        strategy: the default routing strategy's name.
        weights: the weighted strategy's default weights by metric.
        slo_s: the default latency target, seconds from arrival; None for none.
        plan_file: the allocation file of strategy ``optimal``.
        model: the GGUF model of devices that name none (for memory sizing).
        n_ctx_per_seq: KV-cache tokens reserved per sequence of a batch.
        router_interval_s: seconds between routing passes.
        planner_interval_s: seconds between planner passes.
        heartbeat_ttl_s: how long a worker's heartbeat lives.
        visibility_timeout_s: how long Redis keeps an unacknowledged message from others.
        task_time_limit_s: the hard time limit of a batch.
        metrics_port: the port of the router's /metrics (0: not served, no gauges kept).
    """

    batch_size: int
    max_wait_s: float
    strategy: str
    weights: Mapping[str, float]
    slo_s: float | None
    plan_file: Path | None
    model: Path | None
    n_ctx_per_seq: int
    router_interval_s: float
    planner_interval_s: float
    heartbeat_ttl_s: float
    visibility_timeout_s: int
    task_time_limit_s: int
    metrics_port: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> RouterConfig:
        """The router's part of ``settings``."""
        return cls(
            batch_size=settings.batch_size, max_wait_s=settings.max_wait_s,
            strategy=settings.strategy, weights=dict(settings.weights), slo_s=settings.slo_s,
            plan_file=settings.plan_file, model=settings.model,
            n_ctx_per_seq=settings.n_ctx_per_seq, router_interval_s=settings.router_interval_s,
            planner_interval_s=settings.planner_interval_s,
            heartbeat_ttl_s=settings.heartbeat_ttl_s,
            visibility_timeout_s=settings.visibility_timeout_s,
            task_time_limit_s=settings.task_time_limit_s, metrics_port=settings.metrics_port,
        )
