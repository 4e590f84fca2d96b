"""Candidate options for a fleet made of classes of identical devices, priced once per class.

:func:`router.scoring.options.options_for` predicts and prices every device, which at 100 devices costs
about half a millisecond per batch. Devices that differ only in their name (same kind, zone,
site, model, profile) get the same prediction and the same price; only their backlog differs.
:meth:`DeviceClasses.options` therefore calls ``options_for`` on one representative per class
and copies each representative's option to the other members with their own backlog. The result is
the list ``options_for`` would return for the whole registry, in the same order, as long as
every device is alive and allowed (the simulator's case); the live router, which checks
heartbeats and planned devices per device, keeps calling ``options_for``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from pipeline.fleet.devices import Device, Registry
from router.predict.predictor import BatchShape, Predictor
from router.scoring.options import DeviceOption, GridNow, MemoryNeed, options_for


@dataclass(frozen=True)
class DeviceClasses:
    """Devices in registry order, cut into runs of identical devices.

    Each run is predicted and priced like its first member, which the predictor and the memory
    need must honour (the simulator's fleets give every member of a run the same profile).
    """

    runs: tuple[tuple[Device, ...], ...]
    reps: Registry

    @classmethod
    def of(cls, runs: Sequence[Sequence[Device]]) -> DeviceClasses:
        """Build from runs of identical devices (each non-empty)."""
        frozen = tuple(tuple(r) for r in runs)
        return cls(frozen, Registry(devices=[r[0] for r in frozen]))

    def options(
        self,
        shape: BatchShape,
        predictor: Predictor,
        grid: GridNow,
        backlog_s: Mapping[str, float],
        *,
        memory_need: MemoryNeed | None = None,
    ) -> list[DeviceOption]:
        """What ``options_for`` returns for all devices, pricing one device per run.

        Args:
            shape: the batch.
            predictor: latency and energy predictions.
            grid: conditions of each representative device now.
            backlog_s: predicted queued seconds per device name (missing means idle).
            memory_need: predicted bytes of the batch per device; None skips the memory check.
        """
        priced = {o.device.name: o for o in options_for(self.reps, shape, predictor, grid, {},
                                                        memory_need=memory_need)}
        out: list[DeviceOption] = []
        for members in self.runs:
            rep = priced.get(members[0].name)
            if rep is None:  # the run cannot take a batch of this size
                continue
            out.extend(replace(rep, device=d, backlog_s=backlog_s.get(d.name, 0.0))
                       for d in members)
        return out
