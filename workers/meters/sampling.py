"""Shared parts of the meters: a power-integrating sampler and the ``metered`` block."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import pairwise

from pipeline.errors import EcobatchError, MeterError
from workers.meters.base import EnergyMeter, EnergyReading


class PowerSampler:
    """Integrates power readings over time in a background thread (trapezoid rule).

    Args:
        read_power_w: returns the current power in watts, or one figure per channel (a
            sequence of the same length every time); called from the sampling thread.
        interval_s: time between samples.
    """

    def __init__(self, read_power_w: Callable[[], float | Sequence[float]],
                 interval_s: float) -> None:
        self._read = read_power_w
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._energy_j: list[float] = []
        self._last: tuple[float, tuple[float, ...]] = (0.0, ())
        self._error: MeterError | None = None

    def start(self) -> None:
        """Take the first sample and start sampling."""
        self._error = None
        self._last = (time.monotonic(), self._read_w())
        self._energy_j = [0.0] * len(self._last[1])
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="power-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> float:
        """Stop sampling, take a last sample and return the joules of the first channel.

        Raises:
            MeterError: a sample failed, or the sampler was not started.
        """
        return self.stop_all()[0]

    def stop_all(self) -> list[float]:
        """Like :meth:`stop`, returning the joules of every channel."""
        if self._thread is None:
            raise MeterError("power sampler stopped before it was started")
        self._stop.set()
        self._thread.join()
        self._thread = None
        if self._error is not None:
            raise self._error
        self._sample()
        return list(self._energy_j)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._sample()
            except MeterError as e:  # reported by stop(), on the caller's thread
                self._error = e
                return

    def _read_w(self) -> tuple[float, ...]:
        try:
            value = self._read()
        except MeterError:
            raise
        except Exception as e:  # vendor errors (NVMLError, jtop's) become MeterError here
            raise MeterError(f"power reading failed: {e}") from e
        return (float(value),) if isinstance(value, int | float) else tuple(value)

    def _sample(self) -> None:
        now, power_w = time.monotonic(), self._read_w()
        t0, p0 = self._last
        for i, (a, b) in enumerate(zip(p0, power_w, strict=True)):
            self._energy_j[i] += (a + b) / 2.0 * (now - t0)
        self._last = (now, power_w)


def integrate_power_j(samples: Sequence[tuple[float, float]]) -> float:
    """Joules under ``(time_s, power_w)`` samples in time order, by the trapezoid rule.

    The same rule :class:`PowerSampler` applies live; used on recorded readings.
    """
    return sum((p0 + p1) / 2.0 * (t1 - t0) for (t0, p0), (t1, p1) in pairwise(samples))


class CounterPoller:
    """Sums the increases of energy counters that may wrap or reset, polling them in a thread.

    A counter read only at the start and end of an interval cannot tell one wrap from two, nor
    a reset from a wrap; reading it every ``interval_s`` (shorter than the fastest wrap or the
    expected time between resets) keeps every increase.

    Args:
        read: returns the current value of each counter, in a fixed order.
        delta: ``delta(i, before, after)`` is the increase of counter ``i`` between two reads,
            allowing for a wrap or reset.
        interval_s: time between polls.
        name: name of the polling thread.
    """

    def __init__(self, read: Callable[[], Sequence[int]],
                 delta: Callable[[int, int, int], int], interval_s: float, name: str) -> None:
        self._read, self._delta = read, delta
        self._interval_s, self._name = interval_s, name
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: list[int] = []
        self._totals: list[int] = []

    def start(self) -> None:
        """Read every counter and start polling."""
        self._last = list(self._read())
        self._totals = [0] * len(self._last)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> list[int]:
        """Stop polling, read once more and return each counter's total increase.

        Raises:
            MeterError: the final read failed, or the poller was not started.
        """
        if self._thread is None:
            raise MeterError(f"{self._name} stopped before it was started")
        self._stop.set()
        self._thread.join()
        self._thread = None
        self._accumulate()
        return list(self._totals)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._accumulate()
            except MeterError:
                continue  # the final read in stop() reports a persistent failure

    def _accumulate(self) -> None:
        with self._lock:
            now = list(self._read())
            for i, (before, after) in enumerate(zip(self._last, now, strict=True)):
                self._totals[i] += self._delta(i, before, after)
            self._last = now


@dataclass
class MeterHolder:
    """What :func:`metered` yields; ``reading`` is set when the block exits."""

    reading: EnergyReading | None = None


@contextmanager
def metered(meter: EnergyMeter) -> Iterator[MeterHolder]:
    """Meter the block: ``with metered(m) as h: ...`` then ``h.reading``.

    The meter is stopped even when the block raises; a meter error then does not hide the
    block's own exception.
    """
    holder = MeterHolder()
    meter.start()
    try:
        yield holder
    except BaseException:
        with contextlib.suppress(EcobatchError):  # the block's own exception matters more
            holder.reading = meter.stop()
        raise
    holder.reading = meter.stop()
