"""``ecobatch eval``: the shipped labelled set (balanced, labels true), the Wilson interval, and
log-likelihood scoring on the bundled SmolLM2 through llama.cpp."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.app.cli.main import main
from tests.cluster import TEST_LLAMA_THREADS
from workers.quality.loglik import OptionScorer
from workers.quality.primality import (
    INSTRUCTION,
    OPTIONS,
    evaluate,
    load_items,
    wilson_interval,
)


def _is_prime(n: int) -> bool:
    return n > 1 and all(n % k for k in range(2, int(n ** 0.5) + 1))


def test_the_set_is_balanced_and_every_label_is_true() -> None:
    items = load_items()
    assert len(items) == 100 and sum(i.answer for i in items) == 50
    assert all(i.answer == _is_prime(i.number) for i in items)
    assert all(i.question == f"Is {i.number} a prime number?" for i in items)
    assert {i.origin for i in items if i.answer} == {"garak"}  # garak's items are all primes
    assert all(i.origin.startswith("derived: ") for i in items if not i.answer)
    assert [i.number for i in load_items(3)] == [i.number for i in items[:3]]  # fixed order


def test_wilson_interval() -> None:
    low, high = wilson_interval(50, 100)
    assert (round(low, 4), round(high, 4)) == (0.4038, 0.5962)
    assert wilson_interval(100, 100)[1] == 1.0 and wilson_interval(0, 100)[0] == 0.0


@pytest.fixture(scope="module")
def scorer(model_path: Path) -> Iterator[OptionScorer]:
    with OptionScorer(model_path, TEST_LLAMA_THREADS) as s:
        yield s


def test_option_scores_are_log_probabilities_independent_of_order(
    scorer: OptionScorer,
) -> None:
    prompt = scorer.prompt_text("What is the capital of France? Answer with one word.")
    paris, banana = scorer.logliks(prompt, ("Paris", "Banana"))
    assert paris > banana and paris < 0
    assert scorer.logliks(prompt, ("Banana", "Paris")) == [banana, paris]


def test_evaluate_counts_right_answers(scorer: OptionScorer) -> None:
    items = load_items(6)
    result = evaluate(scorer, items)
    said = [scorer.logliks(scorer.prompt_text(i.question + INSTRUCTION), OPTIONS)
            for i in items]
    assert result.n == 6 and result.said_yes == sum(yes > no for yes, no in said)
    assert result.correct == sum((yes > no) == i.answer for (yes, no), i in zip(said, items,
                                                                                strict=True))
    assert (result.low, result.high) == wilson_interval(result.correct, 6)


def test_eval_command_prints_accuracy_with_its_source() -> None:
    out = CliRunner().invoke(main, ["eval", "smollm2-135m-instruct", "--limit", "4",
                                    "--threads", str(TEST_LLAMA_THREADS), "--json"])
    assert out.exit_code == 0, out.output
    record = json.loads(out.output.strip().splitlines()[-1])
    assert record["items"] == 4 and 0 <= record["accuracy"] <= 1
    assert record["ci95_low"] <= record["accuracy"] <= record["ci95_high"]
    assert "garak 0.17.1" in record["source"] and "weak proxy" in record["note"]
    assert "WEAK proxy" in CliRunner().invoke(main, ["eval", "--help"]).output


def test_eval_of_a_missing_model_is_refused(tmp_path: Path) -> None:
    out = CliRunner().invoke(main, ["eval", str(tmp_path / "none.gguf")])
    assert out.exit_code != 0 and "does not exist" in out.output
