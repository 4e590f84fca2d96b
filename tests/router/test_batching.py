"""Cutting the pending list into batches: the pure decision and the Redis round trips."""

from __future__ import annotations

import pytest
import redis

from pipeline.broker.queue import PENDING_KEY, PromptRef, pending_count, push_refs
from pipeline.errors import ConfigError
from pipeline.fleet.devices import Device, Registry
from pipeline.settings import Settings
from router.live.batching import (
    cut_batches,
    effective_batch_size,
    peek_size,
    plan_take,
    return_refs,
    take_refs,
)

NOW = 1_000_000.0


def refs(n: int, t: float = NOW, start: int = 0) -> list[PromptRef]:
    return [PromptRef(f"j:{i}", "j", t, 10, 32) for i in range(start, start + n)]


def test_full_batches_are_taken_and_remainder_waits() -> None:
    plan = plan_take(refs(10), 4, 0.5, NOW + 0.1, list_end_seen=True)
    assert (plan.n_refs, plan.due_partial, plan.waiting_partial) == (8, False, 2)


def test_partial_batch_not_due_is_left() -> None:
    plan = plan_take(refs(3), 4, 0.5, NOW + 0.49, list_end_seen=True)
    assert (plan.n_refs, plan.waiting_partial) == (0, 3)


def test_partial_batch_due_is_flushed() -> None:
    plan = plan_take(refs(3), 4, 0.5, NOW + 0.5, list_end_seen=True)
    assert (plan.n_refs, plan.due_partial) == (3, True)


def test_partial_due_by_its_oldest_ref() -> None:
    head = refs(4, NOW) + refs(1, NOW - 10, start=4) + refs(1, NOW, start=5)
    plan = plan_take(head, 4, 0.5, NOW, list_end_seen=True)
    assert plan.n_refs == 6


def test_partial_never_flushed_when_more_refs_follow() -> None:
    plan = plan_take(refs(6, NOW - 100), 4, 0.5, NOW, list_end_seen=False)
    assert plan.n_refs == 4


def test_empty_head_takes_nothing() -> None:
    assert plan_take([], 4, 0.5, NOW, list_end_seen=True).n_refs == 0


def test_cut_batches_keeps_order() -> None:
    batches = cut_batches(refs(10), 4)
    assert [len(b) for b in batches] == [4, 4, 2]
    assert [r.prompt_id for b in batches for r in b] == [f"j:{i}" for i in range(10)]


def test_peek_size_is_whole_batches() -> None:
    assert peek_size(4, 1000) == 1000
    assert peek_size(7, 1000) == 994
    assert peek_size(64, 10) == 64


def test_effective_batch_size_capped_by_largest_device() -> None:
    reg = Registry(devices=[Device(name="a", kind="cpu", zone="DE-LU", max_batch_size=2),
                            Device(name="b", kind="cpu", zone="DE-LU", max_batch_size=6)])
    assert effective_batch_size(16, reg) == 6
    assert effective_batch_size(4, reg) == 4
    with pytest.raises(ConfigError):
        effective_batch_size(Settings().batch_size, Registry(devices=[]))


@pytest.mark.service
def test_take_refs_pops_exactly_what_was_decided(rclient: redis.Redis) -> None:
    push_refs(rclient, refs(10, NOW))
    taken, plan = take_refs(rclient, 4, 0.5, NOW + 0.1, peek_refs_max=1000)
    assert [r.prompt_id for r in taken] == [f"j:{i}" for i in range(8)]
    assert plan.waiting_partial == 2 and pending_count(rclient) == 2
    taken, _ = take_refs(rclient, 4, 0.5, NOW + 1.0)
    assert [r.prompt_id for r in taken] == ["j:8", "j:9"]
    assert pending_count(rclient) == 0


@pytest.mark.service
def test_take_refs_small_peek_never_flushes_a_partial_early(rclient: redis.Redis) -> None:
    push_refs(rclient, refs(10, NOW - 100))
    taken, _ = take_refs(rclient, 4, 0.5, NOW, peek_refs_max=8)
    assert len(taken) == 8  # the window was full: refs 8 and 9 may have company behind them


@pytest.mark.service
def test_undecodable_refs_are_dropped(rclient: redis.Redis) -> None:
    push_refs(rclient, refs(2, NOW))
    rclient.rpush(PENDING_KEY, "not json", '{"id": "x"}')
    push_refs(rclient, refs(2, NOW, start=2))
    taken, _ = take_refs(rclient, 4, 0.5, NOW)
    assert [r.prompt_id for r in taken] == ["j:0", "j:1", "j:2", "j:3"]
    assert pending_count(rclient) == 0


@pytest.mark.service
def test_return_refs_restores_order_at_the_head(rclient: redis.Redis) -> None:
    push_refs(rclient, refs(8, NOW))
    taken, _ = take_refs(rclient, 4, 0.5, NOW, peek_refs_max=4)
    return_refs(rclient, taken)
    again, _ = take_refs(rclient, 4, 0.5, NOW)
    assert [r.prompt_id for r in again] == [f"j:{i}" for i in range(8)]
