"""A closing summary for ``pytest benchmarks/ --benchmark-only``: per group, the winner and its speed-up
over the authors' computation, and a warning when the machine was too busy for the ratios to hold; then
the roofline of every entry that recorded its FLOPs and bytes (``roofline.record``).

"Too busy" is measured, not guessed from the load average (which counts this run's own threads and
lags behind work that has already ended): on Linux, the CPU time the whole machine spent busy during
the session (``/proc/stat``, steal included) minus the CPU time of this process and its children is
the other work's share of the cores. Elsewhere the load average at the start stands in.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from report import baseline_of, comparisons, machine_line, rate, roofline_rows, variant

LOAD_PER_CORE_LIMIT = 0.5  # without /proc/stat: a 1-minute load average at the start above this share of the cores
OTHER_WORK_LIMIT = 0.10  # other processes' share of the cores during the session
SPREAD_LIMIT = 0.15  # standard deviation over mean of a group's rounds


def _cpu_clock() -> tuple[float, float | None, float]:
    """(wall seconds, the machine's busy CPU seconds or None off Linux, this process's and its children's)."""
    own = sum(os.times()[:4])
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return time.monotonic(), None, own
    idle, iowait = fields[3], fields[4] if len(fields) > 4 else 0
    busy = (sum(fields[:8]) - idle - iowait) / os.sysconf("SC_CLK_TCK")  # user .. steal
    return time.monotonic(), busy, own


def _other_work_share(start, end, cores: int) -> float | None:
    if start[1] is None or end[1] is None or end[0] <= start[0]:
        return None
    other = (end[1] - start[1]) - (end[2] - start[2])
    return max(other, 0.0) / ((end[0] - start[0]) * cores)


def pytest_collection_modifyitems(items) -> None:
    items.sort(key=lambda item: item.path.name != "test_bench_machine.py")  # the limits first; stable otherwise


def pytest_sessionstart(session) -> None:
    session.config._ada2i_load_at_start = os.getloadavg()[0]
    session.config._ada2i_cpu_at_start = _cpu_clock()


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's own tables
def pytest_terminal_summary(terminalreporter, config) -> None:
    session = getattr(config, "_benchmarksession", None)
    measured = [bench for bench in (session.benchmarks if session else []) if bench.stats is not None]
    if not measured:
        return
    entries = [
        {"name": bench.name, "group": bench.group, "extra_info": bench.extra_info,
         "stats": {"mean": bench.stats.mean, "stddev": bench.stats.stddev}}
        for bench in measured
    ]
    _who_won(terminalreporter, config, entries)
    _roofline(terminalreporter, entries)


def _who_won(terminalreporter, config, measured: list[dict]) -> None:
    groups: dict[str, list[dict]] = {}
    for entry in measured:
        groups.setdefault(entry["group"] or entry["name"], []).append(entry)
    groups = comparisons(groups)
    if not groups:
        return
    cores = os.cpu_count() or 1
    load = getattr(config, "_ada2i_load_at_start", 0.0)
    other = _other_work_share(getattr(config, "_ada2i_cpu_at_start", (0.0, None, 0.0)), _cpu_clock(), cores)
    write = terminalreporter.write_line
    terminalreporter.section("ada2i_fast: who won")
    write(
        f"load average {load:.2f} at the start on {cores} cores; other processes used "
        + ("(unknown: no /proc/stat)" if other is None else f"{other:.0%} of the cores during the run")
    )
    noisy = []
    for group, entries in groups.items():
        base = baseline_of(entries)
        winner = min(entries, key=lambda e: e["stats"]["mean"])
        speedup = base["stats"]["mean"] / winner["stats"]["mean"]
        write(
            f"  {group}: {variant(winner)} {winner['stats']['mean'] * 1e3:,.2f} ms, "
            + (f"{speedup:.2f}x {variant(base)}" if winner is not base else "the baseline itself is fastest")
        )
        if any(e["stats"]["stddev"] > SPREAD_LIMIT * e["stats"]["mean"] for e in entries):
            noisy.append(group)
    busy = load > LOAD_PER_CORE_LIMIT * cores if other is None else other > OTHER_WORK_LIMIT
    if busy:
        write(f"WARNING: the machine was busy (load average {load:.2f} at the start, other processes "
              f"{'?' if other is None else f'{other:.0%}'} of {cores} cores): these ratios may be wrong; "
              "rerun on a quiet machine", red=True)
    if noisy:
        write(f"WARNING: rounds spread more than {SPREAD_LIMIT:.0%} in {len(noisy)} group(s): "
              + "; ".join(noisy), yellow=True)


def _roofline(terminalreporter, entries: list[dict]) -> None:
    table = list(roofline_rows(entries))
    if not table:
        return
    write = terminalreporter.write_line
    terminalreporter.section("ada2i_fast: roofline")
    write(machine_line(entries))
    for row in table:
        parts = [f"{rate(row.gflop_per_s)} GFLOP/s", f"{rate(row.gb_per_s)} GB/s"]
        if row.flop_per_byte is not None:
            parts.append(f"{row.flop_per_byte:.3g} FLOP/byte")
        if row.pct_gemm is not None:
            parts.append(f"{row.pct_gemm:.1f}% of {row.dtype} GEMM")
        if row.pct_bandwidth is not None:
            parts.append(f"{row.pct_bandwidth:.1f}% of bandwidth")
        if row.pct_datasheet_flops is not None or row.pct_datasheet_bytes is not None:
            parts.append(f"datasheet: {_percent(row.pct_datasheet_flops)} of {row.dtype} FLOP/s, "
                         f"{_percent(row.pct_datasheet_bytes)} of GB/s")
        write(f"  {row.group} {row.variant}: " + ", ".join(parts))


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"
