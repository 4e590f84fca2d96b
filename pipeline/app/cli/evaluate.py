"""``ecobatch eval MODEL``: a model's accuracy on the small labelled set shipped with ecobatch.

An entry point: it may import ``pipeline`` and ``workers``.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from pipeline.app.cli.common import handle_errors, make_console
from pipeline.fleet.modelfile import resolve_model_path
from pipeline.fleet.servedmodels import BUNDLED_MODELS


def _model_path(model: str) -> Path:
    """A bundled model's file by its name, else ``model`` as a GGUF path."""
    bundled = BUNDLED_MODELS.get(model)
    return bundled.resolve() if bundled is not None else resolve_model_path(Path(model))


@click.command("eval")
@click.argument("model")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Score only the first N items of the set (fixed order) [default: all 100].")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads for llama.cpp [default: every core this process may use].")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@handle_errors
def evaluate(model: str, limit: int | None, threads: int | None, as_json: bool) -> None:
    """Accuracy of MODEL (a bundled model's name, e.g. gemma3-270m, or a GGUF file) on a small
    labelled set shipped with ecobatch, with a 95% interval.

    The set: 100 "Is N a prime number?" questions, 50 primes from garak 0.17.1's
    primality_testing.json (Apache-2.0) drawn with a fixed seed and 50 composites derived by
    ecobatch (next odd composite above another of garak's primes, labelled by trial division).
    Each is scored by comparing the model's log-likelihood of "Yes" and "No" after the question
    (in the model's chat template, as workers feed it), on the CPU.

    This is a WEAK proxy of quality: one narrow skill, two answers, 100 items (the interval
    is about +-10 points). Its scale is not the registry's PIQA scores; give a registry score
    from it only with this source named.
    """
    from workers.quality.loglik import OptionScorer
    from workers.quality.primality import SOURCE, load_items
    from workers.quality.primality import evaluate as score

    items = load_items(limit)
    path = _model_path(model)
    console = make_console(stderr=as_json)
    with console.status(f"scoring {len(items)} items with {path.name}"), \
            OptionScorer(path, threads) as scorer:
        result = score(scorer, items)
    record = {"model": model, "file": path.name, "items": result.n, "correct": result.correct,
              "accuracy": result.accuracy, "ci95_low": result.low, "ci95_high": result.high,
              "said_yes": result.said_yes, "wall_s": result.wall_s, "source": SOURCE,
              "note": "weak proxy of quality: one narrow skill, two answers"}
    if as_json:
        click.echo(json.dumps(record))
        return
    console.print(f"{model} ({path.name}): accuracy {result.accuracy:.1%} "
                  f"({result.correct}/{result.n}), 95% interval {result.low:.1%} to "
                  f"{result.high:.1%} (Wilson); said yes on {result.said_yes} of {result.n} "
                  f"(half the items are primes); {result.wall_s:.1f} s")
    console.print(f"set: {SOURCE}")
    console.print("a weak proxy of quality (one narrow skill, two answers, 100 items), not on "
                  "the registry's PIQA scale")
