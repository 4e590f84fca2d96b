"""Continuous batching across batches: one decoding thread per device, fed by task threads.

A device worker in continuous mode runs Celery's threads pool with a few task threads (the
batches it holds at once). Each task thread claims its batch, screens it and hands its requests
to the device's :class:`ContinuousEngine`, then waits. The engine's one thread keeps up to its
slot count of sequences decoding (:class:`~workers.backends.llama.decoder.SlotDecoder`): when a
sequence finishes, a prompt of the oldest batch still waiting takes the freed slot at the next
step. A batch is handed back to its task thread when its last sequence finishes, with its own
share of the energy the device's meter read (:class:`~workers.meters.shared.SharedMeter`).

What keeps the worker's guarantees:

- a task thread returns, and Celery acknowledges the batch's message, only after every prompt
  of it is written; a killed worker leaves every batch it held unacknowledged, so each is
  redelivered and its attempt counted;
- a batch that outlives its time limit (``ECOBATCH_TASK_TIME_LIMIT_S``, soft part) is dropped
  from the decoder alone, at the next step, and its task retried: the batches decoding beside it
  go on;
- a failed ``llama_decode`` fails every batch in the decoder (each retried), and the engine
  goes on with an emptied context.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from pipeline.errors import BatchTimeLimitError, EngineStuckError, InferenceError
from workers.backends.base import BatchOutput, GenerationRequest
from workers.backends.llama.batched import BatchedLlamaBackend
from workers.backends.llama.decoder import Prepared, SlotDecoder
from workers.backends.llama.sequence import Sequence
from workers.meters.base import EnergyMeter, EnergyReading
from workers.meters.shared import Share, SharedMeter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineResult:
    """One batch as the engine hands it back.

    Attributes:
        output: its results in request order and its own wall time.
        reading: its share of the device's metered energy (busy seconds apportioned too).
        prompt_energy_j: each request's share of ``reading.energy_j``, in request order.
    """

    output: BatchOutput
    reading: EnergyReading
    prompt_energy_j: list[float]


@dataclass(eq=False)
class _Ticket:
    """A batch inside the engine."""

    pending: deque[Prepared]
    origin_s: float
    limit_s: float
    n_requests: int
    deadline_s: float | None = None  # set when its first prompt takes a slot
    seqs: list[Sequence] = field(default_factory=list)
    shares: list[Share] = field(default_factory=list)
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def complete(self) -> bool:
        return len(self.seqs) == self.n_requests and all(s.done for s in self.seqs)


class ContinuousEngine:
    """Keeps one device's slots busy with the sequences of every batch handed to it.

    Attributes:
        n_slots: most sequences decoding at once.
    """

    def __init__(self, backend: BatchedLlamaBackend, meter: EnergyMeter, n_slots: int):
        """Open the decoder (``n_slots`` capped by free memory) and start the thread.

        Raises:
            MemoryBudgetError: not even one sequence's KV cache fits free memory.
        """
        self._backend = backend
        self._decoder: SlotDecoder = backend.open_decoder(n_slots)
        self.n_slots = self._decoder.n_slots
        self._meter = SharedMeter(meter)
        self._shares: dict[Sequence, Share] = {}
        self._worked: dict[Sequence, int] = {}  # work_tokens at the last cut
        self._cond = threading.Condition()
        self._waiting: deque[_Ticket] = deque()
        self._active: list[_Ticket] = []
        self._closed = False
        self._progress_s = time.perf_counter()  # when the thread last woke or finished a step
        self._thread = threading.Thread(target=self._loop, name="ecobatch-engine", daemon=True)
        self._thread.start()

    def run(self, requests: list[GenerationRequest], time_limit_s: float,
            stuck_after_s: float) -> EngineResult:
        """Decode ``requests`` (one batch) beside whatever else runs; block until done.

        Args:
            requests: the batch's requests.
            time_limit_s: the batch is dropped if it has not finished this long after its first
                prompt took a slot (its wait for a slot, bounded by the limits of the batches
                ahead of it, does not count, as a prefetched message's does not in Celery).
            stuck_after_s: how long the decoding thread may go without finishing a step (one
                admission and decode) before the engine is taken to be stuck in a
                ``llama_decode`` that never returns.

        Raises:
            InputError: a request cannot run here (nothing of the batch is decoded then).
            BatchTimeLimitError: the batch outlived ``time_limit_s`` and was dropped.
            EngineStuckError: the decoding thread made no progress for ``stuck_after_s``
                while this batch waited.
            InferenceError: llama.cpp failed while the batch was decoding.
        """
        origin_s = time.perf_counter()
        prepared = [self._backend.prepare(r) for r in requests]
        ticket = _Ticket(pending=deque(prepared), origin_s=origin_s, limit_s=time_limit_s,
                         n_requests=len(prepared))
        if prepared:
            with self._cond:
                if self._closed:
                    raise InferenceError("the decoding engine is closed")
                self._waiting.append(ticket)
                self._cond.notify()
            self._wait(ticket, stuck_after_s)
        if ticket.error is not None:
            raise ticket.error
        return self._result(ticket, time.perf_counter() - origin_s)

    def _wait(self, ticket: _Ticket, stuck_after_s: float) -> None:
        """Wait for ``ticket``, checking that the decoding thread still finishes steps."""
        while not ticket.done.wait(min(1.0, stuck_after_s)):
            stalled_s = time.perf_counter() - self._progress_s
            if stalled_s > stuck_after_s:
                raise EngineStuckError(
                    f"the decoding engine finished no step for {stalled_s:.0f} s "
                    f"(limit {stuck_after_s:.0f} s): a llama_decode call is stuck")

    @property
    def metered_j(self) -> float:
        """Joules (device plus host) the meter read over every interval so far."""
        return self._meter.total_j

    @property
    def busy(self) -> bool:
        """Whether a sequence decodes or a batch waits for a slot now."""
        with self._cond:
            return bool(self._decoder.running or self._waiting)

    def close(self) -> None:
        """Stop the thread once the batches it holds are done or failed."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=5)

    # -- the decoding thread -------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not (self._waiting or self._decoder.running or self._closed):
                    self._cond.wait()
                if self._closed and not (self._waiting or self._decoder.running):
                    return
                newcomers = self._take_newcomers()
                self._progress_s = time.perf_counter()
            try:
                self._advance(newcomers)
            except Exception as e:  # llama.cpp failed: every batch in the decoder shares it
                self._fail_all(e)
            self._progress_s = time.perf_counter()

    def _take_newcomers(self) -> list[tuple[_Ticket, list[Prepared]]]:
        """Prompts for the free slots, oldest batch first (called holding the lock)."""
        free = self._decoder.free_slots
        taken: list[tuple[_Ticket, list[Prepared]]] = []
        while free and self._waiting:
            ticket = self._waiting[0]
            if ticket not in self._active:
                self._active.append(ticket)
                ticket.deadline_s = time.perf_counter() + ticket.limit_s
            n = min(free, len(ticket.pending))
            taken.append((ticket, [ticket.pending.popleft() for _ in range(n)]))
            free -= n
            if not ticket.pending:
                self._waiting.popleft()
        return taken

    def _advance(self, newcomers: list[tuple[_Ticket, list[Prepared]]]) -> None:
        """Admit the newcomers, decode one step, settle what finished or timed out."""
        self._meter.ensure_started()
        for ticket, prepared in newcomers:
            if ticket.error is None:
                admitted = self._decoder.admit(prepared, ticket.origin_s)
                ticket.seqs.extend(admitted)
                self._worked.update((seq, 0) for seq in admitted)
        if self._decoder.running:
            self._decoder.step()
        self._drop_late(time.perf_counter())
        self._settle()

    def _drop_late(self, now_s: float) -> None:
        late = [t for t in self._active if t.error is None and not t.complete
                and t.deadline_s is not None and now_s > t.deadline_s]
        for ticket in late:
            self._abandon(ticket, BatchTimeLimitError(
                f"batch did not finish within its {ticket.limit_s:.0f} s time limit "
                f"(SoftTimeLimitExceeded in the decoding engine); dropped, the others go on"))
            self._decoder.drop([s for s in ticket.seqs if not s.done])

    def _abandon(self, ticket: _Ticket, error: BaseException) -> None:
        """Fail ``ticket``: none of its prompts still waiting for a slot will take one."""
        with self._cond:
            if ticket in self._waiting:
                self._waiting.remove(ticket)
            ticket.pending.clear()
        ticket.error = error

    def _settle(self) -> None:
        """Cut the meter and hand back every batch that finished or failed in this step."""
        settled = [t for t in self._active if t.error is not None or t.complete]
        idle = not self._decoder.running and not self._waiting
        if settled or idle:
            self._cut()
        for ticket in settled:
            self._active.remove(ticket)
            ticket.shares = [self._shares.pop(seq, Share()) for seq in ticket.seqs]
            ticket.done.set()

    def _cut(self) -> None:
        """Split the interval since the last cut among the sequences that worked in it."""
        work = {seq: seq.work_tokens - before for seq, before in self._worked.items()
                if seq.work_tokens > before}
        self._meter.cut(work, self._shares)
        self._worked = {seq: seq.work_tokens for seq in self._worked if not seq.done}

    def _fail_all(self, error: Exception) -> None:
        log.exception("decoding failed; every batch in the decoder is retried")
        self._decoder.clear()
        self._cut()
        reason = InferenceError(f"llama.cpp decoding failed: {error}")
        for ticket in self._active:
            if not ticket.complete and ticket.error is None:
                self._abandon(ticket, reason)
        self._settle()

    # -- handing back ----------------------------------------------------------------------

    def _result(self, ticket: _Ticket, wall_s: float) -> EngineResult:
        shares = ticket.shares
        reading = self._meter.reading_of(shares)
        output = BatchOutput(
            results=[seq.result() for seq in ticket.seqs], wall_s=wall_s,
            peak_memory_bytes=self._backend.peak_rss_bytes,
            extra={"slots": float(self.n_slots),
                   "kv_cache_bytes": float(self._backend.sequence_memory_bytes * self.n_slots)})
        return EngineResult(output=output, reading=reading,
                            prompt_energy_j=[s.energy_j for s in shares])
