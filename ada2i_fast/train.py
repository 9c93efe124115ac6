"""Train Ada2I with the recipe of SPEC §4: ``python -m ada2i_fast.train --dataset meld``.

Read top to bottom: flags -> configs and data -> ``fit``: model, epochs (train, dev, early
stopping), test report of the best-dev state.
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
from .config import DATASETS, PRECISIONS, Ada2IConfig, TrainConfig
from .data import Corpus, iterate_batches, load_corpus, num_batches, padding_waste
from .eval_loop import evaluate_split
from .kernels import BACKENDS, use_backend
from .model import Ada2I
from .plots import plot_training
from .step import make_optimizer, train_step

# Model fields that come from the data, not from flags; TrainConfig fields that have their own flags.
_DATA_FIELDS = {"input_dims", "num_classes"}
_RUNTIME_FIELDS = {"device", "precision", "bucket", "compile", "log_every", "progress"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ada2i_fast.train",
        description="Train and evaluate Ada2I. Hyperparameters default to the dataset's preset.",
    )
    parser.add_argument("--dataset", choices=DATASETS, default="meld", help="picks the preset and the data layout (default: meld)")
    parser.add_argument(
        "--data",
        default=os.environ.get("ADA2I_DATA"),
        help="legacy pickle, columnar cache or transcript corpus (default: $ADA2I_DATA); "
        "without one, a synthetic corpus of the dataset's shape",
    )
    parser.add_argument("--size", type=float, default=1.0, help="synthetic corpus size as a fraction of the real one (default: 1)")
    parser.add_argument("--task", choices=("7class", "2class"), default="7class", help="MOSEI label set (default: 7class)")
    parser.add_argument("--out", default=None, help="output directory (default: runs/<dataset>)")
    parser.add_argument(
        "--backend", choices=BACKENDS, default="auto", help="fused-op implementation (default: auto, Triton on CUDA and torch on CPU)"
    )
    runtime = parser.add_argument_group("execution")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    runtime.add_argument("--device", default=device, help=f"(default: {device})")
    runtime.add_argument("--precision", choices=PRECISIONS, default="fp32", help="bf16: bfloat16 autocast (default: fp32)")
    runtime.add_argument("--bucket", action=argparse.BooleanOptionalAction, default=True,
                         help="length-bucketed batches (default: on)")
    runtime.add_argument("--compile", action="store_true", help="torch.compile the encoders")
    runtime.add_argument("--log-every", type=int, default=0,
                         help="read the loss every N steps (default: 0, once per epoch)")
    runtime.add_argument("--quiet", action="store_true", help="no progress bars")
    for title, config_cls, skip in (
        ("model hyperparameters (default: the dataset's preset)", Ada2IConfig, _DATA_FIELDS),
        ("training recipe (default: the dataset's preset)", TrainConfig, _RUNTIME_FIELDS),
    ):
        group = parser.add_argument_group(title)
        for f in dataclasses.fields(config_cls):
            if f.name in skip:
                continue
            flag = "--" + f.name.replace("_", "-")
            if f.type == "bool":
                group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=_preset_help(config_cls, f.name))
            else:  # amw_scale's default is None (the mode's s)
                group.add_argument(flag, type=float if f.default is None else type(f.default), default=None,
                                   help=_preset_help(config_cls, f.name))
    return parser


def _preset_help(config_cls, name: str) -> str:
    values = {dataset: getattr(config_cls.preset(dataset), name) for dataset in DATASETS}
    if name == "amw_scale":
        return "the cosine head's s (default: 10 in method mode, 1 with --compat reference)"
    if len(set(map(repr, values.values()))) == 1:
        return f"(default: {next(iter(values.values()))})"
    return "(default: " + ", ".join(f"{dataset} {value}" for dataset, value in values.items()) + ")"


def configs_from_args(args: argparse.Namespace, corpus: Corpus) -> tuple[Ada2IConfig, TrainConfig]:
    """The preset of ``--dataset`` with the flags given, and the corpus's dims and classes."""
    chosen = {name: value for name, value in vars(args).items() if value is not None}
    model_overrides = {k: v for k, v in chosen.items() if k in Ada2IConfig.field_names() and k not in _DATA_FIELDS}
    if "modalities" not in model_overrides:  # the preset's modalities that the data has (transcripts: "t")
        preset = Ada2IConfig.preset(args.dataset).modalities
        model_overrides["modalities"] = "".join(m for m in preset if m in corpus.dims) or preset
    model_config = Ada2IConfig.preset(args.dataset, **model_overrides)
    missing = [m for m in model_config.modalities if m not in corpus.dims]
    if missing:
        raise ValueError(f"the data has no modality {missing[0]!r} (it has {corpus.modalities!r})")
    model_config = model_config.replace(
        input_dims={m: corpus.dims[m] for m in model_config.modalities}, num_classes=len(corpus.classes)
    )
    train_overrides = {k: v for k, v in chosen.items() if k in TrainConfig.field_names()}
    train_config = TrainConfig.preset(args.dataset, **train_overrides, progress=not args.quiet)
    return model_config, train_config


def open_corpus(args: argparse.Namespace) -> Corpus:
    seed = args.seed if args.seed is not None else TrainConfig.preset(args.dataset).seed
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


def train_epoch(model: Ada2I, split, optimizer, train_config: TrainConfig, *, epoch: int, generator) -> dict:
    """One pass over ``split`` in shuffled (bucketed) batches; the mean of every logged term."""
    order = dict(shuffle=True, seed=train_config.seed + epoch, bucket=train_config.bucket)
    modulate = train_config.modulates(epoch)
    progress = tqdm(
        batches_on_device(
            iterate_batches(split, model.config.modalities, train_config.batch_size, **order),
            torch.device(train_config.device),
        ),
        total=num_batches(split, train_config.batch_size),
        desc=f"epoch {epoch}",
        leave=False,
        disable=not train_config.progress,
    )
    sums, steps = {}, 0
    for batch in progress:
        logs = train_step(model, batch, optimizer, train_config, modulate=modulate, generator=generator)
        sums = {k: sums.get(k, 0) + v for k, v in logs.items()}
        steps += 1
        if train_config.log_every and steps % train_config.log_every == 0:
            progress.set_postfix(loss=f"{sums['loss'].item() / steps:.4f}")
    means = {k: (v / steps).tolist() for k, v in sums.items()}
    waste = padding_waste(split, train_config.batch_size, **order)
    return dict(means, modulated=modulate, padding_waste=waste, utterances=split.num_utterances)


def fit(corpus: Corpus, model_config: Ada2IConfig, train_config: TrainConfig, out: Path, run_info: dict) -> dict:
    """Train on ``corpus["train"]``, select on dev, report test; writes ``out``'s files; returns the summary."""
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(train_config.device)
    torch.manual_seed(train_config.seed)

    model = Ada2I(model_config).to(device)
    if train_config.compile:
        for encoder in model.encoders.values():
            encoder.compile()
    optimizer = make_optimizer(model, train_config)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min")
    generator = torch.Generator(device=device).manual_seed(train_config.seed)
    splits = corpus.splits
    print(f"data: {corpus.source} | train {splits['train'].num_dialogues} dialogues, "
          f"dev {splits['dev'].num_dialogues}, test {splits['test'].num_dialogues} | "
          f"modalities {model_config.modalities} | device {device} | output {out}")

    def evaluate(split_name: str):
        return evaluate_split(model, splits[split_name], batch_size=train_config.batch_size, device=device)

    best_f1, best_epoch, best_state, history = -1.0, 0, None, []
    with open(out / "metrics.jsonl", "w") as metrics_file:
        for epoch in range(1, train_config.epochs + 1):
            start = time.perf_counter()
            stats = train_epoch(model, splits["train"], optimizer, train_config, epoch=epoch, generator=generator)
            seconds = time.perf_counter() - start
            dev = evaluate("dev")
            scheduler.step(dev.loss)
            if dev.weighted_f1 > best_f1:
                best_f1, best_epoch = dev.weighted_f1, epoch
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                save_checkpoint(out / "best.pt", model, epoch=epoch, dev_weighted_f1=best_f1,
                                train_config=train_config.to_dict(), **run_info)
            record = dict(
                epoch=epoch,
                train={k: stats[k] for k in ("loss", "classification", "feature")},
                unimodal_loss=dict(zip(model_config.modalities, stats["unimodal_loss"])),
                ratio=dict(zip(model_config.modalities, stats["ratios"])),
                coefficient=dict(zip(model_config.modalities, stats["coefficients"])),
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
            if epoch - best_epoch >= train_config.patience:
                print(f"early stop: no better dev F1 for {train_config.patience} epochs")
                break

    model.load_state_dict(best_state)
    test = evaluate("test")
    print(f"\ntest (best dev epoch {best_epoch}): accuracy {test.accuracy:.4f} | weighted F1 {test.weighted_f1:.4f}")
    print(test.report(corpus.classes))
    summary = dict(
        run_info,
        config=model_config.to_dict(),
        train_config=train_config.to_dict(),
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


def main(argv=None) -> dict:
    """The CLI: flags -> configs and data -> :func:`fit`; bad data or flags end in one ``error:`` line."""
    args = build_parser().parse_args(argv)
    try:
        corpus = open_corpus(args)
        model_config, train_config = configs_from_args(args, corpus)
        run_info = dict(dataset=args.dataset, data=corpus.source, size=args.size, task=args.task,
                        classes=list(corpus.classes))
        with use_backend(args.backend):
            return fit(corpus, model_config, train_config, Path(args.out or Path("runs") / args.dataset), run_info)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"error: {error}") from error


if __name__ == "__main__":
    main()
