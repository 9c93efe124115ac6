"""Does bf16 autocast cost accuracy? The same runs in fp32 and bf16, over seeds, on two corpora.

    python benchmarks/precision_accuracy.py --seeds 12 13 14

Corpora: the synthetic MELD-shaped corpus (all three modalities) and, when ``--csv-dir`` holds them,
the real MELD transcripts (text only, built with ``ada2i_fast.data.transcripts``). Reports the test
weighted F1 of the best-dev state and the training seconds per epoch, mean ± std over seeds, and
writes ``<out>.json`` and ``<out>.md``. Run it alone on the machine: the seconds are timings.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from ada2i_fast import train
from ada2i_fast.data.cache import write_cache
from ada2i_fast.data.transcripts import build_transcript_corpus

CORPORA = {
    "synthetic meld (atv, 0.3 size)": ["--dataset", "meld", "--size", "0.3", "--epochs", "6"],
    "MELD transcripts (text)": ["--dataset", "meld", "--epochs", "6"],
}


def run(flags: list[str], precision: str, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        summary = train.main([*flags, "--precision", precision, "--seed", str(seed), "--out", out, "--quiet"])
    return {
        "precision": precision,
        "seed": seed,
        "test_weighted_f1": summary["test"]["weighted_f1"],
        "seconds_per_epoch": summary["timing"]["seconds"] / summary["epochs_run"],
    }


def mean_std(values: list[float], digits: int) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {spread:.{digits}f}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "meld"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[12, 13, 14])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "precision-accuracy-cpu"))
    args = parser.parse_args(argv)

    results = {}
    with tempfile.TemporaryDirectory() as corpus_dir:
        corpora = dict(CORPORA)
        if Path(args.csv_dir).is_dir():
            write_cache(build_transcript_corpus(args.csv_dir, "meld"), corpus_dir,
                        source={"kind": "transcripts", "layout": "meld", "path": args.csv_dir})
            corpora["MELD transcripts (text)"] = [*corpora["MELD transcripts (text)"], "--data", corpus_dir]
        else:
            del corpora["MELD transcripts (text)"]
        for name, flags in corpora.items():
            results[name] = [run(flags, precision, seed) for precision in ("fp32", "bf16") for seed in args.seeds]
            print(json.dumps({name: results[name]}))

    lines = ["| corpus | precision | test weighted F1 | seconds per epoch |", "|---|---|---|---|"]
    for name, runs in results.items():
        for precision in ("fp32", "bf16"):
            mine = [r for r in runs if r["precision"] == precision]
            lines.append(f"| {name} | {precision} | {mean_std([r['test_weighted_f1'] for r in mine], 3)} "
                         f"| {mean_std([r['seconds_per_epoch'] for r in mine], 1)} |")
    table = "\n".join(lines) + "\n"
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps({"seeds": args.seeds, "results": results}, indent=1))
    out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
