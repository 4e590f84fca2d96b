"""ecobatch's extension of OpenAI's batch object: when a deferred batch is planned to run and
the CO2e deferral saves, under the one ``ecobatch`` key (as in the output files' bodies).

The figures are the planner's (:mod:`router.deferral.planner`), kept in the ledger's
``JobPlan`` row: carbon of *predicted* energy at the forecast grid intensity, so estimates,
never measurements. The measured figures of the requests are in the output file.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from pipeline.ledger.jobs import job_plan

PLAN_BASIS = ("estimated: predicted energy x PUE x grid intensity, this hour at the router's "
              "grid, later hours at the forecast")


def batch_extension(engine: Engine, record: dict[str, Any]) -> dict[str, Any]:
    """``{"deferred": False}`` for a batch that runs when it can; for a deferred one, its plan:
    ``planned_start_at`` and ``planned_end_at`` (Unix seconds), ``released_at`` (when it was let
    run, or None), ``devices``, predicted ``energy_j``, forecast ``carbon_g`` in the window,
    ``carbon_now_g`` had it started at planning time, and ``carbon_saved_g``; all None until
    the router's planner has planned it (its next pass).

    Raises:
        ServiceError: the ledger cannot be read.
    """
    if not record.get("ecobatch_deferred"):
        return {"deferred": False}
    plan = job_plan(engine, record["id"])
    if plan is None:
        return {"deferred": True, "planned_start_at": None, "planned_end_at": None,
                "released_at": None, "devices": [], "energy_j": None, "carbon_g": None,
                "carbon_now_g": None, "carbon_saved_g": None, "basis": PLAN_BASIS}
    return {"deferred": True, "planned_start_at": _unix(plan["start_at"]),
            "planned_end_at": _unix(plan["end_at"]), "released_at": _unix(plan["released_at"]),
            "devices": list(plan["devices"] or []), "energy_j": plan["energy_j"],
            "carbon_g": plan["carbon_g"], "carbon_now_g": plan["carbon_now_g"],
            "carbon_saved_g": plan["carbon_now_g"] - plan["carbon_g"], "basis": PLAN_BASIS,
            **({"note": plan["note"]} if plan["note"] else {})}


def _unix(t: datetime | None) -> int | None:
    return None if t is None else int(t.timestamp())
