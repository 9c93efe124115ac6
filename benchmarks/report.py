"""Turn pytest-benchmark JSON into a Markdown table and a PNG chart of speed-ups over the baseline.

    pytest benchmarks/ --benchmark-only --benchmark-json benchmarks/results/cpu.json
    python benchmarks/report.py benchmarks/results/cpu.json [more.json ...] --out benchmarks/results/cpu

Within each group the baseline is the entry that reproduces the authors' computation (its name
says literal, authors, per_parameter or unfused), else the slowest entry.

Entries that recorded roofline counts (``roofline.record``) also go into a roofline table: achieved
GFLOP/s and GB/s, arithmetic intensity, and the fractions of the GEMM throughput of the same dtype and
of the memory bandwidth measured by ``test_bench_machine.py`` (group ``machine``, which is no
comparison and stays out of the speed-up table), and on a known CUDA device of its datasheet peaks.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Iterator, NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BASELINE_MARKERS = ("literal", "authors", "per_parameter", "unfused")
MACHINE_GROUP = "machine"
MACHINE_HINT = "run benchmarks/test_bench_machine.py in the same session for the fractions"

# NVIDIA datasheet peaks, dense (no sparsity): (device name substring, FLOP/s by dtype, memory bytes/s).
# H100 SXM5 and H200 SXM: FP32 67 TFLOP/s, BF16 tensor core 989 TFLOP/s; HBM3 3.35 TB/s, HBM3e 4.8 TB/s.
# PCIe and NVL variants run at lower clocks, so their rows come before the plain "H100"/"H200" match.
DATASHEET_PEAKS = (
    ("H100 PCIe", {"float32": 51e12, "bfloat16": 756e12}, 2.0e12),
    ("H100 NVL", {"float32": 60e12, "bfloat16": 835e12}, 3.9e12),
    ("H100", {"float32": 67e12, "bfloat16": 989e12}, 3.35e12),
    ("H200 NVL", {"float32": 60e12, "bfloat16": 835e12}, 4.8e12),
    ("H200", {"float32": 67e12, "bfloat16": 989e12}, 4.8e12),
)


def load_groups(paths: list[Path]) -> tuple[dict, dict[str, list[dict]]]:
    """Benchmarks of one or more runs on the same machine, by group."""
    groups: dict[str, list[dict]] = {}
    for path in paths:
        data = json.loads(path.read_text())
        for bench in data["benchmarks"]:
            groups.setdefault(bench["group"] or bench["name"], []).append(bench)
    return data["machine_info"], groups


def baseline_of(entries: list[dict]) -> dict:
    marked = [e for e in entries if any(m in e["name"] for m in BASELINE_MARKERS)]
    return marked[0] if marked else max(entries, key=lambda e: e["stats"]["mean"])


def variant(entry: dict) -> str:
    """The parametrisation that tells entries of one group apart."""
    name = entry["name"]
    return name[name.index("[") + 1 : -1] if "[" in name else name


def comparisons(groups: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """The groups that compare implementations: all but the machine limits."""
    return {group: entries for group, entries in groups.items() if group != MACHINE_GROUP}


def machine_limits(entries: list[dict]) -> tuple[dict[str, float], float | None]:
    """The best measured GEMM GFLOP/s by dtype and in-place stream GB/s of ``test_bench_machine.py`` among ``entries``."""
    gemm: dict[str, float] = {}
    bandwidth = None
    for entry in entries:
        info = entry.get("extra_info", {})
        if "gflop_per_s" not in info:
            continue
        if info.get("machine_kind") == "gemm":
            gemm[info["dtype"]] = max(gemm.get(info["dtype"], 0.0), info["gflop_per_s"])
        elif info.get("machine_kind") == "bandwidth":
            bandwidth = max(bandwidth or 0.0, info["gb_per_s"])
    return gemm, bandwidth


def datasheet_peaks(device_name: str) -> tuple[dict[str, float], float] | None:
    for key, flops, bandwidth in DATASHEET_PEAKS:
        if key in device_name:
            return flops, bandwidth
    return None


def _percent(value: float, limit: float | None) -> float | None:
    return 100.0 * value / limit if limit else None


class RooflineRow(NamedTuple):
    """One measured entry's roofline; a percentage is None where its limit is unknown."""

    group: str
    variant: str
    dtype: str
    gflop_per_s: float
    gb_per_s: float
    flop_per_byte: float | None
    pct_gemm: float | None  # of the same-dtype GEMM measured by test_bench_machine.py
    pct_bandwidth: float | None  # of the stream bandwidth measured by test_bench_machine.py
    pct_datasheet_flops: float | None
    pct_datasheet_bytes: float | None


def roofline_rows(entries: list[dict]) -> Iterator[RooflineRow]:
    """A row per measured entry with roofline counts, outside the machine group."""
    gemm, bandwidth = machine_limits(entries)
    for entry in entries:
        info = entry.get("extra_info", {})
        if "gflop_per_s" not in info or "machine_kind" in info:
            continue
        gflops, gbs, dtype = info["gflop_per_s"], info["gb_per_s"], info["dtype"]
        peaks = datasheet_peaks(info.get("device_name", ""))
        peak_flops, peak_bytes = (peaks[0].get(dtype), peaks[1]) if peaks else (None, None)
        yield RooflineRow(
            entry["group"] or entry["name"],
            variant(entry),
            dtype,
            gflops,
            gbs,
            info["flops"] / info["bytes"] if info["bytes"] else None,
            _percent(gflops, gemm.get(dtype)),
            _percent(gbs, bandwidth),
            _percent(gflops * 1e9, peak_flops),
            _percent(gbs * 1e9, peak_bytes),
        )


def machine_line(entries: list[dict]) -> str:
    gemm, bandwidth = machine_limits(entries)
    if not gemm and bandwidth is None:
        return MACHINE_HINT
    parts = [f"GEMM {dtype} {rate(value)} GFLOP/s" for dtype, value in sorted(gemm.items())]
    if bandwidth is not None:
        parts.append(f"stream {rate(bandwidth)} GB/s")
    return "measured limits: " + ", ".join(parts)


def rate(value: float) -> str:
    """A GFLOP/s or GB/s figure: three significant digits below 100, else whole numbers."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _cell(value: float | None, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def roofline_markdown(entries: list[dict]) -> str:
    table = list(roofline_rows(entries))
    if not table:
        return ""
    lines = [
        "## Roofline",
        "",
        machine_line(entries),
        "",
        "| group | variant | dtype | GFLOP/s | GB/s | FLOP/byte | % GEMM (same dtype) | % bandwidth "
        "| % datasheet FLOP/s | % datasheet GB/s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in table:
        percents = (row.pct_gemm, row.pct_bandwidth, row.pct_datasheet_flops, row.pct_datasheet_bytes)
        cells = [rate(row.gflop_per_s), rate(row.gb_per_s), _cell(row.flop_per_byte, ".3g")]
        cells += [_cell(p, ".1f") for p in percents]
        lines.append(f"| {row.group} | {row.variant} | {row.dtype} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def rows(groups: dict[str, list[dict]]):
    for group, entries in groups.items():
        base = baseline_of(entries)["stats"]["mean"]
        for entry in sorted(entries, key=lambda e: e["stats"]["mean"]):
            mean = entry["stats"]["mean"]
            info = entry.get("extra_info", {})
            yield group, variant(entry), mean, base / mean, info.get("utterances_per_s"), info.get("peak_bytes")


def markdown(machine: dict, groups) -> str:
    lines = [
        f"Machine: {machine.get('cpu', {}).get('brand_raw', machine.get('processor', '?'))}, "
        f"Python {machine.get('python_version', '?')}",
        "",
        "| group | variant | mean (ms) | speed-up vs baseline | utterances/s | peak MiB |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for group, name, mean, speedup, utterances, peak in rows(groups):
        utt = f"{utterances:,.0f}" if utterances else ""
        mib = f"{peak / 2**20:,.1f}" if peak else ""
        lines.append(f"| {group} | {name} | {mean * 1e3:,.2f} | {speedup:.2f}x | {utt} | {mib} |")
    return "\n".join(lines) + "\n"


def chart(groups, path: Path) -> None:
    data = [(f"{group}\n{name}", speedup) for group, name, _, speedup, _, _ in rows(groups)]
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(data) + 1.5), constrained_layout=True)
    labels, values = zip(*data)
    ax.barh(range(len(data)), values, color=["tab:green" if v > 1.0 else "tab:grey" for v in values])
    ax.set_yticks(range(len(data)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("speed-up over the group's baseline (x)")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", type=Path, nargs="+", help="pytest-benchmark --benchmark-json files of one machine")
    parser.add_argument("--out", type=Path, help="writes OUT.md and OUT.png (default: the first JSON's path)")
    args = parser.parse_args(argv)
    machine, groups = load_groups(args.json)
    roofline = roofline_markdown([entry for entries in groups.values() for entry in entries])
    groups = comparisons(groups)
    table = markdown(machine, groups) + ("\n" + roofline if roofline else "")
    out = args.out or args.json[0].with_suffix("")
    out.with_suffix(".md").write_text(table)
    chart(groups, out.with_suffix(".png"))
    print(table)


if __name__ == "__main__":
    main()
