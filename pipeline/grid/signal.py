"""Which grid intensity a carbon figure was computed from: average or marginal, and its source.

An *average* intensity (Electricity Maps; direct, i.e. combustion only, or life-cycle) is the
emissions of all generation in a zone divided by the energy generated; a *marginal* rate
(WattTime's MOER) is the emissions of the generator that answers one more kWh. They often
differ by a factor of two and are not interchangeable, so every result row records the signal
its carbon came from (``Result.intensity_signal``), as ``<kind>:<source>``.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Final, NamedTuple, Protocol, runtime_checkable

if TYPE_CHECKING:
    from pipeline.grid.trace import CarbonSource

# The packaged traces hold Electricity Maps' life-cycle column (pipeline/data/SOURCES.md).
TRACE: Final = "average-lifecycle:electricitymaps-trace"
ELECTRICITYMAPS_API: Final = "average-lifecycle:electricitymaps"  # emissionFactorType=lifecycle
WATTTIME_MOER: Final = "marginal:watttime"
REGISTRY_FIXED: Final = "fixed:registry"  # a device's own intensity_g_per_kwh: kind unknown


def electricitymaps_csv(basis: str) -> str:
    """The signal of an Electricity Maps CSV export read on ``basis`` (``lca`` or ``direct``)."""
    return f"average-{'lifecycle' if basis == 'lca' else basis}:electricitymaps-csv"


class IntensityReading(NamedTuple):
    """An intensity and the signal it is (None where the source does not say)."""

    g_per_kwh: float
    signal: str | None


@runtime_checkable
class SignalledCarbonSource(Protocol):
    """A carbon source that says which signal each of its answers is."""

    def intensity_reading(self, zone: str, at: datetime) -> IntensityReading:
        """gCO2e/kWh of ``zone`` in the hour holding ``at``, with its signal."""
        ...


def read_intensity(source: CarbonSource, zone: str, at: datetime) -> IntensityReading:
    """``source``'s intensity of ``zone`` at ``at`` with its signal, where it gives one."""
    if isinstance(source, SignalledCarbonSource):
        return source.intensity_reading(zone, at)
    return IntensityReading(source.intensity_g_per_kwh(zone, at), None)
