"""Decisions: hard limits first, then the best score, then the latency target, with a reason."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pipeline.errors import UnroutableError
from router.scoring.decide import decide
from router.scoring.options import DeviceOption
from router.scoring.strategies import get_strategy
from tests.router.test_strategies import option


def test_best_score_wins_and_every_candidate_is_recorded() -> None:
    opts = [option("dirty", 1.0, 9.0), option("clean", 5.0, 1.0)]
    d = decide(get_strategy("carbon"), opts)
    assert d.option.device.name == "clean"
    assert d.reason == "carbon: best score"
    assert set(d.scores) == {"dirty", "clean"}
    assert d.scores["dirty"]["score"] == pytest.approx(9.0)
    assert d.scores["clean"]["finish_s"] == pytest.approx(5.0)


def test_excluded_devices_are_never_chosen_and_named_in_the_reason() -> None:
    dead = _excluded(option("clean", 5.0, 0.1), "no live worker")
    d = decide(get_strategy("carbon"), [option("dirty", 1.0, 9.0), dead])
    assert d.option.device.name == "dirty"
    assert "excluded clean (no live worker)" in d.reason
    assert d.scores["clean"]["score"] is None and d.scores["clean"]["excluded"] == "no live worker"


def test_slo_gives_way_to_the_next_best_that_meets_it() -> None:
    opts = [option("fast", 2.0, 9.0), option("mid", 4.0, 5.0), option("clean", 20.0, 1.0)]
    d = decide(get_strategy("carbon"), opts, slo_s=10.0)
    assert d.option.device.name == "mid"
    assert "clean would finish in 20.0 s > SLO 10 s" in d.reason
    assert "mid is the best-scoring device that meets it" in d.reason


def test_slo_nobody_meets_picks_the_earliest_finisher() -> None:
    opts = [option("fast", 12.0, 9.0), option("clean", 20.0, 1.0)]
    d = decide(get_strategy("carbon"), opts, slo_s=10.0)
    assert d.option.device.name == "fast" and "no device meets it" in d.reason


def test_slo_met_by_the_best_changes_nothing() -> None:
    opts = [option("fast", 2.0, 9.0), option("clean", 5.0, 1.0)]
    assert decide(get_strategy("carbon"), opts, slo_s=10.0).reason == "carbon: best score"


def test_all_excluded_is_unroutable() -> None:
    opts = [_excluded(option("a", 1.0, 1.0), "no live worker")]
    with pytest.raises(UnroutableError, match="a \\(no live worker\\)"):
        decide(get_strategy("greedy"), opts)
    with pytest.raises(UnroutableError, match="max_batch_size"):
        decide(get_strategy("greedy"), [])


def _excluded(o: DeviceOption, why: str) -> DeviceOption:
    return replace(o, excluded=why)


def test_slo_counts_the_time_already_waited() -> None:
    opts = [option("fast", 2.0, 9.0), option("clean", 5.0, 1.0)]
    d = decide(get_strategy("carbon"), opts, slo_s=10.0, waited_s=6.0)
    assert d.option.device.name == "fast"
    assert "clean would finish in 5.0 s > SLO 10 s less 6.0 s already waited" in d.reason
    assert decide(get_strategy("carbon"), opts, slo_s=10.0, waited_s=4.0).option.device.name == "clean"
