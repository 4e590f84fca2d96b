"""The batches the live batching rule cuts from a run's arrivals, before any device is chosen.

Which requests go together, and when the router takes them, depends only on the arrivals and
the batching settings (batch size, ``max_wait_s``, ``router_interval_s``), never on the
strategy: :func:`router.live.batching.plan_take` looks at the pending list and the clock alone. So
every strategy of a comparison routes the very same batches, and the allocation LPs
(:mod:`router.sim.batchlp`) can be built from them exactly: sizes, tokens and hours.

A batch is a run of consecutive requests in arrival order (the pending list is first in, first
out and :func:`~router.live.batching.cut_batches` cuts it in order), so it is stored as the index of
its first request and its size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from pipeline.broker.queue import PromptRef
from router.live.batching import cut_batches, plan_take
from router.sim.arrivals import Arrivals


@dataclass(frozen=True)
class BatchTrace:
    """Every batch the router cuts, in dispatch order.

    Attributes:
        dispatch_s: router tick that took the batch, seconds since the start.
        first: index of the batch's first request (its oldest: requests are in arrival order).
        size: requests in the batch.
        prompt_tokens: prompt tokens of the batch, summed.
        new_tokens: new-token budget of the batch, summed.
        waited_s: how long its oldest request had waited when it was taken.
    """

    dispatch_s: NDArray[np.float64]
    first: NDArray[np.int64]
    size: NDArray[np.int64]
    prompt_tokens: NDArray[np.int64]
    new_tokens: NDArray[np.int64]
    waited_s: NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.size.shape[0])


def cut_trace(arrivals: Arrivals, batch_size: int, max_wait_s: float,
              interval_s: float) -> BatchTrace:
    """Replay the router's ticks over ``arrivals`` and record the batches it takes.

    Ticks where nothing can happen are skipped, which is exact because nothing changes between
    them: the next tick is the first one at or after the next arrival or the moment the oldest
    waiting request's partial batch becomes due.
    """
    t_arr = arrivals.t_s.tolist()
    n, i, last_t = len(t_arr), 0, -math.inf
    pending: list[PromptRef] = []
    ticks: list[float] = []
    firsts: list[int] = []
    sizes: list[int] = []
    while i < n or pending:
        due = min(t_arr[i] if i < n else math.inf,
                  pending[0].enqueued_unix_s + max_wait_s if pending else math.inf)
        # The next tick at or after what is due; always later than the last one, so float
        # rounding in "now - oldest >= max_wait" can never stall the loop.
        t = max(math.ceil(due / interval_s - 1e-9) * interval_s, last_t + interval_s)
        last_t = t
        while i < n and t_arr[i] <= t:
            pending.append(PromptRef(str(i), "sim", t_arr[i], 0, 0))
            i += 1
        plan = plan_take(pending, batch_size, max_wait_s, t, list_end_seen=True)
        if not plan.n_refs:
            continue
        taken, pending = pending[: plan.n_refs], pending[plan.n_refs :]
        for batch in cut_batches(taken, batch_size):
            ticks.append(t)
            firsts.append(int(batch[0].prompt_id))
            sizes.append(len(batch))
    return _trace(arrivals, ticks, firsts, sizes)


def _trace(arrivals: Arrivals, ticks: list[float], firsts: list[int],
           sizes: list[int]) -> BatchTrace:
    first = np.asarray(firsts, dtype=np.int64)
    size = np.asarray(sizes, dtype=np.int64)
    dispatch = np.asarray(ticks, dtype=np.float64)
    if not len(first):
        empty = np.zeros(0, dtype=np.int64)
        return BatchTrace(np.zeros(0), empty, empty, empty, empty, np.zeros(0))
    return BatchTrace(dispatch, first, size,
                      np.add.reduceat(arrivals.prompt_tokens, first).astype(np.int64),
                      np.add.reduceat(arrivals.max_tokens, first).astype(np.int64),
                      dispatch - arrivals.t_s[first])
