"""Turn pytest-benchmark JSON into a Markdown table and a PNG chart of speed-ups over the baseline.

    pytest benchmarks/ --benchmark-only --benchmark-json benchmarks/results/cpu.json
    python benchmarks/report.py benchmarks/results/cpu.json [more.json ...] --out benchmarks/results/cpu

Within each group the baseline is the entry that reproduces the authors' computation (its name
says literal, authors, per_parameter or unfused), else the slowest entry.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BASELINE_MARKERS = ("literal", "authors", "per_parameter", "unfused")


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
    table = markdown(machine, groups)
    out = args.out or args.json[0].with_suffix("")
    out.with_suffix(".md").write_text(table)
    chart(groups, out.with_suffix(".png"))
    print(table)


if __name__ == "__main__":
    main()
