"""Counter increments from the figures a worker writes to the ledger, so that every counter
is the sum of a ledger column: ``ecobatch_energy_joules_total`` over a device is
``SUM(result.energy_j)`` (plus ``host_energy_j`` under ``part="host"``), and so on.

A batch is counted by the worker that writes it, once: a redelivered batch that is already
settled writes nothing and counts nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.fleet.devices import Device
from pipeline.metrics.defs import Metrics

Row = Mapping[str, Any]


def zone_label(device: Device) -> str:
    """The ``zone`` label of a device: its grid zone, or ``fixed`` for a fixed intensity."""
    return device.zone or "fixed"


def _total(rows: Sequence[Row], column: str) -> float:
    return math.fsum(float(r[column]) for r in rows if r.get(column) is not None)


def count_done(metrics: Metrics, device: Device, batch: Row, rows: Sequence[Row]) -> None:
    """Count a batch written as done: ``batch`` holds its Batch columns (``latency_s``, the
    meter), ``rows`` its Result rows."""
    name = device.name
    metrics.batches.labels(name, "done").inc()
    metrics.prompts.labels("done").inc(len(rows))
    metrics.batch_duration.labels(name).observe(float(batch["latency_s"]))
    for r in rows:
        metrics.prompt_latency.labels(name).observe(float(r["latency_s"]))
        metrics.ttft.labels(name).observe(float(r["ttft_s"]))
    metrics.prompt_tokens.labels(name).inc(_total(rows, "prompt_tokens"))
    metrics.completion_tokens.labels(name).inc(_total(rows, "completion_tokens"))
    _count_energy(metrics, name, batch, rows)
    _count_footprint(metrics, device, rows)


def _method(measured: object) -> str:
    return "measured" if measured else "estimated"


def _count_energy(metrics: Metrics, name: str, batch: Row, rows: Sequence[Row]) -> None:
    metrics.energy.labels(name, batch["energy_source"], _method(batch["energy_measured"]),
                          "device").inc(_total(rows, "energy_j"))
    if batch.get("host_energy_source") is not None:
        metrics.energy.labels(name, batch["host_energy_source"],
                              _method(batch.get("host_energy_measured")),
                              "host").inc(_total(rows, "host_energy_j"))


def _count_footprint(metrics: Metrics, device: Device, rows: Sequence[Row]) -> None:
    labels = (device.name, zone_label(device))
    metrics.carbon.labels(*labels, "operational").inc(_total(rows, "carbon_g"))
    metrics.carbon.labels(*labels, "embodied").inc(_total(rows, "embodied_carbon_g"))
    metrics.water.labels(*labels).inc(_total(rows, "water_l"))
    if any(r.get("cost_usd") is not None for r in rows):
        metrics.cost.labels(*labels).inc(_total(rows, "cost_usd"))


def count_dead(metrics: Metrics, device: str, n_prompts: int) -> None:
    """Count a batch dead-lettered with ``n_prompts`` prompts."""
    metrics.batches.labels(device, "dead").inc()
    metrics.prompts.labels("dead").inc(n_prompts)


def count_rejected(metrics: Metrics, n_prompts: int) -> None:
    """Count prompts dead-lettered alone (the backend refused them) before their batch ran."""
    if n_prompts:
        metrics.prompts.labels("dead").inc(n_prompts)
