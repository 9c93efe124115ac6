"""Whole training runs, ours against the authors' computation: test weighted F1 and throughput per seed.

    python benchmarks/compare_training.py --seeds 12 13 14 -- --dataset iemocap --size 0.5 --epochs 6

"ours fp32" is the trainer's default (packed encoders, factored ops, length-bucketed batches), "ours
bf16" the same under bfloat16 autocast (on devices with bfloat16 arithmetic); "literal" reproduces the
authors' computation (encoders over the padded grid, literal tensor ring, random batches) with our
step. All share every other flag and seed. Writes a JSON next to the benchmark results and prints the
mean and spread of each.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
from pathlib import Path

import torch

from ada2i_fast import train
from ada2i_fast.devices import resolve_precision
from authors_way import padded_encoders

OURS = ["--backend", "auto", "--bucket"]
CONFIGURATIONS = {
    "ours fp32": [*OURS, "--precision", "fp32"],
    "ours bf16": [*OURS, "--precision", "bf16"],
    "literal": ["--backend", "literal", "--no-bucket", "--precision", "fp32"],
}
BASELINE = "literal"


def train_once(name: str, flags: list[str], seed: int) -> dict:
    runs_as_authors = padded_encoders() if name == BASELINE else contextlib.nullcontext()
    with tempfile.TemporaryDirectory() as out, runs_as_authors:
        summary = train.main([*flags, *CONFIGURATIONS[name], "--seed", str(seed), "--out", out, "--quiet"])
        epochs = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    seconds = [e["seconds"] for e in epochs]
    utterances = sum(e["utterances_per_second"] * e["seconds"] for e in epochs)
    return {
        "seed": seed,
        "test_weighted_f1": summary["test"]["weighted_f1"],
        "train_utterances_per_s": utterances / sum(seconds),
        "seconds_per_epoch": statistics.mean(seconds),
        "mean_padding_waste": statistics.mean(e["padding_waste"] for e in epochs),
    }


def _mean_and_spread(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[12, 13, 14])
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "training-comparison.json")
    parser.add_argument("flags", nargs=argparse.REMAINDER, help="flags for python -m ada2i_fast.train, after --")
    args = parser.parse_args(argv)
    flags = [f for f in args.flags if f != "--"]
    names = [n for n in CONFIGURATIONS if n != "ours bf16" or resolve_precision("auto", torch.device("cpu")) == "bf16"]
    results = {name: [train_once(name, flags, seed) for seed in args.seeds] for name in names}
    report = {"flags": flags, "runs": results}
    for name, runs in results.items():
        f1, f1_spread = _mean_and_spread([r["test_weighted_f1"] for r in runs])
        speed, speed_spread = _mean_and_spread([r["train_utterances_per_s"] for r in runs])
        report[name] = {
            "test_weighted_f1_mean": f1,
            "test_weighted_f1_stdev": f1_spread,
            "train_utterances_per_s_mean": speed,
            "train_utterances_per_s_stdev": speed_spread,
            "seconds_per_epoch_mean": statistics.mean(r["seconds_per_epoch"] for r in runs),
            "padding_waste_mean": statistics.mean(r["mean_padding_waste"] for r in runs),
        }
    baseline = report[BASELINE]["train_utterances_per_s_mean"]
    print("| configuration | test weighted F1 | training utterances/s | seconds per epoch | padding | throughput vs literal |")
    print("|---|---|---|---|---|---|")
    for name in results:
        row = report[name]
        row["throughput_ratio"] = row["train_utterances_per_s_mean"] / baseline
        print(
            f"| {name} | {row['test_weighted_f1_mean']:.3f} ± {row['test_weighted_f1_stdev']:.3f} "
            f"| {row['train_utterances_per_s_mean']:.0f} ± {row['train_utterances_per_s_stdev']:.0f} "
            f"| {row['seconds_per_epoch_mean']:.1f} | {row['padding_waste_mean']:.0%} | {row['throughput_ratio']:.2f}x |"
        )
    args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
