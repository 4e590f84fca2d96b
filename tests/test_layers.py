"""The layers of the code base, checked on the import statements themselves (lazy ones too).

- Only ``pipeline.app`` (the entry points) names ``router`` or ``workers``.
- ``router`` and ``workers`` never import each other.
- Inside each package, sub-packages (and top-level modules) sit in tiers: a unit imports only
  itself and units of lower tiers, so no import runs up, and the tree reads bottom to top as
  the data flow does. See docs/architecture.md.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "router", "workers")

TIERS: dict[str, dict[str, int]] = {
    "pipeline": {
        "errors": 0, "policy": 1, "outage": 1, "logfields": 1, "tracing": 1, "settings": 2,
        "fleet": 3, "ledger": 3, "broker": 4, "grid": 5, "accounting": 6,
        "intake": 7, "report": 7, "metrics": 7, "app": 9,
        "client": 10,  # the published path of pipeline.app.client.Client, re-exported
    },
    "router": {
        "config": 0, "predict": 1, "allocation": 1, "scoring": 2, "live": 3, "deferral": 3,
        "recovery": 4, "sim": 4, "provision": 5, "service": 6,
    },
    "workers": {"config": 0, "meters": 1, "backends": 1, "bench": 2, "service": 2, "quality": 2},
}


def unit_of(module: str) -> tuple[str, str] | None:
    """(package, unit) of a dotted module name: the sub-package or top-level module it is in."""
    parts = module.split(".")
    if parts[0] not in PACKAGES:
        return None
    if len(parts) == 1:
        return parts[0], ""
    return parts[0], parts[1]


def imports() -> Iterator[tuple[str, str, int]]:
    """(importing module, imported module, line) for every absolute import of our packages."""
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                else:
                    continue
                for name in names:
                    if name.split(".")[0] in PACKAGES:
                        yield module.removesuffix(".__init__"), name, node.lineno


def violation(source: str, target: str) -> str | None:
    """Why ``source`` may not import ``target``; None when it may."""
    src, dst = unit_of(source), unit_of(target)
    if src is None or dst is None:
        return None
    (src_pkg, src_unit), (dst_pkg, dst_unit) = src, dst
    if src_pkg != dst_pkg:
        if src_pkg == "pipeline" and src_unit == "app":
            return None
        if dst_pkg == "pipeline":
            return None if dst_unit != "app" else "only entry points import pipeline.app"
        return f"{src_pkg} may not import {dst_pkg} (only pipeline.app names all three)"
    if src_unit == dst_unit or not dst_unit:
        return None
    tiers = TIERS[src_pkg]
    if src_unit not in tiers or dst_unit not in tiers:
        return f"{src_pkg}.{src_unit or dst_unit} has no tier in tests/test_layers.py"
    if tiers[dst_unit] >= tiers[src_unit]:
        return (f"{src_pkg}.{src_unit} (tier {tiers[src_unit]}) may not import "
                f"{dst_pkg}.{dst_unit} (tier {tiers[dst_unit]}): imports run down")
    return None


def test_every_unit_has_a_tier() -> None:
    for package, tiers in TIERS.items():
        units = {p.stem for p in (ROOT / package).glob("*.py") if p.stem != "__init__"}
        units |= {p.name for p in (ROOT / package).iterdir()
                  if p.is_dir() and (p / "__init__.py").exists()}
        assert units == set(tiers), f"{package}: units without a tier or tiers without a unit"


def test_imports_follow_the_layers() -> None:
    bad = [f"{src} line {line}: imports {dst}: {why}" for src, dst, line in imports()
           if (why := violation(src, dst)) is not None]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize(("source", "target", "allowed"), [
    ("pipeline.app.cli.main", "router.service", True),
    ("pipeline.intake.submit", "router.live.route", False),
    ("router.live.route", "workers.service.infer", False),
    ("workers.service.infer", "pipeline.app.context", False),
    ("pipeline.ledger.jobs", "pipeline.intake.submit", False),
    ("router.recovery.requeue", "router.live.route", True),
    ("router.live.route", "router.recovery.requeue", False),
    ("pipeline.grid.trace", "pipeline.grid.signal", True),
])
def test_the_rule_itself(source: str, target: str, allowed: bool) -> None:
    assert (violation(source, target) is None) is allowed
