"""Embodied carbon of a device: its own figure, or the sum of its parts' default figures.

Part defaults (``pipeline/data/embodied_parts.csv``) are copied from the GreenSKU-Framework
carbon data of Microsoft's AzurePublicDataset (CC-BY 4.0; see ``pipeline/data/SOURCES.md``):
CPU, DRAM, SSD, NIC, server chassis and a rack share, in kgCO2e. That data set has no GPU
figure, so a GPU's embodied carbon must come from the registry (``embodied_kgco2e``).
The same data set assumes a 72-month server lifetime (``GREENSKU_LIFETIME_YEARS``).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from importlib.resources import files
from typing import Final

from pipeline.errors import ConfigError
from pipeline.fleet.devices import Device

GREENSKU_LIFETIME_YEARS: Final = 6.0  # params.yaml: lifetime 72 months


@dataclass(frozen=True)
class EmbodiedPart:
    """One part's default embodied carbon.

    Attributes:
        part: key used in a registry's ``embodied_parts``, e.g. ``"dram:ddr5-64gb"``.
        kgco2e: embodied carbon of one such part.
        power_w: its rated power (informational).
        source: where the figure comes from.
    """

    part: str
    kgco2e: float
    power_w: float
    source: str


def load_parts(text: str | None = None) -> dict[str, EmbodiedPart]:
    """The part defaults by key; the packaged table unless ``text`` is given.

    Raises:
        ConfigError: a row is malformed (the message names its line).
    """
    if text is None:
        text = files("pipeline").joinpath("data/embodied_parts.csv").read_text(encoding="utf-8")
    parts = {}
    for line, row in enumerate(csv.DictReader(io.StringIO(text)), start=2):
        try:
            part = EmbodiedPart(row["part"], float(row["kgco2e"]), float(row["power_w"]),
                                row["source"])
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"embodied parts table line {line}: {e}") from e
        parts[part.part] = part
    return parts


def device_embodied_kgco2e(device: Device, parts: dict[str, EmbodiedPart] | None = None) -> float:
    """The device's embodied kgCO2e: ``embodied_kgco2e`` when the registry sets it (or no parts
    are listed), else the sum of its ``embodied_parts`` (a part may repeat, e.g. two DIMMs).

    Raises:
        ConfigError: an unknown part; the message lists the known ones.
    """
    if "embodied_kgco2e" in device.model_fields_set or not device.embodied_parts:
        return device.embodied_kgco2e
    table = parts if parts is not None else load_parts()
    missing = [p for p in device.embodied_parts if p not in table]
    if missing:
        raise ConfigError(f"device {device.name}: unknown embodied part(s) {missing} "
                          f"(known: {', '.join(sorted(table))})")
    return sum(table[p].kgco2e for p in device.embodied_parts)
