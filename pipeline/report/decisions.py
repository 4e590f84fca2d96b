"""The report's routing section: for each batch, where it ran, under which strategy, and why.

Reads what the router stored on each Batch row (``reason`` and the ``scores`` of every
candidate device), so a decision can be explained long after it was made.
"""

from __future__ import annotations

from typing import Any

from pipeline.ledger.models import Batch

MAX_DECISION_ROWS = 200
DECISION_COLUMNS = ["batch", "device", "strategy", "size", "predicted_carbon_g",
                    "predicted_finish_s", "candidates", "reason"]


def decision_row(batch: Batch) -> list[Any]:
    """One row: the batch, its device, and every candidate's score (lower was better)."""
    scores: dict[str, dict[str, Any]] = batch.scores or {}
    chosen = scores.get(batch.device, {})
    return [batch.id[:8], batch.device, batch.strategy, batch.size, batch.predicted_carbon_g,
            chosen.get("finish_s"), _candidates(scores), batch.reason or ""]


def _candidates(scores: dict[str, dict[str, Any]]) -> str:
    parts = []
    for name, s in sorted(scores.items()):
        if s.get("excluded"):
            parts.append(f"{name}: excluded ({s['excluded']})")
        elif s.get("score") is not None:
            parts.append(f"{name}: {s['score']:.4g}")
    return "; ".join(parts)


def decision_rows(batches: list[Batch]) -> tuple[list[list[Any]], str]:
    """Rows in creation order, at most :data:`MAX_DECISION_ROWS`, and a note saying so."""
    ordered = sorted(batches, key=lambda b: (b.created_at, b.id))
    note = "score: the strategy's own (lower is better); see batch.scores for every metric"
    if len(ordered) > MAX_DECISION_ROWS:
        note += (f"; first {MAX_DECISION_ROWS} of {len(ordered)} batches shown "
                 "(the ledger's batch table has all)")
    return [decision_row(b) for b in ordered[:MAX_DECISION_ROWS]], note
