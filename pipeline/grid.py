"""Grid and site conditions by zone and hour: carbon intensity, electricity price, temperature.

PLACEHOLDER: the protocol below is the contract; the implementation reading the packaged hourly
data is being written.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class CarbonSource(Protocol):
    """Grid carbon intensity of a zone at an hour."""

    def intensity_g_per_kwh(self, zone: str, at: datetime) -> float:
        """gCO2e per kWh in ``zone`` at ``at`` (timezone-aware UTC)."""
        ...
