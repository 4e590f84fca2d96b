"""The body of ``ecobatch.infer_batch``: claim, decode, meter, account, write.

The model and the meter are built once per worker process (kept in the process's
:class:`WorkerState`, held by its context), never per batch.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from sqlalchemy import Engine

from pipeline.accounting.account import account_batch
from pipeline.errors import DeadLetterError, EngineStuckError, InferenceError, RetryableError
from pipeline.fleet.devices import Device, Registry
from pipeline.grid.trace import GridConditions
from pipeline.ledger.batches import (
    claim_batch,
    complete_batch,
    dead_letter,
    record_failure,
    refresh_jobs,
    reject_prompts,
)
from pipeline.ledger.models import Prompt, utc_now
from pipeline.ledger.outcome import Action, Outcome, failure_reason
from pipeline.ledger.retry import retry_db
from pipeline.ledger.rows import BatchFigures, ResultRow
from pipeline.logfields import add_log_fields, job_ids_field
from pipeline.metrics.defs import Metrics
from pipeline.metrics.record import count_dead, count_done, count_rejected
from pipeline.outage import SERVICES, Outages, failure_kind
from pipeline.settings import Settings
from pipeline.tracing import tracer
from workers.backends.base import (
    BatchOutput,
    GenerationRequest,
    InferenceBackend,
    sampling_fields,
)
from workers.backends.factory import build_backend
from workers.config import WorkerConfig
from workers.meters import make_meter
from workers.meters.base import EnergyMeter, EnergyReading

if TYPE_CHECKING:
    from workers.service.engine import ContinuousEngine

K = TypeVar("K")
T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass
class WorkerState:
    """What a worker process keeps from one batch to the next (held by its context)."""

    backends: dict[tuple[str, str], InferenceBackend] = field(default_factory=dict)
    """Loaded models by device name and served model name."""
    meters: dict[str, EnergyMeter] = field(default_factory=dict)
    """Energy meters by device name."""
    engines: dict[str, ContinuousEngine] = field(default_factory=dict)
    """Continuous-batching engines by device name (continuous mode only)."""
    building: threading.RLock = field(default_factory=threading.RLock)
    """Held while one of the above is built: task threads share them."""
    metrics: Metrics = field(default_factory=Metrics)
    """This process's Prometheus metrics (served only when a metrics port is set)."""
    outages: Outages = field(default_factory=lambda: Outages("worker"))


class WorkerContext(Protocol):
    """What a worker process provides its batches (``pipeline.app.context.AppContext``)."""

    settings: Settings
    """Handed whole to the backend factory only (backend plugins are written against it)."""
    worker_id: str | None

    @property
    def worker_config(self) -> WorkerConfig:
        """The worker's part of the settings."""
        ...

    @property
    def worker_state(self) -> WorkerState:
        """What this process keeps between batches."""
        ...

    @property
    def engine(self) -> Engine:
        """The SQL ledger."""
        ...

    @property
    def registry(self) -> Registry:
        """The device registry."""
        ...

    @property
    def grid(self) -> GridConditions:
        """Grid conditions by zone and hour."""
        ...


def _kept(state: WorkerState, kept: dict[K, T], key: K, build: Callable[[], T]) -> T:
    """``kept[key]``, built on first use; task threads share it, so built once."""
    with state.building:
        if key not in kept:
            kept[key] = build()
        return kept[key]


def backend_for(ctx: WorkerContext, device: Device, model: str | None = None) -> InferenceBackend:
    """The backend of ``device`` running its served model ``model`` (None: its first), loading
    the model on first use in this process.

    The backend is built for a copy of the device whose one ``model`` is that model's file,
    so backends (plugins included) see a device with one model, as before several existed.

    Raises:
        ConfigError: the device does not serve ``model``, or its file cannot be found.
    """
    served = device.served_model(model, ctx.settings.model)

    def build() -> InferenceBackend:
        path = served.resolve(device.model or ctx.settings.model)
        running = device.model_copy(update={"model": path, "models": None})
        return build_backend(running, ctx.settings)

    state = ctx.worker_state
    return _kept(state, state.backends, (device.name, served.name), build)


def meter_for(ctx: WorkerContext, device: Device) -> EnergyMeter:
    """The device's energy meter, built once per process."""
    state = ctx.worker_state
    return _kept(state, state.meters, device.name, lambda: make_meter(device))


def continuous_for(ctx: WorkerContext, device: Device) -> bool:
    """Whether ``device``'s worker keeps its slots busy across batches: continuous batching on
    (llama backend) and one served model. A device serving several models runs one batch at a
    time, so that one meter interval never covers two models' engines at once."""
    return (ctx.worker_config.continuous
            and len(device.served_models(ctx.settings.model)) == 1)


def engine_for(ctx: WorkerContext, device: Device) -> ContinuousEngine | None:
    """The device's continuous-batching engine, started on first use; None when this worker
    decodes one batch at a time (see :func:`continuous_for`, or a backend without slots)."""
    if not continuous_for(ctx, device):
        return None
    from workers.backends.llama.batched import BatchedLlamaBackend
    from workers.service.engine import ContinuousEngine

    backend = backend_for(ctx, device)
    if not isinstance(backend, BatchedLlamaBackend):
        return None
    n_slots = min(ctx.worker_config.batch_size, device.max_batch_size)
    state = ctx.worker_state
    return _kept(state, state.engines, device.name,
                 lambda: ContinuousEngine(backend, meter_for(ctx, device), n_slots))


def to_request(p: Prompt, temperature: float) -> GenerationRequest:
    """The backend request for one ledger prompt; ``temperature`` where it gives none."""
    return GenerationRequest(request_id=p.id, prompt=p.prompt, messages=p.messages,
                             max_tokens=p.max_tokens,
                             **sampling_fields(p.sampling, temperature))


def run_batch(ctx: WorkerContext, batch_id: str) -> dict[str, Any]:
    """Run ``batch_id`` on its device and write its results; idempotent under redelivery.

    A prompt the backend cannot run (too long for the context, say) is dead-lettered alone,
    with its reason, and its batch-mates are still answered.

    Raises:
        RetryableError: decoding failed in a way worth another attempt (the failure is
            recorded), or the previous attempt was lost (its worker died): the caller backs
            off before the next.
        DeadLetterError: another attempt would fail the same way (the KV cache cannot fit).
    """
    claimed = claim_batch(ctx.engine, batch_id, ctx.worker_config.max_attempts, ctx.worker_id)
    add_log_fields(job_id=job_ids_field(p.job_id for p in claimed.prompts))  # the task's scope
    ctx.worker_state.outages.succeeded("database")  # the claim reached it
    if claimed.settled:
        if claimed.dead:  # the attempt limit was passed just now: the job may be finished
            refresh_jobs(ctx.engine, batch_id)
            count_dead(ctx.worker_state.metrics, claimed.batch.device, len(claimed.prompts))
        return {"batch_id": batch_id, "status": claimed.batch.status.value,
                "error": claimed.batch.error}
    if claimed.lost_before:
        raise RetryableError(claimed.batch.error or "the previous attempt was lost",
                             attempts=claimed.batch.attempts)
    device = ctx.registry.get(claimed.batch.device)
    backend = backend_for(ctx, device, claimed.batch.model)
    prompts, requests = _screen(ctx, backend, claimed.prompts)
    if not prompts:
        complete_batch(ctx.engine, batch_id, None, [])
        return {"batch_id": batch_id, "status": "done", "rejected": len(claimed.prompts)}
    try:
        decoded = _decode(ctx, device, backend, requests)
    except DeadLetterError:  # the policy dead-letters it (pipeline.ledger.outcome.decide)
        count_dead(ctx.worker_state.metrics, device.name, len(prompts))
        raise
    except EngineStuckError as e:  # as the prefork pool's hard time limit would: end it all
        _end_process(batch_id, e)
    except Exception as e:  # llama.cpp raises RuntimeError/ValueError too; attempts are capped
        reason = str(e) if isinstance(e, InferenceError) else failure_reason(e)
        record_failure(ctx.engine, batch_id, reason)
        raise RetryableError(reason, attempts=claimed.batch.attempts) from e
    rows = _result_rows(ctx, device, claimed.batch.id, prompts, decoded)
    # The answers are in memory: keep them through a database outage rather than decode again.
    values = _batch_values(decoded.output, decoded.reading)
    with tracer().start_as_current_span("ecobatch.write_results"):
        retry_db(lambda: complete_batch(ctx.engine, batch_id, values, rows),
                 total_s=ctx.worker_config.db_retry_s, outages=ctx.worker_state.outages)
    count_done(ctx.worker_state.metrics, device, values, rows)
    return {"batch_id": batch_id, "status": "done", "energy_j": decoded.reading.energy_j,
            "rejected": len(claimed.prompts) - len(prompts)}


def settle_failure(ctx: WorkerContext, batch_id: str, exc: BaseException,
                   outcome: Outcome) -> dict[str, Any] | None:
    """Write in the ledger what ``outcome`` means for the batch whose attempt raised ``exc``.

    Returns:
        The task's reply when the message is done with (acknowledged or dead-lettered); None
        when it is to be retried after ``outcome.delay_s``.
    """
    if outcome.action == Action.ACK:
        log.error("batch %s: %s", batch_id, outcome.reason)
        return {"batch_id": batch_id, "status": "unknown", "error": outcome.reason}
    if outcome.action == Action.DEAD_LETTER:
        try:
            dead_letter(ctx.engine, batch_id, outcome.reason)
        except Exception as e:  # the database is away: retried, the next attempt decides again
            note_failure(ctx, batch_id, e)
            return None
        return {"batch_id": batch_id, "status": "dead", "error": outcome.reason}
    note_failure(ctx, batch_id, exc)
    return None


def note_failure(ctx: WorkerContext, batch_id: str, exc: BaseException) -> None:
    """Record an unexpected failure of a batch's task as its error, if the database allows.

    A :class:`RetryableError` was recorded where it was raised. While the database or Redis
    is down nothing can be recorded: the process's outage log says so once (not once per
    attempt of every batch) and the retry goes ahead all the same.
    """
    outages = ctx.worker_state.outages
    if failure_kind(exc) in SERVICES:
        outages.failed(exc)
        return
    if isinstance(exc, RetryableError):
        return
    try:
        record_failure(ctx.engine, batch_id, failure_reason(exc))
    except Exception as e:  # the failure being noted may be the database itself
        outages.failed(e)


def _screen(ctx: WorkerContext, backend: InferenceBackend,
            prompts: list[Prompt]) -> tuple[list[Prompt], list[GenerationRequest]]:
    """Dead-letter the prompts the backend refuses; return the others and their requests."""
    requests = [to_request(p, ctx.worker_config.temperature) for p in prompts]
    reasons = {r.request_id: reason for r in requests
               if (reason := backend.check(r)) is not None}
    if reasons:
        reject_prompts(ctx.engine, reasons)
        count_rejected(ctx.worker_state.metrics, len(reasons))
    kept = [(p, r) for p, r in zip(prompts, requests, strict=True) if p.id not in reasons]
    return [p for p, _ in kept], [r for _, r in kept]


@dataclass(frozen=True)
class Decoded:
    """A batch's answers and its energy.

    Attributes:
        output: the backend's results, in request order.
        reading: the batch's energy (its own share when several batches shared the device).
        started: when the batch began decoding (the grid hour it is accounted in).
        prompt_energy_j: each prompt's share of ``reading.energy_j`` where the engine
            apportioned it by work; None splits the batch's by tokens.
    """

    output: BatchOutput
    reading: EnergyReading
    started: datetime
    prompt_energy_j: list[float] | None = None


def _decode(ctx: WorkerContext, device: Device, backend: InferenceBackend,
            requests: list[GenerationRequest]) -> Decoded:
    started = utc_now()
    engine = engine_for(ctx, device)
    with tracer().start_as_current_span("ecobatch.inference",
                                        attributes={"ecobatch.prompts": len(requests)}) as span:
        if engine is not None:
            cfg = ctx.worker_config
            res = engine.run(requests, cfg.soft_time_limit_s, cfg.time_limit_s)
            decoded = Decoded(res.output, res.reading, started, res.prompt_energy_j)
        else:
            meter = meter_for(ctx, device)
            meter.start()
            try:
                output = backend.generate(requests)
            finally:
                reading = meter.stop()
            decoded = Decoded(output, reading, started)
        span.set_attribute("ecobatch.energy_j", decoded.reading.energy_j)
    return decoded


def _end_process(batch_id: str, error: EngineStuckError) -> None:
    """End this worker now: every batch it holds is redelivered to another attempt."""
    log.critical("batch %s: %s; ending the worker so that its batches are redelivered",
                 batch_id, error)
    logging.shutdown()
    os._exit(70)


def _storable(text: str) -> str:
    """Model output as SQL can store it: a NUL byte (a byte-fallback token can decode to one;
    PostgreSQL refuses it) becomes U+FFFD, so one odd answer cannot fail its whole batch."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def _batch_values(output: BatchOutput, reading: EnergyReading) -> BatchFigures:
    figures: BatchFigures = {
        "latency_s": output.wall_s, "energy_j": reading.energy_j,
        "energy_source": reading.source, "energy_measured": reading.measured,
        "peak_memory_bytes": output.peak_memory_bytes,
        "energy_notes": ",".join(reading.notes) or None}
    host = reading.host
    if host is not None:
        figures["host_energy_j"] = host.energy_j
        figures["host_energy_source"] = host.source
        figures["host_energy_measured"] = host.measured
    return figures


def _result_rows(ctx: WorkerContext, device: Device, batch_id: str, prompts: list[Prompt],
                 decoded: Decoded) -> list[ResultRow]:
    output, reading = decoded.output, decoded.reading
    weights = decoded.prompt_energy_j
    if weights is None or sum(weights) <= 0:
        weights = [float(r.prompt_tokens + r.completion_tokens) for r in output.results]
    host_j = reading.host.energy_j if reading.host is not None else None
    shares = account_batch(ctx.grid, device, reading.energy_j, reading.duration_s,
                           decoded.started, weights, host_energy_j=host_j)
    rows: list[ResultRow] = []
    for prompt, res, share in zip(prompts, output.results, shares, strict=True):
        rows.append({
            "prompt_id": prompt.id, "job_id": prompt.job_id, "batch_id": batch_id,
            "device": device.name, "output": _storable(res.text),
            "finish_reason": res.finish_reason,
            "prompt_tokens": res.prompt_tokens, "completion_tokens": res.completion_tokens,
            "ttft_s": res.ttft_s, "latency_s": res.latency_s,
            "energy_source": reading.source, "energy_measured": reading.measured,
            "host_energy_source": reading.host.source if reading.host else None,
            "host_energy_measured": reading.host.measured if reading.host else None,
            "created_at": utc_now(), **share,
        })
    return rows
