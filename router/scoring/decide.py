"""Turn a strategy's scores into a decision that respects the hard limits and says why.

Order of rules:

1. A candidate that breaks a hard limit (memory, no live worker; see ``DeviceOption.excluded``)
   is never chosen.
2. Among the others, the best score wins (ties: earlier in registry order).
3. With a latency target (SLO), a best candidate predicted to finish after it gives way to the
   best-scoring candidate that meets it; if none meets it, the earliest finisher is chosen. The
   target runs from the batch's oldest prompt's arrival, so the time it already waited to be
   batched (``waited_s``) comes off it; the device's queue is in each option's ``finish_s``.

Every candidate's score and metrics go into :attr:`Decision.scores`, stored on the Batch row so
``ecobatch report`` can explain the choice afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.errors import UnroutableError
from router.scoring.options import DeviceOption
from router.scoring.strategies import Strategy


@dataclass(frozen=True)
class Decision:
    """The chosen option, why, and what every candidate scored."""

    option: DeviceOption
    reason: str
    scores: dict[str, dict[str, Any]]


def decide(strategy: Strategy, options: Sequence[DeviceOption],
           slo_s: float | None = None, waited_s: float = 0.0) -> Decision:
    """Choose among ``options`` with ``strategy`` under the hard limits and ``slo_s``.

    Args:
        strategy: scores the usable options.
        options: every candidate, excluded ones included (for the record).
        slo_s: latency target, seconds from a prompt's arrival to its batch's finish; None
            for none.
        waited_s: how long the batch's oldest prompt has already waited (to be batched and
            routed); the batch must finish within ``slo_s - waited_s`` from now.

    Raises:
        UnroutableError: every option is excluded (or there are none); the message says why.
    """
    usable = [o for o in options if o.excluded is None]
    if not usable:
        raise UnroutableError(_why_none(options))
    scores = strategy.score(usable)
    ranked = sorted(range(len(usable)), key=lambda i: (scores[i], i))
    best = usable[ranked[0]]
    chosen, reason = best, f"{strategy.name}: best score"
    if slo_s is not None and best.finish_s > slo_s - waited_s:
        chosen, reason = _meet_slo(strategy.name, [usable[i] for i in ranked], best,
                                   slo_s, waited_s)
    strategy.chose(chosen)
    excluded = [f"{o.label} ({o.excluded})" for o in options if o.excluded]
    if excluded:
        reason += "; excluded " + ", ".join(excluded)
    by_name = {o.label: s for o, s in zip(usable, scores, strict=True)}
    return Decision(chosen, reason, {o.label: _record(o, by_name.get(o.label)) for o in options})


def _meet_slo(name: str, ranked: list[DeviceOption], best: DeviceOption,
              slo_s: float, waited_s: float) -> tuple[DeviceOption, str]:
    budget_s = slo_s - waited_s
    late = f"{best.label} would finish in {best.finish_s:.1f} s > SLO {slo_s:g} s"
    if waited_s > 0:
        late += f" less {waited_s:.1f} s already waited"
    meeting = [o for o in ranked if o.finish_s <= budget_s]
    if meeting:
        chosen = meeting[0]
        return chosen, (f"{name}: {late}; {chosen.label} is the best-scoring device that "
                        f"meets it ({chosen.finish_s:.1f} s)")
    chosen = min(ranked, key=lambda o: o.finish_s)
    return chosen, (f"{name}: {late}; no device meets it, so the earliest finisher "
                    f"{chosen.label} ({chosen.finish_s:.1f} s)")


def _record(o: DeviceOption, score: float | None) -> dict[str, Any]:
    return {
        "score": score, "carbon_g": _known(o.carbon_g), "embodied_g": _known(o.embodied_g),
        "finish_s": o.finish_s, "latency_s": o.prediction.latency_s,
        "energy_j": o.prediction.energy_j, "water_l": _known(o.water_l), "cost_usd": o.cost_usd,
        "memory_bytes": o.memory_bytes, "excluded": o.excluded,
        "prediction_source": o.prediction.source,
        **({} if o.model is None else {"model": o.model.name, "quality": o.quality}),
    }


def _known(value: float) -> float | None:
    """None for an unknown (NaN) figure: JSON, and PostgreSQL's json type, have no NaN."""
    return None if math.isnan(value) else value


def _why_none(options: Sequence[DeviceOption]) -> str:
    if not options:
        return "no device can take this batch (batch larger than every max_batch_size)"
    return "no device can take this batch: " + ", ".join(
        f"{o.label} ({o.excluded})" for o in options)
