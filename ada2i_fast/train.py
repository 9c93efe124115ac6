"""Train Ada2I with the recipe of SPEC §4: ``python -m ada2i_fast.train --dataset meld``.

Read top to bottom: flags -> data -> model -> epochs (train, dev, early stopping) -> test report.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from .atomic import write_json_atomic
from .checkpoint import save_checkpoint
from .config import DATASETS, Ada2IConfig
from .data import Corpus, iterate_batches, load_corpus, num_batches
from .kernels import BACKENDS, use_backend
from .metrics import evaluate
from .model import Ada2I
from .plots import plot_training
from .step import make_optimizer, train_step

# Config fields that come from the data, not from flags.
_DATA_FIELDS = {"input_dims", "num_classes"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ada2i_fast.train",
        description="Train and evaluate Ada2I. Hyperparameters default to the dataset's preset.",
    )
    parser.add_argument("--dataset", choices=DATASETS, default="meld", help="picks the preset and the data layout")
    parser.add_argument(
        "--data",
        default=os.environ.get("ADA2I_DATA"),
        help="legacy pickle or columnar cache (default: $ADA2I_DATA); without one, a synthetic corpus of the dataset's shape",
    )
    parser.add_argument("--size", type=float, default=1.0, help="synthetic corpus size as a fraction of the real one")
    parser.add_argument("--task", choices=("7class", "2class"), default="7class", help="MOSEI label set")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=None, help="output directory (default: runs/<dataset>)")
    parser.add_argument("--log-every", type=int, default=0, help="read losses every N steps (0: once per epoch)")
    parser.add_argument("--bucket", action=argparse.BooleanOptionalAction, default=True, help="length-bucketed batches")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="bf16 autocast (CUDA)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the encoders")
    parser.add_argument(
        "--backend", choices=BACKENDS, default="auto", help="fused-op implementation (auto: Triton on CUDA, torch on CPU)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    hyper = parser.add_argument_group("hyperparameters (default: the dataset's preset)")
    for f in dataclasses.fields(Ada2IConfig):
        if f.name in _DATA_FIELDS:
            continue
        flag = "--" + f.name.replace("_", "-")
        default_type = float if f.default is None else type(f.default)  # amw_scale: None means the mode's s
        if default_type is bool:
            hyper.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            hyper.add_argument(flag, type=default_type, default=None)
    return parser


def build_config(args: argparse.Namespace, corpus: Corpus) -> Ada2IConfig:
    overrides = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(Ada2IConfig)
        if f.name not in _DATA_FIELDS and getattr(args, f.name) is not None
    }
    if "modalities" not in overrides:  # the preset's modalities that the data has (text-only transcripts: "t")
        preset = Ada2IConfig.preset(args.dataset).modalities
        overrides["modalities"] = "".join(m for m in preset if m in corpus.dims) or preset
    config = Ada2IConfig.preset(args.dataset, **overrides)
    missing = [m for m in config.modalities if m not in corpus.dims]
    if missing:
        raise SystemExit(f"error: the data has no modality {missing[0]!r} (it has {corpus.modalities!r})")
    return config.replace(
        input_dims={m: corpus.dims[m] for m in config.modalities}, num_classes=len(corpus.classes)
    )


def open_corpus(args: argparse.Namespace) -> Corpus:
    seed = args.seed if args.seed is not None else Ada2IConfig.preset(args.dataset).seed
    path = args.data
    if path and not Path(path).exists():
        print(f"no data file at {path}; training on the synthetic {args.dataset} corpus", file=sys.stderr)
        path = None
    elif not path:
        print(f"no data file given (--data or ADA2I_DATA); training on the synthetic {args.dataset} corpus", file=sys.stderr)
    corpus = load_corpus(args.dataset, path, seed=seed, synthetic_size=args.size, task=args.task)
    return corpus.validate(num_classes=len(corpus.classes))


def batches_on_device(batches, device: torch.device):
    """Move batches to ``device``; on CUDA the next batch is pinned and copied while this one runs."""
    if device.type != "cuda":
        yield from (batch.to(device) for batch in batches)
        return
    pending = None
    for batch in batches:
        ready = batch.pin_memory().to(device, non_blocking=True)
        if pending is not None:
            yield pending
        pending = ready
    if pending is not None:
        yield pending


def train_epoch(model, split, optimizer, *, epoch, args, generator) -> dict:
    config = model.config
    modulate = config.modulation and config.start_mod <= epoch <= config.end_mod
    batches = iterate_batches(
        split, config.modalities, config.batch_size, shuffle=True, seed=config.seed + epoch, bucket=args.bucket
    )
    progress = tqdm(
        batches_on_device(batches, torch.device(args.device)),
        total=num_batches(split, config.batch_size),
        desc=f"epoch {epoch}",
        leave=False,
        disable=args.quiet,
    )
    sums, steps, real, cells = {}, 0, 0, 0
    for batch in progress:
        logs = train_step(
            model, batch, optimizer, modulate=modulate, generator=generator, precision=args.precision
        )
        sums = {k: sums.get(k, 0) + v for k, v in logs.items()}
        steps += 1
        real += batch.num_utterances
        cells += batch.batch_size * batch.max_len
        if args.log_every and steps % args.log_every == 0:
            progress.set_postfix(loss=f"{sums['loss'].item() / steps:.4f}")
    means = {k: (v / steps).tolist() for k, v in sums.items()}
    return dict(means, modulated=modulate, padding_waste=1 - real / cells, utterances=real)


def train(argv=None) -> dict:
    """Parse ``argv`` like the CLI and run training; returns the summary."""
    args = build_parser().parse_args(argv)
    with use_backend(args.backend):
        return run(args)


def run(args: argparse.Namespace) -> dict:
    corpus = open_corpus(args)
    config = build_config(args, corpus)
    out = Path(args.out or Path("runs") / args.dataset)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    torch.manual_seed(config.seed)

    model = Ada2I(config).to(device)
    if args.compile:
        for encoder in model.encoders.values():
            encoder.compile()
    optimizer = make_optimizer(model)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min")
    generator = torch.Generator(device=device).manual_seed(config.seed)
    run_info = dict(dataset=args.dataset, data=corpus.source, size=args.size, task=args.task, classes=list(corpus.classes))
    print(f"data: {corpus.source} | train {corpus.splits['train'].num_dialogues} dialogues, "
          f"dev {corpus.splits['dev'].num_dialogues}, test {corpus.splits['test'].num_dialogues} | device {device}")

    best_f1, best_epoch, best_state, history = -1.0, 0, None, []
    with open(out / "metrics.jsonl", "w") as metrics_file:
        for epoch in range(1, config.epochs + 1):
            start = time.perf_counter()
            stats = train_epoch(model, corpus.splits["train"], optimizer, epoch=epoch, args=args, generator=generator)
            seconds = time.perf_counter() - start
            dev = evaluate(model, corpus.splits["dev"], batch_size=config.batch_size, device=device)
            scheduler.step(dev.loss)
            if dev.weighted_f1 > best_f1:
                best_f1, best_epoch = dev.weighted_f1, epoch
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                save_checkpoint(out / "best.pt", model, epoch=epoch, dev_weighted_f1=best_f1, **run_info)
            record = dict(
                epoch=epoch,
                train={k: stats[k] for k in ("loss", "classification", "feature")},
                unimodal_loss=dict(zip(config.modalities, stats["unimodal_loss"])),
                ratio=dict(zip(config.modalities, stats["ratios"])),
                coefficient=dict(zip(config.modalities, stats["coefficients"])),
                modulated=stats["modulated"],
                dev=dict(loss=dev.loss, accuracy=dev.accuracy, weighted_f1=dev.weighted_f1),
                lr=optimizer.param_groups[0]["lr"],
                padding_waste=stats["padding_waste"],
                seconds=seconds,
                utterances_per_second=stats["utterances"] / seconds,
            )
            history.append(record)
            metrics_file.write(json.dumps(record) + "\n")
            metrics_file.flush()
            tqdm.write(
                f"epoch {epoch:3d} | loss {stats['loss']:.4f} | dev loss {dev.loss:.4f} "
                f"f1 {dev.weighted_f1:.4f} acc {dev.accuracy:.4f} | rho "
                + " ".join(f"{m}={r:.3f}" for m, r in record["ratio"].items())
                + f" | {record['utterances_per_second']:.0f} utt/s"
                + (" *" if best_epoch == epoch else "")
            )
            if epoch - best_epoch >= config.patience:
                print(f"early stop: no better dev F1 for {config.patience} epochs")
                break

    model.load_state_dict(best_state)
    test = evaluate(model, corpus.splits["test"], batch_size=config.batch_size, device=device)
    print(f"\ntest (best dev epoch {best_epoch}): accuracy {test.accuracy:.4f} | weighted F1 {test.weighted_f1:.4f}")
    print(test.report(corpus.classes))
    summary = dict(
        run_info,
        config=config.to_dict(),
        best_epoch=best_epoch,
        best_dev_weighted_f1=best_f1,
        test=test.summary(corpus.classes),
        epochs_run=len(history),
        timing=dict(seconds=sum(r["seconds"] for r in history)),
    )
    write_json_atomic(out / "summary.json", summary)
    plot_training(history, out / "training.png", title=f"Ada2I on {corpus.source}")
    print(f"wrote {out / 'best.pt'}, {out / 'metrics.jsonl'}, {out / 'summary.json'}, {out / 'training.png'}")
    return summary


def main(argv=None) -> None:
    try:
        train(argv)
    except (ValueError, FileNotFoundError) as error:  # bad data or flags: one clear line, no traceback
        raise SystemExit(f"error: {error}") from error


if __name__ == "__main__":
    main()
