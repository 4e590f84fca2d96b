"""What each job asks of the router (strategy, weights, SLO, planned devices), read once a pass.

Batches never mix prompts of jobs whose policies differ, so every prompt of a batch is routed
the way its own job asked.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, select

from pipeline.ledger.models import Job, JobPlan
from router.config import RouterConfig
from router.scoring.strategies import Strategy, get_strategy

_JOB = Job.__table__.c  # type: ignore[attr-defined]
_PLAN = JobPlan.__table__.c  # type: ignore[attr-defined]


@dataclass(frozen=True)
class JobPolicy:
    """How the prompts of one job are routed (hashable: the key that groups prompts)."""

    strategy: str
    weights: tuple[tuple[str, float], ...] = ()
    slo_s: float | None = None
    devices: tuple[str, ...] | None = None  # a deferred job's planned devices
    plan_file: Path | None = None  # the router's ECOBATCH_PLAN_FILE, for strategy optimal

    @classmethod
    def default(cls, config: RouterConfig) -> JobPolicy:
        """The policy of a job that asks for nothing: the router's settings."""
        return cls(config.strategy, _weights(config.weights), config.slo_s,
                   plan_file=config.plan_file)

    def describe(self) -> str:
        """Short label stored as the Batch's strategy: ``weighted(carbon=0.75,latency=0.25)``."""
        if self.strategy != "weighted":
            return self.strategy
        return "weighted(" + ",".join(f"{m}={w:.3g}" for m, w in self.weights) + ")"


def _weights(w: Mapping[str, float] | None) -> tuple[tuple[str, float], ...]:
    return tuple(sorted(w.items())) if w else ()


def job_policies(conn: Connection, job_ids: set[str], default: JobPolicy) -> dict[str, JobPolicy]:
    """Policy of each job, its own settings falling back to ``default`` (the router's)."""
    if not job_ids:
        return {}
    stmt = (select(_JOB.id, _JOB.strategy, _JOB.weights, _JOB.slo_s, _PLAN.devices)
            .outerjoin(JobPlan.__table__, _PLAN.job_id == _JOB.id)  # type: ignore[attr-defined]
            .where(_JOB.id.in_(sorted(job_ids))))
    return {job_id: _policy(default, strategy, weights, slo_s, devices)
            for job_id, strategy, weights, slo_s, devices in conn.execute(stmt)}


def _policy(default: JobPolicy, strategy: str | None, weights: Any, slo_s: float | None,
            devices: list[str] | None) -> JobPolicy:
    return JobPolicy(
        strategy=strategy or default.strategy,
        weights=_weights(weights) or default.weights,
        slo_s=slo_s if slo_s is not None else default.slo_s,
        devices=tuple(devices) if devices else None,
        plan_file=default.plan_file,
    )


def strategy_for(policy: JobPolicy, cache: MutableMapping[Any, Strategy]) -> Strategy:
    """The strategy instance of ``policy``, kept in ``cache`` so stateful ones (round robin)
    carry on from pass to pass.

    Raises:
        ConfigError: unknown strategy or a plugin that fails to load.
    """
    key = (policy.strategy, policy.weights)
    if key not in cache:
        cache[key] = get_strategy(policy.strategy, dict(policy.weights) or None,
                                  policy.plan_file)
    return cache[key]
