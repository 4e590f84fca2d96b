"""How much CPU other processes took during a measurement, on a machine shared with others.

The machine's busy CPU time over the interval, less this process's, its live children's and its
finished (waited-for) descendants'. What is left was someone else's: a run whose share is high
was slowed by a neighbour, not by what it measures. Approximate: a daemonised grandchild (the
embedded redis-server) counts as someone else.
"""

from __future__ import annotations

import contextlib
import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import psutil

T = TypeVar("T")


@dataclass
class Noise:
    """Other processes' CPU seconds over an interval, filled in when the interval ends."""

    wall_s: float = 0.0
    others_cpu_s: float = 0.0

    @property
    def share(self) -> float:
        """Others' CPU time as a fraction of all cores over the interval."""
        cpus = psutil.cpu_count() or 1
        return self.others_cpu_s / (self.wall_s * cpus) if self.wall_s > 0 else 0.0


def _machine_busy_s() -> float:
    t = psutil.cpu_times()._asdict()  # guest time is already inside user time on Linux
    idle = ("idle", "iowait", "guest", "guest_nice")
    return float(sum(v for k, v in t.items() if k not in idle))


def _own_cpu_s() -> float:
    me = psutil.Process()
    live = 0.0
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            c = child.cpu_times()
            live += c.user + c.system
    own, done = me.cpu_times(), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.user + own.system + live + done.ru_utime + done.ru_stime


@contextlib.contextmanager
def others_cpu() -> Iterator[Noise]:
    """Measure the interval of the ``with`` block; the yielded :class:`Noise` fills at its end."""
    noise = Noise()
    busy0, own0, wall0 = _machine_busy_s(), _own_cpu_s(), time.monotonic()
    yield noise
    noise.wall_s = time.monotonic() - wall0
    noise.others_cpu_s = max(0.0, (_machine_busy_s() - busy0) - (_own_cpu_s() - own0))


def quietest(measure: Callable[[], T], share_of: Callable[[T], float], max_share: float,
             tries: int) -> tuple[T, int]:
    """Run ``measure`` until other processes took at most ``max_share`` of the cores during it,
    ``tries`` times at most; return the quietest result and which run (from 1) it was."""
    runs: list[T] = []
    for _ in range(max(1, tries)):
        runs.append(measure())
        if share_of(runs[-1]) <= max_share:
            break
    best = min(range(len(runs)), key=lambda i: share_of(runs[i]))
    return runs[best], best + 1
