"""CPU thermal design power by model name, from CodeCarbon's maintained table.

``pipeline/data/cpu_power.csv`` (columns ``Name,TDP``; watts for the whole chip) is copied from
CodeCarbon (MIT licence; source and version in ``pipeline/data/SOURCES.md``). It is used only
for estimates, where no energy counter exists: a TDP is a design ceiling, not a measurement.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from pipeline.errors import ConfigError

_NOISE = re.compile(r"\((?:R|TM|r|tm)\)|\bCPU\b|@.*$|\b\d+-Core\b|\bProcessor\b|\bwith\b.*$")


@dataclass(frozen=True)
class TdpMatch:
    """A table row matched to a CPU model name.

    Attributes:
        name: the table's model name.
        tdp_w: the chip's thermal design power, watts.
        exact: True when the normalised names are equal, False for a model-number match.
    """

    name: str
    tdp_w: float
    exact: bool


def normalise_cpu_name(name: str) -> str:
    """``Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz`` -> ``Intel Xeon Gold 6148``."""
    return " ".join(_NOISE.sub(" ", name).split())


class CpuTdpTable:
    """The TDP table, loaded once per instance.

    Args:
        text: CSV text with ``Name,TDP`` columns; the packaged table by default.
    """

    def __init__(self, text: str | None = None) -> None:
        if text is None:
            text = files("pipeline").joinpath("data/cpu_power.csv").read_text(encoding="utf-8")
        self._rows = _parse(text)
        self._by_name = {normalise_cpu_name(n).lower(): (n, w) for n, w in self._rows}

    def __len__(self) -> int:
        return len(self._rows)

    def lookup(self, cpu_name: str) -> TdpMatch | None:
        """The row for ``cpu_name`` (as ``/proc/cpuinfo`` writes it), or None.

        An exact match of the normalised names wins; else a row of the same vendor (Intel or
        AMD) whose model number (the last word) is the CPU's, if exactly one row has it.
        """
        norm = normalise_cpu_name(cpu_name)
        hit = self._by_name.get(norm.lower())
        if hit is not None:
            return TdpMatch(hit[0], hit[1], True)
        words = norm.split()
        if len(words) < 2 or not any(c.isdigit() for c in words[-1]):
            return None  # "Intel Xeon Processor" (a VM hiding its model) names no model
        vendor = next((w for w in (x.lower() for x in words) if w in ("intel", "amd")), "")
        model = words[-1].lower()
        same = [(n, w) for n, w in self._rows
                if n.lower().startswith(vendor) and n.lower().split()[-1] == model]
        return TdpMatch(same[0][0], same[0][1], False) if len(same) == 1 else None


def _parse(text: str) -> list[tuple[str, float]]:
    reader = csv.reader(io.StringIO(text))
    if next(reader, None) != ["Name", "TDP"]:
        raise ConfigError("CPU TDP table: header must be Name,TDP")
    rows = []
    for line, row in enumerate(reader, start=2):
        try:
            name, tdp = row
            rows.append((name, float(tdp)))
        except ValueError as e:
            raise ConfigError(f"CPU TDP table line {line}: {row!r}: {e}") from e
    return rows


def local_cpu_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """This machine's CPU model name from ``/proc/cpuinfo``, or None where it is not given."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            return value.strip()
    return None
