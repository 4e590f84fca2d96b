"""One routing call: pending prompt refs -> batches -> a device each -> SQL -> device queues.

Order of effects in each pass, and why it is crash-safe:

1. pop the refs to route from Redis (only the router lock holder pops);
2. in ONE SQL transaction, keep the refs whose prompt is still pending, insert the Batch rows and
   mark the prompts batched; if anything fails before the commit the refs go back to the head
   of the pending list;
3. after the commit, publish every batch of the pass to its device queue in one call.

A crash between 1 and 2 leaves prompts pending in SQL (a reconcile re-enqueues those); a crash
between 2 and 3 leaves dispatched batches that :func:`republish_stale` sends again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import redis
from opentelemetry.trace import Span
from redis.exceptions import LockError, RedisError
from redis.lock import Lock
from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import SQLAlchemyError

from pipeline.broker.queue import ROUTER_LOCK_KEY, PromptRef
from pipeline.errors import ConfigError, ServiceError, UnroutableError
from pipeline.fleet.devices import Registry
from pipeline.fleet.servedmodels import ANY_MODEL, ModelDemand
from pipeline.grid.trace import GridConditions
from pipeline.ledger.models import Batch, BatchStatus, Prompt, PromptStatus
from pipeline.ledger.rows import BatchRow
from pipeline.ledger.state import add_batches, mark_prompts_batched
from pipeline.logfields import job_ids_field
from pipeline.tracing import publish_in_spans, start_batch_span
from router.config import RouterConfig
from router.live.backlog import read_backlog_s
from router.live.batching import PEEK_REFS, cut_batches, effective_batch_size, return_refs, take_refs
from router.live.jobpolicy import JobPolicy, job_policies, strategy_for
from router.predict.predictor import BatchShape, Predictor
from router.scoring.decide import decide
from router.scoring.modeloptions import ModelChoice, model_options_for
from router.scoring.options import GridNow, GridWarnings, ModelMemoryNeed, grid_now
from router.scoring.strategies import Strategy

log = logging.getLogger(__name__)

DEFAULT_TIME_BUDGET_S = 2.0
LOCK_TTL_S = 30.0
"""Router lock lifetime, renewed every pass; a dead router's lock frees itself after this."""
SQL_IN_CHUNK = 1000

Dispatch = tuple[str, str]
"""``(batch_id, queue)`` of one batch to publish."""
PublishMany = Callable[[Sequence[Dispatch]], None]
"""Sends ``ecobatch.infer_batch`` for each ``(batch_id, queue)``, ideally over one connection."""

_PROMPT = Prompt.__table__.c  # type: ignore[attr-defined]
_BATCH = Batch.__table__  # type: ignore[attr-defined]


def publish_each(publish: Callable[[str, str], None]) -> PublishMany:
    """Adapt a one-batch ``publish(batch_id, queue)`` to the :data:`PublishMany` form."""

    def publish_many(dispatches: Sequence[Dispatch]) -> None:
        for batch_id, queue in dispatches:
            publish(batch_id, queue)

    return publish_many


@dataclass
class RouteReport:
    """What one :func:`route_once` call did.

    Attributes:
        locked_out: another router holds the lock; nothing was done.
        stop_reason: "locked", "empty", "partial batch not due", "time budget", "lock lost"
            or "unroutable: <why>".
        passes: peek/commit/publish rounds done.
        batches: batches dispatched.
        prompts: prompts dispatched.
        skipped_refs: refs dropped because their prompt was no longer pending (duplicates).
        waiting_refs: refs left in Redis as a partial batch that is not yet due.
        by_device: batches dispatched per device name.
        elapsed_s: wall time of the call.
        unroutable: why some prompts could not be routed this call (they stay pending).
    """

    locked_out: bool = False
    stop_reason: str = ""
    passes: int = 0
    batches: int = 0
    prompts: int = 0
    skipped_refs: int = 0
    waiting_refs: int = 0
    by_device: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    unroutable: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (a Celery task's return value)."""
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.__dict__.items()}


@dataclass
class _Pass:
    """Everything a routing pass needs besides the refs."""

    config: RouterConfig
    engine: Engine
    registry: Registry
    predictor: Predictor
    batch_size: int
    backlog_s: dict[str, float]
    strategies: MutableMapping[Any, Strategy]
    alive: Collection[str] | None = None
    memory_need: ModelMemoryNeed | None = None
    grid: GridNow = field(default_factory=lambda: GridNow({}))
    spans: dict[str, Span] = field(default_factory=dict)
    """The open trace span of each batch of this round, by batch id (only while tracing)."""

    def strategy_of(self, policy: JobPolicy) -> Strategy:
        """The policy's strategy; the router's default for one that no longer loads."""
        try:
            return strategy_for(policy, self.strategies)
        except ConfigError as e:
            log.warning("%s; routing with %s instead", e, self.config.strategy)
            return strategy_for(JobPolicy.default(self.config), self.strategies)


@dataclass(frozen=True)
class RouteEnv:
    """What the live router knows of the cluster besides SQL and Redis.

    Attributes:
        alive: devices with a live worker (heartbeat); None treats all as alive.
        memory_need: predicted bytes of a batch on a device with one of its models; None
            skips the memory check.
        strategies: strategy instances kept between calls (round robin's position).
        grid_warnings: which devices' grid data is failing, kept between calls so that each
            failure is logged once.
    """

    alive: Collection[str] | None = None
    memory_need: ModelMemoryNeed | None = None
    strategies: MutableMapping[Any, Strategy] = field(default_factory=dict)
    grid_warnings: GridWarnings = field(default_factory=GridWarnings)


def route_once(
    config: RouterConfig,
    engine: Engine,
    redis_client: redis.Redis,
    registry: Registry,
    predictor: Predictor,
    grid: GridConditions,
    publish: PublishMany,
    now: datetime | None = None,
    *,
    env: RouteEnv | None = None,
    time_budget_s: float = DEFAULT_TIME_BUDGET_S,
    peek_refs_max: int = PEEK_REFS,
) -> RouteReport:
    """Route pending prompts until only a not-yet-due partial batch is left or time runs out.

    Batches are cut at :func:`~router.live.batching.effective_batch_size`, never mixing prompts of
    jobs with different policies (strategy, weights, SLO, planned devices), and each goes to
    the device :func:`router.scoring.decide.decide` picks for its job's policy (the router's settings
    for a job that names none). A device whose grid data cannot be read at this hour is left
    out of the pass (the reason goes on each batch's record, and one warning to the log while
    it lasts); the others go on. Prompts no device may take now (every candidate dead, too
    small or without grid data) go back to the pending list and the call stops. Only one
    router runs at a time: a call that cannot take the Redis lock ``ROUTER_LOCK_KEY`` returns
    at once with ``locked_out=True``.

    Args:
        config: batch size, max wait and the default job policy.
        engine: the SQL ledger.
        redis_client: holds the pending list and the router lock.
        registry: the devices.
        predictor: latency and energy per batch and device.
        grid: grid intensity, price and temperature by zone.
        publish: sends the batches of one pass, called after their SQL commit.
        now: the clock (timezone-aware UTC) for tests; None reads the real clock every pass.
        env: live workers, memory sizing and strategy state; None: all alive, no memory check.
        time_budget_s: stop starting passes after this many seconds.
        peek_refs_max: refs read per Redis round trip.

    Raises:
        ConfigError: unknown strategy or empty registry.
        ServiceError: Redis or the database failed. Exceptions from ``publish`` propagate;
            the batches of that pass stay dispatched for :func:`republish_stale`.
    """
    started = time.monotonic()
    env = env or RouteEnv()
    ctx = _Pass(config, engine, registry, predictor, effective_batch_size(config.batch_size, registry),
                {}, env.strategies, env.alive, env.memory_need)
    strategy_for(JobPolicy.default(config), ctx.strategies)  # a bad default fails here
    lock = redis_client.lock(ROUTER_LOCK_KEY, timeout=LOCK_TTL_S, blocking=False)
    try:
        acquired = lock.acquire(blocking=False)
    except RedisError as e:
        raise ServiceError(f"cannot take the router lock in Redis: {e}") from e
    if not acquired:
        return RouteReport(locked_out=True, stop_reason="locked")
    report = RouteReport()
    try:
        _route_locked(ctx, redis_client, lock, _GridRead(grid, env.grid_warnings), publish, now,
                      started + time_budget_s, peek_refs_max, report)
    finally:
        _release(lock)
        report.elapsed_s = time.monotonic() - started
    return report


@dataclass(frozen=True)
class _GridRead:
    """The grid and the log of devices whose grid data is failing."""

    grid: GridConditions
    warnings: GridWarnings

    def now(self, ctx: _Pass, at: datetime) -> GridNow:
        """Every device's conditions at ``at``; a failing device is warned about once."""
        read = grid_now(self.grid, ctx.registry.devices, at)
        self.warnings.note(read.failed)
        return read


def _route_locked(
    ctx: _Pass, client: redis.Redis, lock: Lock, grid: _GridRead,
    publish: PublishMany, now: datetime | None, deadline: float, peek_refs_max: int,
    report: RouteReport,
) -> None:
    ctx.backlog_s = _read_backlog(ctx.engine, ctx.registry)
    while True:
        at = now or datetime.now(UTC)
        ctx.grid = grid.now(ctx, at)
        refs, plan = take_refs(client, ctx.batch_size, ctx.config.max_wait_s, at.timestamp(),
                               peek_refs_max=peek_refs_max)
        report.waiting_refs = plan.waiting_partial
        if not refs:
            report.stop_reason = "partial batch not due" if plan.waiting_partial else "empty"
            return
        dispatches, unroutable = _commit_or_hand_back(ctx, client, refs, at, report)
        report.passes += 1
        if dispatches:
            publish_in_spans(publish, dispatches, ctx.spans)
        ctx.spans.clear()
        if unroutable:
            return_refs(client, unroutable)
            report.stop_reason = f"unroutable: {report.unroutable}"
            return
        if time.monotonic() >= deadline:
            report.stop_reason = "time budget"
            return
        if not _renew(lock):
            report.stop_reason = "lock lost"
            return


def _commit_or_hand_back(
    ctx: _Pass, client: redis.Redis, refs: Sequence[PromptRef], at: datetime, report: RouteReport,
) -> tuple[list[Dispatch], list[PromptRef]]:
    """:func:`_commit_pass`; on any failure the refs go back to Redis and the spans end."""
    try:
        return _commit_pass(ctx, refs, at, report)
    except BaseException:
        for span in ctx.spans.values():
            span.end()
        ctx.spans.clear()
        return_refs(client, refs)
        raise


def _commit_pass(
    ctx: _Pass, refs: Sequence[PromptRef], at: datetime, report: RouteReport,
) -> tuple[list[Dispatch], list[PromptRef]]:
    """Assign ``refs`` to batches and devices and record it all in one transaction; return the
    batches to publish and the refs no device may take now."""
    try:
        with ctx.engine.begin() as conn:
            fresh, demands = _still_pending(conn, refs)
            report.skipped_refs += len(refs) - len(fresh)
            policies = job_policies(conn, {r.job_id for r in fresh}, JobPolicy.default(ctx.config))
            batch_rows, assignments, dispatches, unroutable = _assign(
                ctx, fresh, _Asks(policies, demands), at, report)
            add_batches(conn, batch_rows)
            mark_prompts_batched(conn, assignments)
    except SQLAlchemyError as e:
        raise ServiceError(f"cannot record batches in the ledger: {e}") from e
    for row in batch_rows:
        report.by_device[row["device"]] = report.by_device.get(row["device"], 0) + 1
    report.batches += len(batch_rows)
    report.prompts += len(assignments)
    return dispatches, unroutable


@dataclass(frozen=True)
class _Asks:
    """What the refs of a pass ask for: each job's policy, each prompt's model demand."""

    policies: dict[str, JobPolicy]
    demands: dict[str, ModelDemand]

    def groups(self, refs: Sequence[PromptRef], default: JobPolicy,
               ) -> dict[tuple[JobPolicy, ModelDemand], list[PromptRef]]:
        """``refs`` grouped by policy and demand, in list order within each group."""
        groups: dict[tuple[JobPolicy, ModelDemand], list[PromptRef]] = {}
        for r in refs:
            key = (self.policies.get(r.job_id, default),
                   self.demands.get(r.prompt_id, ANY_MODEL))
            groups.setdefault(key, []).append(r)
        return groups


def _assign(
    ctx: _Pass, refs: Sequence[PromptRef], asks: _Asks, at: datetime, report: RouteReport,
) -> tuple[list[BatchRow], list[dict[str, str]], list[Dispatch], list[PromptRef]]:
    """Cut ``refs`` into batches (never mixing policies or model demands) and decide a device
    and model for each, advancing the backlog as we go; refs of a group no device may take
    are handed back."""
    batch_rows: list[BatchRow] = []
    assignments: list[dict[str, str]] = []
    dispatches: list[Dispatch] = []
    unroutable: list[PromptRef] = []
    for (policy, demand), group in asks.groups(refs, JobPolicy.default(ctx.config)).items():
        for batch in cut_batches(group, ctx.batch_size):
            batch_id = uuid4().hex
            try:
                row, queue = _place(ctx, (policy, demand), batch, batch_id, at)
            except UnroutableError as e:
                report.unroutable = str(e)
                unroutable.extend(batch)
                continue
            batch_rows.append(row)
            assignments.extend({"pid": r.prompt_id, "bid": batch_id} for r in batch)
            dispatches.append((batch_id, queue))
            _note_batch(ctx, batch_id, row["device"], batch)
    return batch_rows, assignments, dispatches, unroutable


def _note_batch(ctx: _Pass, batch_id: str, device: str, batch: Sequence[PromptRef]) -> None:
    """One DEBUG line per batch, naming it, its device and its jobs (JSON logs: as fields),
    and its trace span, continuing its prompts' traces, while tracing."""
    jobs = job_ids_field(r.job_id for r in batch)
    log.debug("batch %s of %d prompts to %s", batch_id, len(batch), device,
              extra={"batch_id": batch_id, "device": device, "job_id": jobs})
    span = start_batch_span(batch_id, device, (r.trace for r in batch), jobs)
    if span is not None:
        ctx.spans[batch_id] = span


def _place(
    ctx: _Pass, asked: tuple[JobPolicy, ModelDemand], batch: Sequence[PromptRef], batch_id: str,
    at: datetime,
) -> tuple[BatchRow, str]:
    """Choose the device and model of one batch; return its Batch row and the queue to
    publish to."""
    policy, demand = asked
    shape = BatchShape(len(batch), sum(r.prompt_tokens for r in batch),
                       sum(r.max_tokens for r in batch))
    models = ModelChoice(demand, ctx.config.model, ctx.memory_need)
    options = model_options_for(ctx.registry, shape, ctx.predictor, ctx.grid, ctx.backlog_s,
                                models, alive=ctx.alive, allowed=policy.devices)
    if not options:
        raise UnroutableError(f"no device serves a model with {demand.describe()}")
    # The latency target runs from arrival: the oldest prompt's wait so far comes off it.
    waited_s = max(0.0, at.timestamp() - min(r.enqueued_unix_s for r in batch))
    decision = decide(ctx.strategy_of(policy), options, policy.slo_s, waited_s)
    choice = decision.option
    name = choice.device.name
    ctx.backlog_s[name] = ctx.backlog_s.get(name, 0.0) + choice.prediction.latency_s
    row: BatchRow = {
        "id": batch_id, "created_at": at, "device": name,
        "model": choice.model.name if choice.model is not None else None,
        "strategy": policy.describe(),
        "size": len(batch), "status": BatchStatus.DISPATCHED, "attempts": 0,
        "predicted_latency_s": choice.prediction.latency_s,
        "predicted_energy_j": choice.prediction.energy_j,
        "predicted_carbon_g": choice.carbon_g,
        "prediction_source": choice.prediction.source,
        "reason": decision.reason, "scores": decision.scores,
    }
    return row, choice.device.queue


def _still_pending(conn: Connection,
                   refs: Sequence[PromptRef]) -> tuple[list[PromptRef], dict[str, ModelDemand]]:
    """Refs whose prompt exists and is pending, first occurrence only, in list order; and
    what each of those prompts asks of its model (prompts that ask nothing are left out)."""
    ids = list(dict.fromkeys(r.prompt_id for r in refs))
    pending: set[str] = set()
    demands: dict[str, ModelDemand] = {}
    for i in range(0, len(ids), SQL_IN_CHUNK):
        # Filter the status here, not in SQL, so that the lookup is by primary key alone.
        stmt = (select(_PROMPT.id, _PROMPT.status, _PROMPT.model, _PROMPT.min_quality)
                .where(_PROMPT.id.in_(ids[i : i + SQL_IN_CHUNK])))
        for pid, status, model, min_quality in conn.execute(stmt):
            if status != PromptStatus.PENDING:
                continue
            pending.add(pid)
            if model is not None or min_quality is not None:
                demands[pid] = ModelDemand(model, min_quality)
    fresh = []
    for r in refs:
        if r.prompt_id in pending:
            pending.discard(r.prompt_id)
            fresh.append(r)
    return fresh, demands


def _read_backlog(engine: Engine, registry: Registry) -> dict[str, float]:
    try:
        with engine.connect() as conn:
            return read_backlog_s(conn, registry.names)
    except SQLAlchemyError as e:
        raise ServiceError(f"cannot read the device backlog: {e}") from e


def _renew(lock: Lock) -> bool:
    try:
        return bool(lock.reacquire())
    except LockError:
        return False
    except RedisError as e:
        raise ServiceError(f"cannot renew the router lock in Redis: {e}") from e


def _release(lock: Lock) -> None:
    # Runs in a ``finally``: raising here would hide the error that got us here, and an
    # unreleased lock frees itself after LOCK_TTL_S anyway.
    try:
        lock.release()
    except LockError:
        pass  # expired or taken over: nothing of ours to release
    except RedisError as e:
        log.warning("cannot release the router lock: %s", e)
