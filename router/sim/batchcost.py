"""What each batch of a run would cost on each device class: seconds, joules, and per-hour
accounting factors, all from the simulator's own predictor and accounting.

The predictors (:class:`router.predict.nominal.NominalPredictor`,
:class:`router.predict.profiled.ProfilePredictor`)
are linear in a batch's tokens at a given batch size: latency = prompt tokens / prefill rate +
new tokens / decode rate, energy = power x latency. So a class's cost at a batch size is two
coefficients per quantity, one per prompt token and one per new token, read off the predictor
once; :func:`class_rates` checks the linearity instead of assuming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from numpy.typing import NDArray

from pipeline.accounting.account import JOULES_PER_KWH, BatchAccount
from pipeline.errors import ConfigError
from pipeline.grid.trace import GridConditions
from router.predict.predictor import BatchShape, Prediction
from router.sim.batches import BatchTrace
from router.sim.fleet import Fleet

PROBE_TOKENS = 1000  # per sequence; any size works for a linear predictor
LINEAR_RTOL = 1e-6
SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class ClassRates:
    """Per device class ``c`` and batch size ``b``: seconds and joules per token.

    Attributes:
        seconds: shape (C, B + 1, 2): device seconds per prompt token ``[..., 0]`` and per
            new token ``[..., 1]`` in a batch of size ``b`` (row ``b``; row 0 unused).
        joules: the same for IT energy.
        takes: shape (C, B + 1): the class admits batches of size ``b`` (``max_batch_size``).
    """

    seconds: NDArray[np.float64]
    joules: NDArray[np.float64]
    takes: NDArray[np.bool_]


def class_rates(fleet: Fleet, max_size: int) -> ClassRates:
    """Read each class's per-token seconds and joules at batch sizes 1..``max_size``.

    Raises:
        ConfigError: a class's predictor is not linear in the batch's tokens.
    """
    n_c = len(fleet.classes)
    seconds = np.zeros((n_c, max_size + 1, 2))
    joules = np.zeros((n_c, max_size + 1, 2))
    takes = np.zeros((n_c, max_size + 1), dtype=bool)
    for c, cls in enumerate(fleet.classes):
        device = cls.members[0]
        for b in range(1, min(max_size, device.max_batch_size) + 1):
            n = b * PROBE_TOKENS
            prompt, new, both = (fleet.predictor.predict(device, BatchShape(b, p, g))
                                 for p, g in ((n, 0), (0, n), (n, n)))
            _check_linear(device.name, b, prompt, new, both)
            seconds[c, b] = (prompt.latency_s / n, new.latency_s / n)
            joules[c, b] = (prompt.energy_j / n, new.energy_j / n)
            takes[c, b] = True
    return ClassRates(seconds, joules, takes)


def _check_linear(name: str, b: int, prompt: Prediction, new: Prediction,
                  both: Prediction) -> None:
    for what in ("latency_s", "energy_j"):
        parts = getattr(prompt, what) + getattr(new, what)
        if abs(getattr(both, what) - parts) > LINEAR_RTOL * max(abs(parts), 1e-12):
            raise ConfigError(f"device {name!r}: the predictor's {what} at batch size {b} is "
                              "not linear in the batch's tokens; the allocation LP needs it so")


@dataclass(frozen=True)
class BatchCosts:
    """Every batch of a trace on every class.

    Attributes:
        seconds: shape (N, C): predicted latency of batch ``i`` on a device of class ``c``.
        joules: shape (N, C): its predicted IT energy there.
        fits: shape (N, C): the class may take it (batch size and memory).
    """

    seconds: NDArray[np.float64]
    joules: NDArray[np.float64]
    fits: NDArray[np.bool_]

    @property
    def servable(self) -> NDArray[np.bool_]:
        """Batches some class may take; the others are missed by every strategy."""
        return np.asarray(self.fits.any(axis=1))


def batch_costs(fleet: Fleet, trace: BatchTrace, rates: ClassRates) -> BatchCosts:
    """Latency, energy and admissibility of every batch of ``trace`` on every class."""
    size = np.minimum(trace.size, rates.takes.shape[1] - 1)
    tokens = np.stack([trace.prompt_tokens, trace.new_tokens], axis=1).astype(np.float64)
    fits = rates.takes[:, size].T & _memory_fits(fleet, trace)
    return BatchCosts(_per_batch(rates.seconds, size, tokens),
                      _per_batch(rates.joules, size, tokens), np.asarray(fits))


def _per_batch(table: NDArray[np.float64], size: NDArray[np.int64],
               tokens: NDArray[np.float64]) -> NDArray[np.float64]:
    """(N, C): per-token ``table`` rows of each batch's size times its (prompt, new) tokens."""
    return np.asarray(np.einsum("cnk,nk->nc", table[:, size, :], tokens))


def _memory_fits(fleet: Fleet, trace: BatchTrace) -> NDArray[np.bool_]:
    tokens = trace.prompt_tokens + trace.new_tokens
    columns = []
    for cls in fleet.classes:
        need = cls.need_bytes(tokens)
        columns.append(np.ones(len(trace), dtype=bool) if need is None
                       else need <= cls.members[0].memory_bytes)
    return np.stack(columns, axis=1) if columns else np.zeros((len(trace), 0), dtype=bool)


@dataclass(frozen=True)
class HourFactors:
    """Accounting per kWh of IT energy for each class and hour (hour 0 = the run's start).

    Attributes:
        carbon_g: operational gCO2e per kWh (PUE at the hour's temperature x intensity).
        cost_usd: USD per kWh; NaN where the zone has no price for the hour.
        water_l: litres per kWh (site WUE + PUE x the zone's generation water).
    """

    carbon_g: NDArray[np.float64]
    cost_usd: NDArray[np.float64]
    water_l: NDArray[np.float64]


def hour_factors(fleet: Fleet, grid: GridConditions, start: datetime, hours: int) -> HourFactors:
    """Per-kWh carbon, cost and water of each class for ``hours`` hours from ``start``, by
    :meth:`pipeline.accounting.account.BatchAccount.compute` itself (so exactly as a batch that starts
    in that hour is accounted)."""
    shape = (len(fleet.classes), hours)
    carbon, cost, water = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    for c, cls in enumerate(fleet.classes):
        for h in range(hours):
            acc = BatchAccount.compute(grid, cls.members[0], JOULES_PER_KWH, 0.0,
                                       start + timedelta(hours=h))
            carbon[c, h], water[c, h] = acc.carbon_g, acc.water_l
            cost[c, h] = np.nan if acc.cost_usd is None else acc.cost_usd
    return HourFactors(carbon, cost, water)
