"""A small builder for mixed-integer programs solved by ``scipy.optimize.milp`` (HiGHS).

Variables are allocated in named numpy-indexed blocks (:class:`Space`), constraints are
collected as sparse rows (:class:`Rows`), and :func:`solve` runs HiGHS, turning a failure into
a :class:`~pipeline.errors.ConfigError` that says what to relax.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from scipy.optimize import Bounds, LinearConstraint, milp

from pipeline.errors import ConfigError

Index = NDArray[np.int64]
Vector = NDArray[np.float64]


@dataclass
class Space:
    """The variables: lower and upper bounds and integrality, grown block by block."""

    lb: list[float] = field(default_factory=list)
    ub: list[float] = field(default_factory=list)
    integer: list[int] = field(default_factory=list)

    @property
    def n(self) -> int:
        """How many variables there are."""
        return len(self.lb)

    def block(self, shape: tuple[int, ...], *, integer: bool = False, ub: float = np.inf) -> Index:
        """Allocate ``prod(shape)`` variables in [0, ub]; their indices in ``shape``."""
        size = int(np.prod(shape))
        idx = np.arange(self.n, self.n + size, dtype=np.int64).reshape(shape)
        self.lb += [0.0] * size
        self.ub += [ub] * size
        self.integer += [int(integer)] * size
        return idx

    def set_bounds(self, idx: Index | int, lo: float, hi: float) -> None:
        """Bound every variable in ``idx`` to [lo, hi]."""
        for i in np.atleast_1d(idx).ravel():
            self.lb[int(i)], self.ub[int(i)] = lo, hi


@dataclass
class Rows:
    """Linear constraints ``lo <= a @ v <= hi``, one sparse row at a time."""

    r: list[Index] = field(default_factory=list)
    c: list[Index] = field(default_factory=list)
    v: list[Vector] = field(default_factory=list)
    lo: list[float] = field(default_factory=list)
    hi: list[float] = field(default_factory=list)

    def add(self, cols: Index, vals: Vector | float, lo: float, hi: float) -> None:
        """Append one row over ``cols`` with coefficients ``vals`` (a scalar for all)."""
        cols = np.asarray(cols, dtype=np.int64).ravel()
        self.r.append(np.full(cols.size, len(self.lo), dtype=np.int64))
        self.c.append(cols)
        self.v.append(np.broadcast_to(np.asarray(vals, dtype=np.float64), cols.shape).ravel())
        self.lo.append(lo)
        self.hi.append(hi)

    def constraint(self, n: int) -> LinearConstraint:
        """The rows as one scipy constraint over ``n`` variables."""
        a = sp.csr_matrix((np.concatenate(self.v), (np.concatenate(self.r), np.concatenate(self.c))),
                          shape=(len(self.lo), n))
        return LinearConstraint(a, np.array(self.lo), np.array(self.hi))


@contextmanager
def _solver_chatter_silenced() -> Iterator[None]:
    """Point file descriptor 1 at /dev/null: HiGHS (scipy 1.17) prints debug lines from C++
    to stdout even with ``disp=False``, which would corrupt ``provision --json``."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


@dataclass(frozen=True)
class Solution:
    """A solved program: the variable values, wall time and the solver's word on it."""

    v: Vector
    solve_s: float
    gap: float
    message: str


def solve(space: Space, rows: Rows, cost: Vector, extra: list[LinearConstraint] | None = None,
          *, mip_rel_gap: float = 1e-4, time_limit_s: float = 60.0) -> Solution:
    """Minimise ``cost @ v`` over the program; past the time limit, the best solution found
    (its ``gap`` says how far from optimal it may be).

    Raises:
        ConfigError: infeasible (the message suggests what to relax) or no solution in time.
    """
    began = time.perf_counter()
    with _solver_chatter_silenced():
        res = milp(cost, integrality=np.array(space.integer), bounds=Bounds(space.lb, space.ub),
                   constraints=[rows.constraint(space.n), *(extra or [])],
                   options={"mip_rel_gap": mip_rel_gap, "time_limit": time_limit_s})
    if res.x is None:
        raise ConfigError(f"provisioning MILP: {res.message} (is the SLO reachable by some "
                          "device type at some batch size, and is a site allowed for it?)")
    gap = float(getattr(res, "mip_gap", 0.0) or 0.0)
    return Solution(np.asarray(res.x, dtype=np.float64), time.perf_counter() - began, gap,
                    str(res.message))
