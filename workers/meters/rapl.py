"""CPU package energy from the RAPL counters under ``/sys/class/powercap``."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import MeterError
from workers.energy import EnergyReading

RAPL_ROOT = Path("/sys/class/powercap")


@dataclass(frozen=True)
class RaplDomain:
    """One RAPL package domain in sysfs."""

    path: Path
    name: str
    max_energy_range_uj: int

    def read_uj(self) -> int:
        """Current value of the domain's energy counter, microjoules.

        Raises:
            MeterError: the counter cannot be read (often: only root may, since Linux 5.10).
        """
        try:
            return int((self.path / "energy_uj").read_text().strip())
        except (OSError, ValueError) as e:
            raise MeterError(f"RAPL {self.path / 'energy_uj'}: {e}") from e


def rapl_package_domains(root: Path = RAPL_ROOT) -> list[RaplDomain]:
    """The package domains (``intel-rapl:N`` named ``package-*``) under a powercap root.

    Sub-domains (``intel-rapl:N:M``: core, uncore, dram) lie inside their package and
    ``psys`` overlaps all of them, so only packages are summed.
    """
    domains = []
    for path in sorted(root.glob("intel-rapl:*")):
        if path.name.count(":") != 1:
            continue
        try:
            name = (path / "name").read_text().strip()
            max_uj = int((path / "max_energy_range_uj").read_text().strip())
        except (OSError, ValueError):
            continue
        if name.startswith("package"):
            domains.append(RaplDomain(path, name, max_uj))
    return domains


class RaplMeter:
    """CPU package energy from the RAPL counters in ``/sys/class/powercap`` (Intel and AMD).

    Sums all package domains, so it measures the whole CPU, not only this process. A counter
    wraps at ``max_energy_range_uj``; a background poll every ``poll_interval_s`` catches each
    wrap, so intervals longer than one wrap period (minutes at full load) stay correct.

    Args:
        root: the powercap sysfs directory.
        poll_interval_s: how often the counters are read during an interval.
    """

    source = "rapl"
    measured = True

    def __init__(self, root: Path = RAPL_ROOT, poll_interval_s: float = 10.0) -> None:
        self._domains = rapl_package_domains(root)
        if not self._domains:
            raise MeterError(f"no RAPL package domains under {root}")
        self._poll_interval_s = poll_interval_s
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_uj: list[int] = []
        self._energy_uj = 0
        self._t0 = 0.0

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
        self._last_uj = [d.read_uj() for d in self._domains]
        self._energy_uj = 0
        self._t0 = time.monotonic()
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, name="rapl-poll", daemon=True)
        self._thread.start()

    def stop(self) -> EnergyReading:
        """End the interval and return the packages' energy over it."""
        if self._thread is None:
            raise MeterError("RAPL meter stopped before it was started")
        self._stop.set()
        self._thread.join()
        self._thread = None
        self._accumulate()
        return EnergyReading(self._energy_uj / 1e6, time.monotonic() - self._t0, self.source, True)

    def _poll(self) -> None:
        while not self._stop.wait(self._poll_interval_s):
            try:
                self._accumulate()
            except MeterError:
                continue  # the final read in stop() reports a persistent failure

    def _accumulate(self) -> None:
        with self._lock:
            now = [d.read_uj() for d in self._domains]
            for d, before, after in zip(self._domains, self._last_uj, now, strict=True):
                self._energy_uj += wrapped_delta_uj(before, after, d.max_energy_range_uj)
            self._last_uj = now


def wrapped_delta_uj(before: int, after: int, max_energy_range_uj: int) -> int:
    """Counter increase from ``before`` to ``after`` allowing for one wrap at the range end."""
    delta = after - before
    return delta + max_energy_range_uj if delta < 0 else delta
