"""Rows that cross package lines, typed so that mypy checks their keys.

A worker hands the ledger a batch's :class:`BatchFigures` and its :class:`ResultRow` s; the
router hands it :class:`BatchRow` s; the ledger hands the CLI, ``run`` and the client
:class:`ExportRow` s. Each is the column set of the table it is written to or read from.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NotRequired, TypedDict

from pipeline.ledger.models import BatchStatus


class PromptFigures(TypedDict):
    """One prompt's share of a batch's figures, keyed like the matching ``Result`` columns
    (what accounting computes for it)."""

    energy_j: float
    host_energy_j: float | None
    carbon_g: float
    embodied_carbon_g: float
    water_l: float
    cost_usd: float | None
    intensity_g_per_kwh: float
    intensity_signal: str | None


class ResultRow(PromptFigures):
    """One prompt's answer and its share of the batch's figures (a ``Result`` row)."""

    prompt_id: str
    job_id: str
    batch_id: str
    device: str
    output: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    ttft_s: float
    latency_s: float
    energy_source: str
    energy_measured: bool
    host_energy_source: str | None
    host_energy_measured: bool | None
    created_at: datetime


class BatchFigures(TypedDict):
    """What a finished batch measured (columns of its ``Batch`` row); the host's share only
    where it was metered."""

    latency_s: float
    energy_j: float
    energy_source: str
    energy_measured: bool
    peak_memory_bytes: int
    energy_notes: str | None
    host_energy_j: NotRequired[float]
    host_energy_source: NotRequired[str]
    host_energy_measured: NotRequired[bool]


class BatchRow(TypedDict):
    """A new batch as the router writes it: its device, and why it was chosen."""

    id: str
    created_at: datetime
    device: str
    model: str | None
    strategy: str
    size: int
    status: BatchStatus
    attempts: int
    predicted_latency_s: float
    predicted_energy_j: float
    predicted_carbon_g: float | None
    prediction_source: str
    reason: str
    scores: dict[str, Any]


class ExportRow(TypedDict):
    """One prompt of a job as ``ecobatch results`` writes it: answered, or dead with its error
    (then the result fields are None).

    ``model`` is the served model that answered (its batch's model: the one the worker
    loaded), ``model_quality`` that model's score as the router weighed it (the batch's
    decision record); both None for a dead prompt, a batch routed before models were chosen,
    or a model without a score.
    """

    id: str
    prompt_id: str
    status: str
    prompt: str | None
    messages: list[dict[str, Any]] | None
    output: str | None
    finish_reason: str | None
    device: str | None
    model: str | None
    model_quality: float | None
    batch_id: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    ttft_s: float | None
    latency_s: float | None
    energy_j: float | None
    energy_source: str | None
    energy_measured: bool | None
    host_energy_j: float | None
    host_energy_source: str | None
    host_energy_measured: bool | None
    carbon_g: float | None
    embodied_carbon_g: float | None
    water_l: float | None
    cost_usd: float | None
    intensity_g_per_kwh: float | None
    intensity_signal: str | None
    metadata: dict[str, Any] | None
    error: str | None


EXPORT_FIELDS: tuple[str, ...] = tuple(ExportRow.__annotations__)
"""The export columns, in order."""
