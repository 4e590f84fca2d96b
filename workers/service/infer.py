"""The body of ``ecobatch.infer_batch``: claim, decode, meter, account, write.

The model and the meter are built once per worker process (cached on the process's
context, a :class:`WorkerContext`), never per batch.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import Engine

from pipeline.accounting.account import account_batch
from pipeline.errors import EcobatchError, InferenceError, MemoryBudgetError
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
from pipeline.ledger.retry import retry_db
from pipeline.outage import SERVICES, failure_kind, outages_of
from pipeline.settings import Settings
from workers.backends.base import (
    BatchOutput,
    GenerationRequest,
    InferenceBackend,
    sampling_fields,
)
from workers.backends.factory import build_backend
from workers.meters import make_meter
from workers.meters.base import EnergyMeter, EnergyReading

T = TypeVar("T")


class WorkerContext(Protocol):
    """What a worker process provides its batches (``pipeline.app.context.WorkerContext``)."""

    settings: Settings
    cache: dict[str, Any]
    worker_id: str | None

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


class RetryableError(EcobatchError):
    """A batch failed in a way another attempt may not; attempts are counted in SQL.

    Attributes:
        attempts: attempts counted so far, which sets the backoff before the next one.
    """

    def __init__(self, message: str, attempts: int = 0) -> None:
        super().__init__(message)
        self.attempts = attempts


def _per_process(ctx: WorkerContext, key: str, build: Callable[[], T]) -> T:
    if key not in ctx.cache:
        ctx.cache[key] = build()
    value: T = ctx.cache[key]
    return value


def backend_for(ctx: WorkerContext, device: Device) -> InferenceBackend:
    """The device's backend, loading the model on first use in this process."""
    return _per_process(ctx, f"backend:{device.name}", lambda: build_backend(device, ctx.settings))


def meter_for(ctx: WorkerContext, device: Device) -> EnergyMeter:
    """The device's energy meter, built once per process."""
    return _per_process(ctx, f"meter:{device.name}", lambda: make_meter(device))


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
        RetryableError: decoding failed in a way worth another attempt, or the previous
            attempt was lost (its worker died): the caller backs off before the next.
    """
    claimed = claim_batch(ctx.engine, batch_id, ctx.settings.max_attempts, ctx.worker_id)
    outages_of(ctx.cache, "worker").succeeded("database")  # the claim reached it
    if claimed.settled:
        if claimed.dead:  # the attempt limit was passed just now: the job may be finished
            refresh_jobs(ctx.engine, batch_id)
        return {"batch_id": batch_id, "status": claimed.batch.status.value,
                "error": claimed.batch.error}
    if claimed.lost_before:
        raise RetryableError(claimed.batch.error or "the previous attempt was lost",
                             attempts=claimed.batch.attempts)
    device = ctx.registry.get(claimed.batch.device)
    backend = backend_for(ctx, device)
    prompts, requests = _screen(ctx, backend, claimed.prompts)
    if not prompts:
        complete_batch(ctx.engine, batch_id, {}, [])
        return {"batch_id": batch_id, "status": "done", "rejected": len(claimed.prompts)}
    try:
        output, reading, started = _decode(backend, meter_for(ctx, device), requests)
    except MemoryBudgetError as e:
        dead_letter(ctx.engine, batch_id, str(e))  # another attempt would fail the same way
        return {"batch_id": batch_id, "status": "dead", "error": str(e)}
    except Exception as e:  # llama.cpp raises RuntimeError/ValueError too; attempts are capped
        reason = str(e) if isinstance(e, InferenceError) else f"{type(e).__name__}: {e}"
        record_failure(ctx.engine, batch_id, reason)
        raise RetryableError(reason, attempts=claimed.batch.attempts) from e
    rows = _result_rows(ctx, device, claimed.batch.id, prompts, output, reading, started)
    # The answers are in memory: keep them through a database outage rather than decode again.
    retry_db(lambda: complete_batch(ctx.engine, batch_id, _batch_values(output, reading), rows),
             total_s=ctx.settings.db_retry_s, outages=outages_of(ctx.cache, "worker"))
    return {"batch_id": batch_id, "status": "done", "energy_j": reading.energy_j,
            "rejected": len(claimed.prompts) - len(prompts)}


def note_failure(ctx: WorkerContext, batch_id: str, exc: BaseException) -> None:
    """Record an unexpected failure of a batch's task as its error, if the database allows.

    A :class:`RetryableError` was recorded where it was raised. While the database or Redis
    is down nothing can be recorded: the process's outage log says so once (not once per
    attempt of every batch) and the retry goes ahead all the same.
    """
    outages = outages_of(ctx.cache, "worker")
    if failure_kind(exc) in SERVICES:
        outages.failed(exc)
        return
    if isinstance(exc, RetryableError):
        return
    try:
        record_failure(ctx.engine, batch_id, f"{type(exc).__name__}: {exc}")
    except Exception as e:  # the failure being noted may be the database itself
        outages.failed(e)


def _screen(ctx: WorkerContext, backend: InferenceBackend,
            prompts: list[Prompt]) -> tuple[list[Prompt], list[GenerationRequest]]:
    """Dead-letter the prompts the backend refuses; return the others and their requests."""
    requests = [to_request(p, ctx.settings.temperature) for p in prompts]
    reasons = {r.request_id: reason for r in requests
               if (reason := backend.check(r)) is not None}
    if reasons:
        reject_prompts(ctx.engine, reasons)
    kept = [(p, r) for p, r in zip(prompts, requests, strict=True) if p.id not in reasons]
    return [p for p, _ in kept], [r for _, r in kept]


def _decode(backend: InferenceBackend, meter: EnergyMeter,
            requests: list[GenerationRequest]) -> tuple[BatchOutput, EnergyReading, datetime]:
    started = utc_now()
    meter.start()
    try:
        output = backend.generate(requests)
    finally:
        reading = meter.stop()
    return output, reading, started


def _storable(text: str) -> str:
    """Model output as SQL can store it: a NUL byte (a byte-fallback token can decode to one;
    PostgreSQL refuses it) becomes U+FFFD, so one odd answer cannot fail its whole batch."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def _batch_values(output: BatchOutput, reading: EnergyReading) -> dict[str, Any]:
    return {"latency_s": output.wall_s, "energy_j": reading.energy_j,
            "energy_source": reading.source, "energy_measured": reading.measured,
            "peak_memory_bytes": output.peak_memory_bytes,
            "energy_notes": ",".join(reading.notes) or None, **_host_values(reading)}


def _host_values(reading: EnergyReading) -> dict[str, Any]:
    host = reading.host
    if host is None:
        return {}
    return {"host_energy_j": host.energy_j, "host_energy_source": host.source,
            "host_energy_measured": host.measured}


def _result_rows(ctx: WorkerContext, device: Device, batch_id: str, prompts: list[Prompt],
                 output: BatchOutput, reading: EnergyReading,
                 started: datetime) -> list[dict[str, Any]]:
    tokens = [r.prompt_tokens + r.completion_tokens for r in output.results]
    host_j = reading.host.energy_j if reading.host is not None else None
    shares = account_batch(ctx.grid, device, reading.energy_j, reading.duration_s, started, tokens,
                           host_energy_j=host_j)
    rows = []
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
