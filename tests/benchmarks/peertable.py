"""The table of :mod:`tests.benchmarks.bench_peer`: the issue's rows, from its JSON report."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def _slash(values: list[float], fmt: str = "{:.1f}") -> str:
    return " / ".join(fmt.format(v) for v in values)


def _pct(shares: list[float], tries: list[int]) -> str:
    return " / ".join(f"{100 * x:.0f}%" + (f" (run {n})" if n > 1 else "")
                      for x, n in zip(shares, tries, strict=True))


def _config_rows(c: dict) -> list[tuple[str, ...]]:
    srv, ours = c["server"], c["ecobatch"]
    low, high = c["ratio_range"]
    return [
        (f"{c['label']}: llama-server", _slash([r["completion_tokens"] for r in srv], "{}"),
         _slash([r["wall_s"] for r in srv], "{:.2f}"),
         ", again ".join(f"{r['tok_per_s']:.1f}" for r in srv), "1.00",
         _pct([r["others_cpu_share"] for r in srv], [r["tries"] for r in srv])),
        (f"same, ecobatch pipeline, batch {c['config']['slots']}",
         _slash([r["completion_tokens"] for r in ours], "{}"),
         ", ".join(f"{r['window_s']:.2f} (command {r['command_s']:.1f})" for r in ours),
         ", ".join(f"{r['tok_per_s']:.1f}" for r in ours),
         f"{low:.2f}-{high:.2f} (median {c['ratio_median']:.2f})",
         _pct([r["others_cpu_share"] for r in ours], [r["tries"] for r in ours])),
    ]


def _uniform_rows(u: dict) -> list[tuple[str, ...]]:
    npl = u["npl"]
    return [
        (f"llama-batched-bench, uniform {u['npp']}+{u['ntg']}, decode at {_slash(npl, '{}')} "
         "sequences", "", "", _slash([u["batched_bench"][b] for b in npl]), "ceiling",
         _pct(u["others_cpu_share"][:1], u["tries"][:1])),
        ("ecobatch batched backend, same (decode)", "", "",
         _slash([u["ecobatch_backend"][b] for b in npl]),
         _slash([u["ratio"][b] for b in npl], "{:.2f}") + " of ceiling",
         _pct(u["others_cpu_share"][1:], u["tries"][1:])),
    ]


def render(report: dict, console: Console) -> None:
    """Print the issue's table, with tokens, wall times and the neighbours' CPU beside the rates."""
    table = Table(title="completion tokens/s, side by side (SmolLM2-135M Q4_1, greedy, FA on)")
    for name in ("run", "completion tokens", "wall s", "completion tokens/s", "vs llama-server",
                 "others' CPU"):
        table.add_column(name, justify="left" if name == "run" else "right")
    rows = [row for c in report["configs"] for row in _config_rows(c)]
    if (u := report.get("uniform")) is not None:
        rows += _uniform_rows(u)
    for row in rows:
        table.add_row(*row)
    console.print(table)


def notes(report: dict, console: Console) -> None:
    """What the table does not show: output identity, EOS counting, load, the build."""
    for c in report["configs"]:
        ours = c["ecobatch"]
        console.print(f"{c['label']}: {c['identical_outputs']}/{c['config']['prompts']} outputs "
                      f"identical to llama-server's; server answers ended by EOS "
                      f"{_slash([r['eos_stops'] for r in c['server']], '{}')} (each counts one token "
                      f"more there); ecobatch over the whole command "
                      f"{_slash([r['tok_per_s_command'] for r in ours])} tok/s, "
                      f"{ours[0]['batches']} batches")
    if (u := report.get("uniform")) is not None and not u["ecobatch_full_length"]:
        console.print("[yellow]uniform: a sequence of ours reached end of generation early[/]")
    m = report["machine"]
    console.print(f"others' CPU: share of all cores other processes used during the run "
                  f"(machine busy time less ours), '(run N)' where the N-th run was the first "
                  f"under {report['max_others_share']:.0%} or the quietest; load average "
                  f"{m['loadavg_before']} before, {m['loadavg_after']} after; {m['cpus']} CPUs; "
                  f"binaries {report['binaries']} (built in {report['build'].get('build_s')} s)")
