"""Does Ada2I learn real conversations? Text-only runs on transcripts against two baselines.

    python benchmarks/real_transcripts.py --csv-dir ../shared/data/meld --scales 1 5 10 20 30 --seeds 12 13

Builds the corpus with ``ada2i_fast.data.transcripts`` (TF-IDF -> TruncatedSVD, fitted on train),
then per cosine-head scale s and seed trains with the library's defaults (the ``--dataset``
preset; text only) and reports the best dev weighted F1 and the test weighted F1 of the best-dev
state. Baselines on the same features: the majority class, and a per-utterance logistic
regression (no dialogue context). Choose s by the dev column only; the test column is reported.
Writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from ada2i_fast import train
from ada2i_fast.data.cache import write_cache
from ada2i_fast.data.transcripts import LAYOUTS, build_transcript_corpus
from ada2i_fast.studies.baselines import baseline_f1


def run(corpus_dir: Path, dataset: str, scale: float, seed: int, epochs: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        summary = train.main([
            "--dataset", dataset, "--data", str(corpus_dir), "--amw-scale", str(scale), "--seed", str(seed),
            "--epochs", str(epochs), "--out", out, "--quiet",
        ])
    return {
        "scale": scale,
        "seed": seed,
        "best_epoch": summary["best_epoch"],
        "dev_weighted_f1": summary["best_dev_weighted_f1"],
        "test_weighted_f1": summary["test"]["weighted_f1"],
        "seconds": summary["timing"]["seconds"],
    }


def mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {spread:.3f}"


def table(runs: list[dict], reference: dict[str, float]) -> str:
    lines = [
        "| model | dev weighted F1 (best epoch) | test weighted F1 (at best dev) | best epoch |",
        "|---|---|---|---|",
        f"| majority class | — | {reference['majority']:.3f} | — |",
        f"| per-utterance logistic regression | — | {reference['logistic_regression']:.3f} | — |",
    ]
    for scale in sorted({r["scale"] for r in runs}):
        mine = [r for r in runs if r["scale"] == scale]
        lines.append(
            f"| Ada2I, text only, s = {scale:g} ({len(mine)} seeds) | {mean_std([r['dev_weighted_f1'] for r in mine])} "
            f"| {mean_std([r['test_weighted_f1'] for r in mine])} | {', '.join(str(r['best_epoch']) for r in mine)} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "meld"))
    parser.add_argument("--layout", choices=tuple(LAYOUTS), default="meld")
    parser.add_argument("--dataset", default="meld", help="the preset to train with")
    parser.add_argument("--scales", type=float, nargs="+", default=[10.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[12, 13, 14])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "real-transcripts-meld"))
    args = parser.parse_args(argv)

    corpus = build_transcript_corpus(args.csv_dir, args.layout)
    reference = baseline_f1(corpus)
    print(f"majority {reference['majority']:.3f} | logistic regression {reference['logistic_regression']:.3f}")
    runs = []
    with tempfile.TemporaryDirectory() as corpus_dir:
        write_cache(corpus, corpus_dir, source={"kind": "transcripts", "layout": args.layout, "path": args.csv_dir})
        for scale in args.scales:
            for seed in args.seeds:
                runs.append(run(Path(corpus_dir), args.dataset, scale, seed, args.epochs))
                print(json.dumps(runs[-1]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"args": vars(args), "baselines": reference, "runs": runs}, indent=1))
    out.with_suffix(".md").write_text(table(runs, reference))
    print(table(runs, reference))


if __name__ == "__main__":
    main()
