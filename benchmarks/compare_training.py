"""Whole training runs, ours against the authors' computation: test weighted F1 and throughput per seed.

    python benchmarks/compare_training.py --seeds 12 13 14 -- --dataset meld --size 0.3 --epochs 8 --lr 1e-3

"ours" is the trainer's default (factored ops, length-bucketed batches); "literal" reproduces the
authors' computation (literal tensor ring, random batches). Both share every other flag and seed.
Writes a JSON next to the benchmark results and prints the mean and spread of each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from ada2i_fast import train

CONFIGURATIONS = {"ours": ["--backend", "auto", "--bucket"], "literal": ["--backend", "literal", "--no-bucket"]}


def train_once(flags: list[str], seed: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        summary = train.main([*flags, "--seed", str(seed), "--out", out, "--quiet"])
        epochs = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    utterances = sum(e["utterances_per_second"] * e["seconds"] for e in epochs)
    return {
        "seed": seed,
        "test_weighted_f1": summary["test"]["weighted_f1"],
        "train_utterances_per_s": utterances / sum(e["seconds"] for e in epochs),
        "mean_padding_waste": statistics.mean(e["padding_waste"] for e in epochs),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[12, 13, 14])
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "training-comparison.json")
    parser.add_argument("flags", nargs=argparse.REMAINDER, help="flags for python -m ada2i_fast.train, after --")
    args = parser.parse_args(argv)
    flags = [f for f in args.flags if f != "--"]
    results = {name: [train_once(flags + extra, seed) for seed in args.seeds] for name, extra in CONFIGURATIONS.items()}
    report = {"flags": flags, "runs": results}
    for name, runs in results.items():
        f1 = [r["test_weighted_f1"] for r in runs]
        speed = [r["train_utterances_per_s"] for r in runs]
        report[name] = {
            "test_weighted_f1_mean": statistics.mean(f1),
            "test_weighted_f1_stdev": statistics.stdev(f1) if len(f1) > 1 else 0.0,
            "train_utterances_per_s_mean": statistics.mean(speed),
        }
        print(f"{name:8s} test weighted F1 {report[name]['test_weighted_f1_mean']:.4f} "
              f"± {report[name]['test_weighted_f1_stdev']:.4f} | {report[name]['train_utterances_per_s_mean']:.0f} utt/s")
    report["throughput_ratio"] = report["ours"]["train_utterances_per_s_mean"] / report["literal"]["train_utterances_per_s_mean"]
    print(f"throughput ours / literal: {report['throughput_ratio']:.2f}x")
    args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
