"""Plan files: an hourly allocation from :mod:`router.allocation.lp` that the live router can follow.

``ecobatch optimise --devices REGISTRY --plan-out plan.json`` writes one; the router follows it
when ``ECOBATCH_STRATEGY=optimal`` (or a job's ``--strategy optimal``) and
``ECOBATCH_PLAN_FILE=plan.json``. The file is JSON::

    {"version": 1, "objective": "lex:cost,carbon,delay",
     "created_at": "2026-01-05T09:12:00Z", "start": "2026-01-05T10:00:00Z",
     "sites": [{"name": "DE-LU", "devices": ["ada2000", "orin-nx"], "shares": [0.75, ...]},
               {"name": "GB", "devices": ["h100"], "shares": [0.25, ...]}],
     "objectives": {"cost": 1.2, "carbon": 3400.0, "delay": 91.0, "water": 2.1}}

``shares[h]`` is the site's share of hour ``start + h``'s load; every hour's shares sum to 1, or
are all 0 for an hour with no load. ``objectives`` are the LP's cost (USD), carbon (gCO2e),
delay (token-seconds) and water (L), for the record.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.errors import ConfigError

PLAN_VERSION: Literal[1] = 1
SHARE_SUM_TOL = 1e-6
Share = Annotated[float, Field(ge=0.0, le=1.0 + SHARE_SUM_TOL)]


class PlanSite(BaseModel):
    """One site of a plan: its devices and its share of each hour's load."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    devices: list[str]
    shares: list[Share] = Field(min_length=1)


class PlanDoc(BaseModel):
    """The whole plan file; validation errors name the field (``sites.1.shares.3``)."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = PLAN_VERSION
    objective: str = Field(min_length=1)
    created_at: AwareDatetime
    start: AwareDatetime
    sites: list[PlanSite] = Field(min_length=1)
    objectives: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> PlanDoc:
        hours = len(self.sites[0].shares)
        seen: dict[str, str] = {}
        for i, site in enumerate(self.sites):
            if len(site.shares) != hours:
                raise ValueError(f"sites.{i}.shares: {len(site.shares)} hours, but sites.0 "
                                 f"has {hours}")
            for name in site.devices:
                if name in seen:
                    raise ValueError(f"sites.{i}.devices: {name!r} is already in site "
                                     f"{seen[name]!r}")
                seen[name] = site.name
        for h, total in enumerate(self.shares().sum(axis=0)):
            if total > SHARE_SUM_TOL and abs(total - 1.0) > 1e-3:
                raise ValueError(f"sites.*.shares.{h}: hour {h}'s shares sum to {total:.4f}, "
                                 "not 1 (or 0 for an hour without load)")
        return self

    @property
    def hours(self) -> int:
        """Hours the plan covers."""
        return len(self.sites[0].shares)

    def shares(self) -> NDArray[np.float64]:
        """Shares per site and hour, shape (sites, hours)."""
        return np.array([s.shares for s in self.sites], dtype=np.float64)

    def site_of(self) -> dict[str, int]:
        """Site index of each device name."""
        return {name: i for i, s in enumerate(self.sites) for name in s.devices}


def save_plan(path: Path, shares: NDArray[np.float64], site_of: Mapping[str, int],
              start: datetime, *, site_names: Sequence[str], objective: str,
              objectives: Mapping[str, float] | None = None,
              created_at: datetime | None = None) -> PlanDoc:
    """Write a plan file (validated first, so a file that is written can be loaded).

    Args:
        path: where to write the JSON.
        shares: share of each hour's load per site, shape (sites, hours)
            (``Allocation.site_shares()``).
        site_of: site index of each device name.
        start: the plan's hour 0, timezone-aware.
        site_names: one name per row of ``shares``.
        objective: how the plan was solved, e.g. ``lex:cost,carbon,delay``.
        objectives: the LP's objective values (cost USD, carbon g, delay token-s, water L).
        created_at: creation time (default now, UTC).

    Raises:
        ConfigError: the plan does not validate (the message names the field) or the file
            cannot be written.
    """
    if len(shares) != len(site_names):
        raise ConfigError(f"plan file {path}: {len(shares)} rows of shares for "
                          f"{len(site_names)} site names")
    devices: list[list[str]] = [[] for _ in site_names]
    for name, site in site_of.items():
        if not 0 <= site < len(site_names):
            raise ConfigError(f"plan file {path}: device {name!r} is in site {site}, but there "
                              f"are {len(site_names)} sites")
        devices[site].append(name)
    raw = {"version": PLAN_VERSION, "objective": objective,
           "created_at": (created_at or datetime.now(UTC)).isoformat(), "start": start.isoformat(),
           "sites": [{"name": n, "devices": d, "shares": [float(x) for x in row]}
                     for n, d, row in zip(site_names, devices, shares, strict=True)],
           "objectives": {k: float(v) for k, v in (objectives or {}).items() if math.isfinite(v)}}
    doc = _validate(raw, path)
    try:
        Path(path).write_text(doc.model_dump_json(indent=1) + "\n", encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"plan file {path}: cannot write: {e}") from e
    return doc


def read_plan(path: Path) -> PlanDoc:
    """Read and validate a plan file.

    Raises:
        ConfigError: missing, not JSON, or a field does not validate (the message names the
            file and the field).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"plan file {path}: cannot read: {e}") from e
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"plan file {path}: not JSON: {e}") from e
    return _validate(raw, path)


def _validate(raw: object, path: Path) -> PlanDoc:
    try:
        return PlanDoc.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        msg = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"plan file {path}: {where + ': ' if where else ''}{msg}") from e
