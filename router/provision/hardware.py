"""Embodied carbon of GPUs and hosts, with provenance: ``router/data/hardware/*.csv``.

Two tables ship as package data (see ``router/data/hardware/SOURCES.md``):

- ``embodied_gpus.csv``: per GPU (or SoC module), kgCO2e. Every row is an *estimate* by the
  ACT model (Gupta et al., ISCA 2022): die area x carbon per area of the process node (fab
  energy x fab grid intensity + process gases + materials, over the yield), 150 g per package,
  plus the memory at one per-GB rate. The inputs (die area, node, fab location, memory) are in
  the row, and :func:`act_gpu_kgco2e` recomputes the figure from them.
- ``embodied_hosts.csv``: per host (the server around the GPUs: CPU, DRAM, SSD, NIC, chassis,
  rack share), kgCO2e, either ``published`` (a vendor's product carbon footprint), or composed
  from the GreenSKU part figures of :mod:`pipeline.accounting.embodied` (``parts``), or an ``estimate``.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from importlib.resources import files

from pipeline.accounting.embodied import EmbodiedPart, load_parts
from pipeline.errors import ConfigError

# ACT's Table 1 (facebookresearch/ACT, act/models/logic/*.yaml): fab energy per area (kWh/cm2),
# process gases at 97% abatement (the mean of its 95% and 99% tables, g/cm2), materials
# (g/cm2); its fab grid intensities (location_2022.yaml, g/kWh), default yield and package.
ACT_EPA_KWH_PER_CM2 = {"5nm": 2.75, "7nm": 2.15, "8nm": 1.52, "14nm": 1.2, "28nm": 0.9}
ACT_GPA97_G_PER_CM2 = {"5nm": 327.5, "7nm": 275.0, "8nm": 195.0, "14nm": 162.5, "28nm": 137.5}
ACT_MPA_G_PER_CM2 = 500.0
ACT_FAB_G_PER_KWH = {"taiwan": 583.0, "korea": 430.0, "usa": 380.0}
ACT_YIELD = 0.875
ACT_PACKAGE_KG = 0.15
# One DRAM rate for GPU memory and host DIMMs alike (GreenSKU's DDR5-4800 64 GB DIMM, from a
# Dell LCA: 105.4 kg / 64 GB), so GPU-vs-host comparisons do not hinge on two sources.
# ACT's own Hynix figure (65 g/GB for DDR4) is 25x lower; HBM is likely above both.
MEMORY_KG_PER_GB = 105.4 / 64


@dataclass(frozen=True)
class HardwareFigure:
    """Embodied carbon of one GPU or host, and where the figure comes from.

    Attributes:
        key: e.g. ``"gpu:h100-sxm"`` or ``"host:hgx-8gpu"``.
        name: what the row describes.
        kgco2e: embodied carbon of one unit.
        basis: ``published``, ``parts`` (sum of published part figures for an assumed
            configuration) or ``estimate``.
        source: the method and the publication.
        url: where to find the source.
        year: year of the source.
    """

    key: str
    name: str
    kgco2e: float
    basis: str
    source: str
    url: str
    year: int

    @property
    def is_estimate(self) -> bool:
        """Whether the figure is ecobatch's estimate rather than a published number."""
        return self.basis != "published"


def act_gpu_kgco2e(die_mm2: float, node: str, fab: str, memory_gb: float) -> float:
    """ACT estimate of a GPU: die + one package + memory at :data:`MEMORY_KG_PER_GB`.

    Raises:
        ConfigError: a node or fab location ACT's tables here do not hold.
    """
    try:
        fab_kg_per_cm2 = ACT_EPA_KWH_PER_CM2[node] * ACT_FAB_G_PER_KWH[fab] / 1000.0
        cpa_kg_per_cm2 = (fab_kg_per_cm2 + (ACT_GPA97_G_PER_CM2[node] + ACT_MPA_G_PER_CM2) / 1000.0)
    except KeyError as e:
        raise ConfigError(f"ACT estimate: unknown node or fab {e}") from e
    die_kg = die_mm2 / 100.0 * cpa_kg_per_cm2 / ACT_YIELD
    return die_kg + ACT_PACKAGE_KG + memory_gb * MEMORY_KG_PER_GB


def _read(name: str) -> list[dict[str, str]]:
    text = files("router").joinpath("data", "hardware", name).read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def _figure(table: str, line: int, row: dict[str, str]) -> HardwareFigure:
    try:
        return HardwareFigure(row["key"], row["name"], float(row["kgco2e"]), row["basis"],
                              row["source"], row["url"], int(row["year"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{table} line {line}: {e}") from e


def load_gpus() -> dict[str, HardwareFigure]:
    """The packaged GPU figures by key."""
    rows = _read("embodied_gpus.csv")
    return {f.key: f for f in (_figure("embodied_gpus.csv", i, r) for i, r in enumerate(rows, 2))}


def load_hosts() -> dict[str, HardwareFigure]:
    """The packaged host figures by key."""
    rows = _read("embodied_hosts.csv")
    return {f.key: f for f in (_figure("embodied_hosts.csv", i, r) for i, r in enumerate(rows, 2))}


def host_parts_kgco2e(parts: str, extra_kgco2e: float = 0.0,
                      table: dict[str, EmbodiedPart] | None = None) -> float:
    """Sum of ``"2*cpu:genoa-80c;32*dram:ddr5-64gb;..."`` from the GreenSKU parts, plus extra.

    Raises:
        ConfigError: an unknown part or a malformed count.
    """
    table = table if table is not None else load_parts()
    total = extra_kgco2e
    for item in filter(None, (p.strip() for p in parts.split(";"))):
        count, _, key = item.partition("*")
        if key not in table:
            raise ConfigError(f"host parts: unknown part {key!r} (known: {', '.join(sorted(table))})")
        try:
            total += int(count) * table[key].kgco2e
        except ValueError as e:
            raise ConfigError(f"host parts: bad count in {item!r}") from e
    return total


def host_rows() -> list[dict[str, str]]:
    """The raw host rows (for checks that recompute ``parts`` sums)."""
    return _read("embodied_hosts.csv")


def gpu_rows() -> list[dict[str, str]]:
    """The raw GPU rows (for checks that recompute the ACT estimates)."""
    return _read("embodied_gpus.csv")
