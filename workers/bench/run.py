"""Device benchmarking: latency, throughput and energy of one device across batch sizes.

``ecobatch bench`` runs the same prompt set at each batch size, wraps every batched decode in
the device's energy meter, and stores one :class:`~pipeline.ledger.models.DeviceProfile` row per batch
size. The router fits its predictions to these rows.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from sqlalchemy import Engine, delete
from sqlmodel import col

from pipeline.errors import InputError
from pipeline.ledger.db import session_scope
from pipeline.ledger.models import DeviceProfile
from workers.backends.base import BatchOutput, GenerationRequest, InferenceBackend
from workers.meters.base import EnergyMeter, EnergyReading

DEFAULT_PROMPTS_FILE = "bench_prompts.txt"

_ESTIMATE_METHODS = {
    "tdp*cpu-util": "TDP x CPU utilisation",
    "tdp*gpu-util": "TDP x GPU utilisation",
}

ProgressCallback = Callable[[int, int], None]
"""Called after each batch with (batches done, batches in the whole run)."""


@dataclass(frozen=True)
class ProfileRow:
    """Aggregated figures of one batch size.

    Token counts, latency and energy are means per batch (summed over the batch's prompts);
    ``tokens_per_s`` and ``j_per_token`` are totals over every batch of every repeat divided
    by each other, counting completion (decoded) tokens only.
    """

    batch_size: int
    repeats: int
    n_batches: int
    prompt_tokens: float
    completion_tokens: float
    ttft_s: float
    latency_s: float
    tokens_per_s: float
    energy_j: float
    j_per_token: float
    avg_power_w: float
    peak_memory_bytes: int
    energy_source: str
    energy_measured: bool


@dataclass(frozen=True)
class BatchSample:
    """One measured batch: what the backend returned and what the meter read around it."""

    output: BatchOutput
    reading: EnergyReading


def describe_energy_source(source: str, measured: bool) -> str:
    """Say in words how energy figures were obtained.

    ``("nvml", True)`` gives ``"measured by nvml"``; ``("estimate:tdp*cpu-util", False)`` gives
    ``"estimated: TDP x CPU utilisation"``.
    """
    if measured:
        return f"measured by {source}"
    method = source.split(":", 1)[1] if ":" in source else source
    words = _ESTIMATE_METHODS.get(method, method.replace("*", " x "))
    return f"estimated: {words}" if words else "estimated"


def default_prompts() -> list[str]:
    """The 32 short questions shipped in ``workers/data/bench_prompts.txt``."""
    text = resources.files("workers").joinpath("data", DEFAULT_PROMPTS_FILE).read_text("utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def load_prompts(path: Path) -> list[str]:
    """Read prompts from plain text (one per line) or JSONL (``{"prompt": ...}`` per line).

    Raises:
        InputError: the file cannot be read, a JSONL line lacks a ``prompt`` string, or the
            file holds no prompt.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read prompt file {path}: {e}") from e
    prompts = [_parse_prompt_line(line, i + 1) for i, line in enumerate(lines) if line.strip()]
    if not prompts:
        raise InputError(f"prompt file {path} holds no prompt")
    return prompts


def _parse_prompt_line(line: str, number: int) -> str:
    stripped = line.strip()
    if not stripped.startswith("{"):
        return stripped
    try:
        record = json.loads(stripped)
    except json.JSONDecodeError as e:
        raise InputError(f"invalid JSON: {e.msg}", line=number) from e
    prompt = record.get("prompt") if isinstance(record, dict) else None
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError("expected a non-empty string", line=number, field="prompt")
    return prompt


def make_batches(prompts: Sequence[str], batch_size: int) -> list[list[str]]:
    """Split ``prompts`` into full batches of ``batch_size``, cycling prompts to fill the last.

    Every batch is full so that per-batch figures of different sizes compare like with like.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    if not prompts:
        raise ValueError("no prompts to batch")
    n_batches = -(-max(len(prompts), batch_size) // batch_size)
    flat = [prompts[i % len(prompts)] for i in range(n_batches * batch_size)]
    return [flat[i : i + batch_size] for i in range(0, len(flat), batch_size)]


def run_bench(
    backend: InferenceBackend,
    meter: EnergyMeter,
    prompts: Sequence[str],
    batch_sizes: Sequence[int],
    repeats: int,
    max_tokens: int,
    progress: ProgressCallback | None = None,
    *,
    warmup: bool = True,
) -> list[ProfileRow]:
    """Benchmark ``backend`` at each batch size and aggregate one row per size.

    Each batch is one ``backend.generate`` call between ``meter.start()`` and ``meter.stop()``;
    the prompt set is run ``repeats`` times at every size.

    Args:
        backend: the loaded model.
        meter: the device's energy meter.
        prompts: the prompt texts, the same for every batch size.
        batch_sizes: sizes to measure, in the order given.
        repeats: passes over the prompt set per batch size.
        max_tokens: new-token limit of every prompt.
        progress: called after each batch with (batches done, batches in total).
        warmup: decode one unmeasured single-prompt batch first, so that one-off start-up
            costs (buffer allocation, page faults of the weights) land in no row.

    Returns:
        One :class:`ProfileRow` per batch size, in the order of ``batch_sizes``.
    """
    if repeats < 1 or max_tokens < 1:
        raise ValueError("repeats and max_tokens must be positive")
    plan = {size: make_batches(prompts, size) for size in batch_sizes}
    total = repeats * sum(len(batches) for batches in plan.values())
    if warmup:
        backend.generate(_requests(prompts[:1], "warmup", min(max_tokens, 8)))
    done = 0
    rows = []
    for size, batches in plan.items():
        samples = []
        for rep in range(repeats):
            for i, batch in enumerate(batches):
                requests = _requests(batch, f"bench-{size}-{rep}-{i}", max_tokens)
                samples.append(_measure(backend, meter, requests))
                done += 1
                if progress is not None:
                    progress(done, total)
        rows.append(aggregate(size, repeats, samples))
    return rows


def _requests(batch: Sequence[str], prefix: str, max_tokens: int) -> list[GenerationRequest]:
    return [
        GenerationRequest(request_id=f"{prefix}-{j}", prompt=text, max_tokens=max_tokens)
        for j, text in enumerate(batch)
    ]


def _measure(
    backend: InferenceBackend, meter: EnergyMeter, requests: list[GenerationRequest]
) -> BatchSample:
    meter.start()
    try:
        output = backend.generate(requests)
    finally:
        # Close the interval even on failure so the meter can be started again.
        reading = meter.stop()
    return BatchSample(output=output, reading=reading)


def aggregate(batch_size: int, repeats: int, samples: Sequence[BatchSample]) -> ProfileRow:
    """Reduce the measured batches of one batch size to a :class:`ProfileRow`."""
    if not samples:
        raise ValueError("no samples to aggregate")
    outputs = [s.output for s in samples]
    readings = [s.reading for s in samples]
    completion = sum(r.completion_tokens for o in outputs for r in o.results)
    prompt = sum(r.prompt_tokens for o in outputs for r in o.results)
    wall_s = sum(o.wall_s for o in outputs)
    energy_j = sum(r.energy_j for r in readings)
    metered_s = sum(r.duration_s for r in readings)
    n = len(samples)
    return ProfileRow(
        batch_size=batch_size,
        repeats=repeats,
        n_batches=n,
        prompt_tokens=prompt / n,
        completion_tokens=completion / n,
        ttft_s=statistics.fmean(r.ttft_s for o in outputs for r in o.results),
        latency_s=wall_s / n,
        tokens_per_s=completion / wall_s if wall_s > 0 else 0.0,
        energy_j=energy_j / n,
        j_per_token=energy_j / completion if completion else 0.0,
        avg_power_w=energy_j / metered_s if metered_s > 0 else 0.0,
        peak_memory_bytes=max(o.peak_memory_bytes for o in outputs),
        energy_source=readings[0].source,
        energy_measured=all(r.measured for r in readings),
    )


def store_profile(engine: Engine, device: str, model: str, rows: Sequence[ProfileRow]) -> None:
    """Write ``rows`` as the profile of ``device`` running ``model``, replacing older rows."""
    with session_scope(engine) as session:
        session.execute(
            delete(DeviceProfile).where(
                col(DeviceProfile.device) == device, col(DeviceProfile.model) == model
            )
        )
        session.add_all(_profile_record(device, model, row) for row in rows)


def _profile_record(device: str, model: str, row: ProfileRow) -> DeviceProfile:
    fields = dataclasses.asdict(row)
    del fields["n_batches"]  # how the mean was taken, not a property of the device
    return DeviceProfile(device=device, model=model, **fields)
