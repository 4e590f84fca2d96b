"""Keep deferred jobs' plans in SQL and release each job once its window opens.

Runs from the router's beat (never Celery ETAs, which Redis would deliver twice past the
visibility timeout). Each pass, every job still ``deferred`` is planned against the current
forecast; the stored plan is replaced only when the forecast it was made from changed (or it
has none). A job whose start time has come is released: in one transaction its status moves
from ``deferred`` to ``queued`` (guarded by the old status, so two planners cannot both do it)
and its plan gets ``released_at``; then its prompts are pushed to the pending list. A crash
between the two leaves queued prompts without references, which ``reconcile`` restores.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis
from sqlalchemy import Connection, Engine, func, select, update
from sqlalchemy.exc import SQLAlchemyError

from pipeline.broker.restore import reconcile
from pipeline.errors import ConfigError, ServiceError, UnroutableError
from pipeline.fleet.devices import Registry
from pipeline.grid.trace import CarbonSource
from pipeline.ledger.models import Job, JobPlan, JobStatus, Prompt, PromptStatus
from pipeline.ledger.state import release_job
from pipeline.tracing import release_span
from router.deferral.planner import Forecast, JobWork, Plan, plan_job
from router.predict.predictor import Predictor

log = logging.getLogger(__name__)

_JOB = Job.__table__  # type: ignore[attr-defined]
_PROMPT = Prompt.__table__  # type: ignore[attr-defined]
_PLAN = JobPlan.__table__  # type: ignore[attr-defined]


@dataclass
class PlanPassReport:
    """What one planner pass did."""

    planned: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    late: list[str] = field(default_factory=list)
    unplanned: dict[str, str] = field(default_factory=dict)  # job id -> why, kept deferred

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"planned": self.planned, "released": self.released, "late": self.late,
                "unplanned": self.unplanned}


@dataclass(frozen=True)
class Planning:
    """What planning needs: the cluster, its predictor, a forecast, the batch size, and the
    router's grid (``AppContext.grid``), which prices the current hour as the router does."""

    registry: Registry
    predictor: Predictor
    forecast: Forecast
    batch_size: int
    grid: CarbonSource | None = None


def plan_pass(engine: Engine, redis_client: redis.Redis, planning: Planning,
              now: datetime) -> PlanPassReport:
    """Plan every deferred job and release those whose window has opened.

    Raises:
        ServiceError: SQL or Redis failed.
    """
    report = PlanPassReport()
    try:
        for job_id, deadline in _deferred(engine):
            try:
                plan = ensure_plan(engine, planning, job_id, deadline, now, report)
            except (ConfigError, UnroutableError) as e:  # no device has data: keep it deferred
                report.unplanned[job_id] = str(e)
                log.warning("job %s stays deferred, not planned this pass: %s", job_id, e,
                            extra={"job_id": job_id})
                continue
            if plan.start_at <= now:
                _release(engine, redis_client, job_id, now, plan, report)
    except SQLAlchemyError as e:
        raise ServiceError(f"planner cannot use the ledger: {e}") from e
    return report


def ensure_plan(engine: Engine, planning: Planning, job_id: str, deadline: datetime,
                now: datetime, report: PlanPassReport | None = None) -> Plan:
    """The job's plan against the current forecast, stored when new or the forecast changed."""
    with engine.connect() as conn:
        work = job_work(conn, job_id)
        stored = conn.execute(select(_PLAN).where(_PLAN.c.job_id == job_id)).mappings().first()
    plan = plan_job(work, planning.registry, planning.predictor, planning.forecast,
                    planning.batch_size, now, deadline, planning.grid)
    if stored is not None and stored["forecast_digest"] == plan.forecast_digest:
        return stored_plan(stored)
    _store(engine, job_id, deadline, plan, now, replace=stored is not None)
    if report is not None:
        report.planned.append(job_id)
    if plan.note:
        log.warning("job %s: %s", job_id, plan.note, extra={"job_id": job_id})
    return plan


def job_work(conn: Connection, job_id: str) -> JobWork:
    """Prompts still to answer in ``job_id`` and their token totals."""
    row = conn.execute(select(func.count(), func.coalesce(func.sum(_PROMPT.c.prompt_tokens_est), 0),
                              func.coalesce(func.sum(_PROMPT.c.max_tokens), 0))
                       .where(_PROMPT.c.job_id == job_id,
                              _PROMPT.c.status == PromptStatus.PENDING)).one()
    return JobWork(int(row[0]), int(row[1]), int(row[2]))


def stored_plan(row: Any) -> Plan:
    """A :class:`Plan` from a ``JobPlan`` row mapping."""
    return Plan(start_at=row["start_at"], end_at=row["end_at"],
                devices=tuple(row["devices"] or ()), energy_j=row["energy_j"],
                carbon_g=row["carbon_g"], carbon_now_g=row["carbon_now_g"],
                forecast_digest=row["forecast_digest"], note=row["note"] or "")


def _deferred(engine: Engine) -> list[tuple[str, datetime]]:
    with engine.connect() as conn:
        rows = conn.execute(select(_JOB.c.id, _JOB.c.deadline).where(
            _JOB.c.status == JobStatus.DEFERRED, _JOB.c.deadline.is_not(None),
        ).order_by(_JOB.c.created_at)).all()
    return [(job_id, deadline) for job_id, deadline in rows]


def _store(engine: Engine, job_id: str, deadline: datetime, plan: Plan, now: datetime,
           replace: bool) -> None:
    values = {"updated_at": now, "start_at": plan.start_at, "end_at": plan.end_at,
              "deadline": deadline, "devices": list(plan.devices), "energy_j": plan.energy_j,
              "carbon_g": plan.carbon_g, "carbon_now_g": plan.carbon_now_g,
              "forecast_digest": plan.forecast_digest, "note": plan.note}
    with engine.begin() as conn:
        if replace:
            conn.execute(update(_PLAN).where(_PLAN.c.job_id == job_id,
                                             _PLAN.c.released_at.is_(None)).values(**values))
        else:
            conn.execute(_PLAN.insert().values(job_id=job_id, **values))


def _release(engine: Engine, redis_client: redis.Redis, job_id: str, now: datetime, plan: Plan,
             report: PlanPassReport) -> None:
    with engine.begin() as conn:
        if not release_job(conn, job_id):
            return  # another planner released it
        conn.execute(update(_PLAN).where(_PLAN.c.job_id == job_id).values(released_at=now))
    with release_span(redis_client, job_id):  # its prompts' refs carry the job's trace
        reconcile(engine, redis_client, job_id=job_id)
    log.debug("job %s released", job_id, extra={"job_id": job_id})
    report.released.append(job_id)
    if plan.note:
        report.late.append(job_id)
