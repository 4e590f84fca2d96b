"""CPU package and DRAM energy from the RAPL counters under ``/sys/class/powercap``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import MeterError
from workers.meters.base import EnergyReading
from workers.meters.sampling import CounterPoller

RAPL_ROOT = Path("/sys/class/powercap")


@dataclass(frozen=True)
class RaplDomain:
    """One RAPL domain in sysfs: a CPU package or the DRAM attached to it."""

    path: Path
    name: str
    max_energy_range_uj: int

    @property
    def kind(self) -> str:
        """``"package"`` or ``"dram"``."""
        return "dram" if self.name == "dram" else "package"

    def read_uj(self) -> int:
        """Current value of the domain's energy counter, microjoules.

        Raises:
            MeterError: the counter cannot be read (often: only root may, since Linux 5.10).
        """
        try:
            return int((self.path / "energy_uj").read_text().strip())
        except (OSError, ValueError) as e:
            raise MeterError(f"RAPL {self.path / 'energy_uj'}: {e}") from e


def rapl_domains(root: Path = RAPL_ROOT, *, dram: bool = True) -> list[RaplDomain]:
    """The package domains (``intel-rapl:N`` named ``package-*``) and, with ``dram``, the DRAM
    domains (named ``dram``, a sub-domain ``intel-rapl:N:M`` on most servers, top-level on some).

    ``core`` and ``uncore`` lie inside their package and ``psys`` overlaps everything, so they
    are left out; DRAM is outside the package, so package + DRAM does not count anything twice.
    """
    domains = []
    for path in sorted(root.glob("intel-rapl:*")):
        try:
            name = (path / "name").read_text().strip()
            max_uj = int((path / "max_energy_range_uj").read_text().strip())
        except (OSError, ValueError):
            continue
        top_level = path.name.count(":") == 1
        if (top_level and name.startswith("package")) or (dram and name == "dram"):
            domains.append(RaplDomain(path, name, max_uj))
    return domains


def rapl_package_domains(root: Path = RAPL_ROOT) -> list[RaplDomain]:
    """The package domains only (see :func:`rapl_domains`)."""
    return rapl_domains(root, dram=False)


class RaplMeter:
    """CPU package (and DRAM) energy from RAPL counters in ``/sys/class/powercap``.

    Sums all package domains and, where exposed, the DRAM domains, so it measures the whole CPU
    and its memory, not only this process; ``parts_j`` keeps ``package`` and ``dram`` apart. A
    counter wraps at ``max_energy_range_uj``; a background poll every ``poll_interval_s``
    catches each wrap, so intervals longer than one wrap period (minutes at full load) stay
    correct.

    Args:
        root: the powercap sysfs directory.
        poll_interval_s: how often the counters are read during an interval.
        dram: include DRAM domains.
    """

    source = "rapl"
    measured = True

    def __init__(self, root: Path = RAPL_ROOT, poll_interval_s: float = 10.0,
                 *, dram: bool = True) -> None:
        self._domains = rapl_domains(root, dram=dram)
        if not any(d.kind == "package" for d in self._domains):
            raise MeterError(f"no RAPL package domains under {root}")
        self._poller = CounterPoller(self._read_all, self._delta, poll_interval_s, "rapl-poll")
        self._t0 = 0.0

    @property
    def domains(self) -> list[RaplDomain]:
        """The domains summed, packages first in sysfs order."""
        return list(self._domains)

    @staticmethod
    def available(root: Path = RAPL_ROOT) -> bool:
        """Whether a package counter under ``root`` exists and this process may read it."""
        try:
            domains = rapl_package_domains(root)
            for d in domains:
                d.read_uj()
        except MeterError:
            return False
        return bool(domains)

    def start(self) -> None:
        """Begin an interval."""
        self._t0 = time.monotonic()
        self._poller.start()

    def stop(self) -> EnergyReading:
        """End the interval and return the packages' and DRAM's energy over it."""
        totals_uj = self._poller.stop()
        parts = {"package": 0.0, "dram": 0.0}
        for d, uj in zip(self._domains, totals_uj, strict=True):
            parts[d.kind] += uj / 1e6
        if not any(d.kind == "dram" for d in self._domains):
            del parts["dram"]
        energy_j = sum(totals_uj) / 1e6
        return EnergyReading(energy_j, time.monotonic() - self._t0, self.source, True, parts)

    def _read_all(self) -> list[int]:
        return [d.read_uj() for d in self._domains]

    def _delta(self, i: int, before: int, after: int) -> int:
        return wrapped_delta_uj(before, after, self._domains[i].max_energy_range_uj)


def wrapped_delta_uj(before: int, after: int, max_energy_range_uj: int) -> int:
    """Counter increase from ``before`` to ``after`` allowing for one wrap at the range end."""
    delta = after - before
    return delta + max_energy_range_uj if delta < 0 else delta
