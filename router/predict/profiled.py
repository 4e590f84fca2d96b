"""Predictions fitted to the device profiles that ``ecobatch bench`` writes to SQL.

A :class:`~pipeline.ledger.models.DeviceProfile` row holds, for one device and batch size, means per
batch: total prompt and completion tokens of the batch, mean TTFT, batch latency, energy and
average power. From each row the fit derives three rates:

- prefill tokens/s = prompt tokens / TTFT (the whole batch is prefilled before the first token),
- decode tokens/s = completion tokens / (latency - TTFT), aggregate over the batch,
- power in watts (``avg_power_w``, else energy / latency).

Between profiled batch sizes each rate is interpolated linearly in log batch size. Below the
smallest profiled size the rates shrink as in :mod:`router.predict.nominal`; above the largest they
stay flat (decode saturates as memory fills). A batch's latency is its prompt tokens over the
prefill rate plus its new-token budget over the decode rate; its energy is power x latency.
Devices without a profile fall back to :class:`~router.predict.nominal.NominalPredictor`.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from pipeline.errors import ServiceError
from pipeline.fleet.devices import Device, Registry
from pipeline.ledger.models import DeviceProfile
from router.predict.nominal import BATCH_EXPONENT_BY_KIND, PREFILL_SPEEDUP, NominalPredictor
from router.predict.predictor import BatchShape, Prediction, Predictor


@dataclass(frozen=True, slots=True)
class Rates:
    """Fitted rates of one device at one batch size."""

    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    power_w: float


def rates_from_row(row: DeviceProfile) -> Rates | None:
    """Derive the rates of one profile row; None when the row holds no usable timing."""
    decode_s = row.latency_s - row.ttft_s
    if decode_s > 0 and row.completion_tokens > 0:
        decode_tps = row.completion_tokens / decode_s
    elif row.tokens_per_s > 0:
        decode_tps = row.tokens_per_s
    else:
        return None
    if row.ttft_s > 0 and row.prompt_tokens > 0:
        prefill_tps = row.prompt_tokens / row.ttft_s
    else:
        prefill_tps = decode_tps * PREFILL_SPEEDUP
    power_w = row.avg_power_w
    if power_w <= 0 and row.latency_s > 0:
        power_w = row.energy_j / row.latency_s
    return Rates(prefill_tps, decode_tps, max(power_w, 0.0))


@dataclass
class DeviceCurve:
    """Rates of one device at its profiled batch sizes, interpolated in between.

    Attributes:
        batch_sizes: profiled batch sizes, ascending.
        rates: the rates at each of ``batch_sizes``.
        batch_exponent: how aggregate rates shrink below the smallest profiled batch size.
    """

    batch_sizes: tuple[int, ...]
    rates: tuple[Rates, ...]
    batch_exponent: float
    _cache: dict[int, Rates] = field(default_factory=dict, repr=False, compare=False)

    def at(self, batch_size: int) -> Rates:
        """Rates at ``batch_size`` (memoised: the router asks for few distinct sizes)."""
        cached = self._cache.get(batch_size)
        if cached is None:
            cached = self._cache[batch_size] = self._interpolate(max(1, batch_size))
        return cached

    def _interpolate(self, b: int) -> Rates:
        sizes, rates = self.batch_sizes, self.rates
        if b <= sizes[0]:
            scale = (b / sizes[0]) ** self.batch_exponent
            r = rates[0]
            return Rates(r.prefill_tokens_per_s * scale, r.decode_tokens_per_s * scale, r.power_w)
        if b >= sizes[-1]:
            return rates[-1]
        i = bisect_left(sizes, b)
        lo, hi = rates[i - 1], rates[i]
        t = math.log(b / sizes[i - 1]) / math.log(sizes[i] / sizes[i - 1])
        return Rates(*(a + t * (c - a) for a, c in zip(_tuple(lo), _tuple(hi), strict=True)))


def _tuple(r: Rates) -> tuple[float, float, float]:
    return (r.prefill_tokens_per_s, r.decode_tokens_per_s, r.power_w)


@dataclass
class ProfilePredictor:
    """Predicts from fitted device curves (source "profile"), else nominally (source "nominal")."""

    curves: dict[str, DeviceCurve]
    fallback: Predictor = field(default_factory=NominalPredictor)

    def predict(self, device: Device, shape: BatchShape) -> Prediction:
        """Predict latency and energy of ``shape`` on ``device``."""
        curve = self.curves.get(device.name)
        if curve is None:
            return self.fallback.predict(device, shape)
        r = curve.at(shape.batch_size)
        latency_s = (shape.prompt_tokens / r.prefill_tokens_per_s
                     + shape.max_new_tokens / r.decode_tokens_per_s)
        return Prediction(latency_s=latency_s, energy_j=r.power_w * latency_s, source="profile")


def fit_curve(device: Device, rows: Iterable[DeviceProfile]) -> DeviceCurve | None:
    """Fit the curve of ``device`` from its profile rows (one per batch size); None if unusable."""
    points = sorted(
        (row.batch_size, rates)
        for row in rows
        if row.batch_size > 0 and (rates := rates_from_row(row)) is not None
    )
    if not points:
        return None
    exponent = BATCH_EXPONENT_BY_KIND.get(device.kind, 0.5)
    return DeviceCurve(tuple(b for b, _ in points), tuple(r for _, r in points), exponent)


def load_profiles(
    engine: Engine, registry: Registry, model: str | None = None
) -> dict[str, list[DeviceProfile]]:
    """Current profile rows of each registered device that has any, one row per batch size.

    A device benchmarked with several models keeps the rows of the most recently benchmarked
    one (or of ``model`` when given); for a batch size measured twice the newer row wins.

    Raises:
        ServiceError: the database cannot be read.
    """
    stmt = select(DeviceProfile).where(DeviceProfile.device.in_(registry.names))  # type: ignore[attr-defined]
    if model is not None:
        stmt = stmt.where(DeviceProfile.model == model)  # type: ignore[arg-type]
    try:
        with Session(engine) as session:
            rows = list(session.scalars(stmt))
    except SQLAlchemyError as e:
        raise ServiceError(f"cannot read device profiles: {e}") from e
    by_device: dict[str, list[DeviceProfile]] = {}
    for row in rows:
        by_device.setdefault(row.device, []).append(row)
    return {name: _current(rows) for name, rows in by_device.items()}


def _current(rows: Sequence[DeviceProfile]) -> list[DeviceProfile]:
    newest = max(rows, key=lambda r: (_naive(r.created_at), r.id or 0))
    latest: dict[int, DeviceProfile] = {}
    for row in sorted(rows, key=lambda r: (_naive(r.created_at), r.id or 0)):
        if row.model == newest.model:
            latest[row.batch_size] = row
    return [latest[b] for b in sorted(latest)]


def _naive(ts: datetime) -> datetime:
    # SQLite returns naive UTC datetimes, PostgreSQL aware ones in the session's zone.
    return ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo else ts


def load_predictor(engine: Engine, registry: Registry, model: str | None = None) -> Predictor:
    """A :class:`ProfilePredictor` fitted to the profiles in SQL, nominal where there are none.

    Raises:
        ServiceError: the database cannot be read.
    """
    profiles = load_profiles(engine, registry, model)
    curves = {}
    for device in registry.devices:
        curve = fit_curve(device, profiles.get(device.name, []))
        if curve is not None:
            curves[device.name] = curve
    return ProfilePredictor(curves)


def profile_status(engine: Engine, registry: Registry, model: str | None = None) -> dict[str, str]:
    """Say for each device whether it is predicted from a profile or nominally.

    Returns:
        ``{name: "profiled (N batch sizes, YYYY-MM-DD)" | "nominal (no profile)"}`` in
        registry order; the date is that of the newest profile row.

    Raises:
        ServiceError: the database cannot be read.
    """
    profiles = load_profiles(engine, registry, model)
    status = {}
    for device in registry.devices:
        rows = profiles.get(device.name)
        if rows and fit_curve(device, rows) is not None:
            date = max(_naive(r.created_at) for r in rows).date().isoformat()
            status[device.name] = f"profiled ({len(rows)} batch sizes, {date})"
        else:
            status[device.name] = "nominal (no profile)"
    return status


def recommended_batch_size(
    engine: Engine, device: Device, latency_target_s: float, model: str | None = None
) -> int | None:
    """The profiled batch size with the least J/token whose measured latency meets the target.

    Only sizes up to ``device.max_batch_size`` with a positive J/token count; equal J/token
    prefers the larger size. None when the device has no such profile row.

    Raises:
        ServiceError: the database cannot be read.
    """
    rows = load_profiles(engine, Registry(devices=[device]), model).get(device.name, [])
    fitting = [
        r for r in rows
        if r.batch_size <= device.max_batch_size and 0 < r.latency_s <= latency_target_s
        and r.j_per_token > 0
    ]
    if not fitting:
        return None
    return min(fitting, key=lambda r: (r.j_per_token, -r.batch_size)).batch_size
