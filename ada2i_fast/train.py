"""Train Ada2I with the recipe of SPEC §4: ``python -m ada2i_fast.train --dataset meld``.

Read top to bottom: flags -> configs and data -> ``fit``: model, epochs (train, dev, early
stopping), test report of the best-dev state.

Several GPUs or nodes (``distributed``): launch the same command with torchrun, one process per
GPU; each runs on ``cuda:LOCAL_RANK`` (NCCL), or on the CPU with gloo::

    torchrun --nproc_per_node=4 -m ada2i_fast.train --dataset meld ...
    # on each of 2 nodes (the data at the same path on both; files are written by rank 0's node):
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 \
        --rdzv-id=RUN -m ada2i_fast.train --dataset meld ...

Each global batch of ``--batch-size`` dialogues is split over the processes and the update is the
single-process update on the whole batch. ``--resume`` continues a distributed run with the same
number of processes only.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from . import distributed
from .atomic import strict_json, write_json_atomic
from .checkpoint import load_checkpoint, save_checkpoint
from .config import DATASETS, PRECISIONS, Ada2IConfig, TrainConfig
from .data import Corpus, iterate_batches, load_corpus, num_batches, padding_waste
from .data.synthetic import FAMILIES
from .data.batching import iterate_shards
from .devices import check_device, resolve_precision
from .eval_loop import evaluate_split
from .kernels import BACKENDS, use_backend
from .model import Ada2I
from .plots import plot_training
from .run_folder import (
    data_identity, fresh_run_dir, load_state, prepare_out, read_history, save_state, write_step_trace,
)
from .step import ShardStep, make_optimizer, train_step

# Model fields that come from the data, not from flags; TrainConfig fields that have their own flags.
_DATA_FIELDS = {"input_dims", "num_classes"}
_RUNTIME_FIELDS = {"device", "precision", "bucket", "compile", "log_every", "progress", "trace"}


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
    parser.add_argument("--synthetic", choices=FAMILIES, default="redundant",
                        help="the synthetic corpus's family: every modality carries the whole label (redundant), or "
                        "text merges classes that only audio or visual tell apart (complementary) (default: redundant)")
    parser.add_argument("--task", choices=("7class", "2class"), default="7class", help="MOSEI label set (default: 7class)")
    parser.add_argument("--out", default=None, help="output folder (default: a new runs/<dataset>/<date-time>)")
    parser.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    parser.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last.pt (its own settings)")
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
    runtime.add_argument("--trace", action="store_true",
                         help="write steps.jsonl: per step, each modality's score, rho, k, encoder gradient norm "
                         "before and after modulation and weight update norm")
    ablation = parser.add_argument_group("ablations (the paper's; each recorded in summary.json)")
    ablation.add_argument("--no-afw", action="store_true", help="encoders straight to the head (--mmt-nlayers 0)")
    ablation.add_argument("--no-amw", action="store_true", help="the concat head instead of the cosine one (--no-mmcosine)")
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


def ablations(model_config: Ada2IConfig, train_config: TrainConfig) -> dict[str, bool]:
    """Which of the method's parts a run kept (the paper's ablations)."""
    return {
        "afw": model_config.mmt_nlayers > 0,
        "amw": model_config.mmcosine,
        "modulation": train_config.modulation,
        "grad_noise": train_config.modulation and train_config.grad_noise,
    }


def configs_from_args(args: argparse.Namespace, corpus: Corpus) -> tuple[Ada2IConfig, TrainConfig]:
    """The preset of ``--dataset`` with the flags given, and the corpus's dims and classes."""
    chosen = {name: value for name, value in vars(args).items() if value is not None}
    if args.no_afw:
        if chosen.get("mmt_nlayers", 0):
            raise ValueError("--no-afw and --mmt-nlayers contradict each other")
        chosen["mmt_nlayers"] = 0
    if args.no_amw:
        if chosen.get("mmcosine"):
            raise ValueError("--no-amw and --mmcosine contradict each other")
        chosen["mmcosine"] = False
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


def open_corpus(dataset: str, data: str | None, *, seed: int, size: float, task: str, synthetic: str = "redundant",
                announce: bool = True) -> Corpus:
    """The corpus of ``data``, or the synthetic corpus of ``dataset`` (family ``synthetic``) when
    ``data`` is None (said on stderr when ``announce``)."""
    if data and not Path(data).exists():
        raise ValueError(f"--data {data}: no such file or folder")
    if data and synthetic != "redundant":
        raise ValueError(f"--synthetic {synthetic} chooses the corpus made without --data; drop one of them")
    if not data and announce:
        print(f"no data file given (--data or ADA2I_DATA); training on the synthetic {dataset} corpus "
              f"({synthetic})", file=sys.stderr)
    corpus = load_corpus(dataset, data, seed=seed, synthetic_size=size, task=task, synthetic=synthetic)
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


TRACE_NORMS = ("grad_norm_before", "grad_norm_after", "update_norm")  # train_step's trace
TRACED = ("skipped", "unimodal_score", "ratios", "coefficients", *TRACE_NORMS)  # steps.jsonl


class StopRequest:
    """SIGINT / SIGTERM while active: remember the signal; the loop stops after the current step."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __enter__(self) -> "StopRequest":
        self._previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        self.signal = signum


@dataclass
class EpochProgress:
    """Where an epoch stands: steps done, the running sums of the logged values, and the run of
    consecutive skipped (non-finite) steps, which carries over from epoch to epoch."""

    steps: int = 0
    sums: dict = field(default_factory=dict)
    trace: list = field(default_factory=list)  # per step's traced values (train_config.trace)
    streak: torch.Tensor = field(default_factory=lambda: torch.zeros((), dtype=torch.long))
    longest_streak: torch.Tensor = field(default_factory=lambda: torch.zeros((), dtype=torch.long))
    last_skipped_step: torch.Tensor = field(default_factory=lambda: torch.zeros((), dtype=torch.long))

    def add(self, logs: dict, *, trace: bool = False) -> None:
        if trace:
            self.trace.append({k: logs[k] for k in TRACED})
        self.steps += 1
        self.sums = {k: self.sums.get(k, 0) + v for k, v in logs.items()}
        skipped = logs["skipped"].long()
        self.streak = (self.streak.to(skipped.device) + 1) * skipped
        self.longest_streak = torch.maximum(self.longest_streak.to(skipped.device), self.streak)
        self.last_skipped_step = torch.where(logs["skipped"], self.steps, self.last_skipped_step.to(skipped.device))

    def state_dict(self) -> dict:
        return {"steps": self.steps, "sums": self.sums, "trace": self.trace, "streak": self.streak,
                "longest_streak": self.longest_streak, "last_skipped_step": self.last_skipped_step}

    def means(self) -> dict:
        """Per logged value, the mean over the steps that were not skipped."""
        kept = max(self.steps - int(self.sums["skipped"]), 1)
        means = {k: (v / kept).tolist() for k, v in self.sums.items() if k != "skipped" and not k.startswith("nonfinite_")}
        counts = {k.removeprefix("nonfinite_"): int(v) for k, v in self.sums.items() if k.startswith("nonfinite_")}
        return dict(means, skipped_steps=int(self.sums["skipped"]), nonfinite_terms=counts)


def train_epoch(
    model: Ada2I, split, optimizer, train_config: TrainConfig, *, epoch: int, generator,
    progress: EpochProgress, stop: StopRequest | None = None,
) -> bool:
    """Continue epoch ``epoch`` from ``progress.steps``, adding each step's logs to ``progress``.
    Returns False when ``stop`` asked to end early (after a whole step), True at the epoch's end.

    In a distributed run each step takes this process's shard of the global batch, and every
    process stops after the same step: the one after the step whose all-reduce first carried a
    stop request (``distributed.StopVote``)."""
    ctx = distributed.current()
    order = _batch_order(train_config, epoch)
    modalities, batch_size = model.config.modalities, train_config.batch_size
    if ctx is None:
        items = iterate_batches(split, modalities, batch_size, **order)
    else:
        items = iterate_shards(split, modalities, batch_size, rank=ctx.rank, world_size=ctx.world_size, **order)
    main = ctx is None or ctx.is_main
    bar = tqdm(
        batches_on_device(itertools.islice(items, progress.steps, None), torch.device(train_config.device)),
        initial=progress.steps,
        total=num_batches(split, batch_size),
        desc=f"epoch {epoch}",
        leave=False,
        disable=not (train_config.progress and main),
    )
    modulate, trace = train_config.modulates(epoch), train_config.trace
    vote = distributed.StopVote() if ctx is not None else None
    asked = lambda: stop is not None and stop.signal is not None  # noqa: E731
    for item in bar:
        if ctx is None:
            logs = train_step(model, item, optimizer, train_config, modulate=modulate, generator=generator, trace=trace)
            stopping = asked()
        else:  # a request made before this step rides in its all-reduce
            logs = train_step(model, item.batch, optimizer, train_config, modulate=modulate, generator=generator,
                              shard=ShardStep(item.share, stop=asked()), trace=trace)
            stopping = vote.push(logs.pop("stop_requested"))
        progress.add(logs, trace=trace)
        if train_config.log_every and main and progress.steps % train_config.log_every == 0:
            bar.set_postfix(loss=f"{progress.means()['loss']:.4f}")
        if stopping:
            bar.close()
            return False
    return not (vote is not None and vote.drain())


def _batch_order(train_config: TrainConfig, epoch: int) -> dict:
    return dict(shuffle=True, seed=train_config.seed + epoch, bucket=train_config.bucket)


class NonFiniteTraining(ValueError):
    """Too many consecutive steps had a non-finite loss or gradient."""


def _check_streak(progress: EpochProgress, epoch: int, limit: int, out: Path) -> None:
    longest = int(progress.longest_streak)
    if longest >= limit:
        terms = progress.means()["nonfinite_terms"]
        blamed = ", ".join(f"{name} in {count}" for name, count in terms.items() if count) or "the gradients only"
        saved = f"; the state after epoch {epoch - 1} is in {out / 'last.pt'}" if epoch > 1 else ""
        raise NonFiniteTraining(
            f"stopped in epoch {epoch}: {longest} consecutive steps up to step {int(progress.last_skipped_step)} "
            f"had a non-finite loss or gradient norm and were skipped (non-finite loss terms: {blamed}){saved}"
        )


def _all_finite(state: dict) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())


def fit(
    corpus: Corpus, model_config: Ada2IConfig, train_config: TrainConfig, out: Path, run_info: dict,
    resume: dict | None = None, on_epoch_end: Callable[[dict], None] | None = None,
) -> dict:
    """Train on ``corpus["train"]``, select on dev, report test; writes ``out``'s files; returns the summary.
    ``resume``: the state of ``run_folder.load_state``, to continue that run bit-identically.
    ``on_epoch_end`` gets each epoch's metrics record once it is written (a sweep may raise there to
    prune the run).

    Inside a torch.distributed process group (``distributed``; every process calls ``fit`` with the
    same arguments): the processes share each global batch, evaluate dev and test by whole batches
    and agree on every number; rank 0 alone prints and writes ``out``'s files, the others stay
    quiet, and each returns the same summary (``on_epoch_end`` runs on every process)."""
    ctx = distributed.current()
    main = ctx is None or ctx.is_main
    say = print if main else _silent
    world_size = 1 if ctx is None else ctx.world_size
    device = torch.device(train_config.device)
    train_config = train_config.replace(precision=resolve_precision(train_config.precision, device))
    torch.manual_seed(train_config.seed)
    model = Ada2I(model_config).to(device)
    if ctx is not None:
        distributed.broadcast_parameters(model)
        if ctx.rank:  # each process its own dropout draws (rank 0 keeps a single process's stream)
            torch.manual_seed(distributed.rank_seed(train_config.seed, ctx.rank))
    if train_config.compile:
        for encoder in model.encoders.values():
            encoder.compile()
    optimizer = make_optimizer(model, train_config)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min")
    generator = torch.Generator(device=device).manual_seed(train_config.seed)  # the same noise on every rank
    splits = corpus.splits
    best_f1, best_epoch, best_state, history = -1.0, 0, None, []
    epoch, progress = 1, EpochProgress()
    if resume is not None:
        _check_world_size(resume, world_size, out)
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        best_f1, best_epoch = resume["best_f1"], resume["best_epoch"]
        epoch, finished = resume["epoch"], resume["finished_epochs"]
        progress = EpochProgress(**resume["progress"])

        def read_run_files():
            best = load_checkpoint(out / "best.pt")[0].state_dict() if best_epoch else None
            return best, read_history(out, finished)

        best_state, history = distributed.on_main(ctx, read_run_files)
        rng = resume["rng"] if ctx is None else resume.get("rng_per_rank", [resume["rng"]])[ctx.rank]
        torch.set_rng_state(rng["torch"])
        generator.set_state(rng["generator"])
        if device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], device)
    say(f"data: {corpus.source} | train {splits['train'].num_dialogues} dialogues, "
        f"dev {splits['dev'].num_dialogues}, test {splits['test'].num_dialogues} | "
        f"modalities {model_config.modalities} | device {device}"
        + ("" if ctx is None else f" x {world_size} process" + ("es" if world_size > 1 else ""))
        + f" | output {out}"
        + (f" | resuming epoch {epoch} at step {progress.steps}" if resume else ""))
    shard = {} if ctx is None else dict(rank=ctx.rank, world_size=ctx.world_size)

    def evaluate(split_name: str):
        return evaluate_split(model, splits[split_name], batch_size=train_config.batch_size, device=device, **shard)

    def save_run_state(finished_epochs: int) -> None:
        rng = {"torch": torch.get_rng_state(), "generator": generator.get_state()}
        if device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(device)
        per_rank = [rng] if ctx is None else distributed.gather_objects(rng)
        if not main:
            return
        save_state(out / "last.pt", dict(
            model_config=model_config.to_dict(), train_config=train_config.to_dict(), run_info=run_info,
            model=model.state_dict(), optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
            epoch=epoch, finished_epochs=finished_epochs, progress=progress.state_dict(),
            best_f1=best_f1, best_epoch=best_epoch, rng=rng, rng_per_rank=per_rank, world_size=world_size,
        ))

    with StopRequest() as stop, contextlib.ExitStack() as files:
        metrics_file = files.enter_context(open(out / "metrics.jsonl", "a")) if main else None
        while epoch <= train_config.epochs and epoch - best_epoch <= train_config.patience:
            start = time.perf_counter()
            if not train_epoch(model, splits["train"], optimizer, train_config, epoch=epoch, generator=generator,
                               progress=progress, stop=stop):
                save_run_state(len(history))
                raise _interrupted(stop.signal, epoch, progress.steps, out, ctx)
            _check_streak(progress, epoch, train_config.max_skipped_steps, out)
            stats = progress.means()
            seconds = time.perf_counter() - start
            dev = evaluate("dev")
            scheduler.step(dev.loss)
            state = model.state_dict()
            if dev.weighted_f1 > best_f1 and _all_finite(state):
                best_f1, best_epoch = dev.weighted_f1, epoch
                best_state = {k: v.detach().cpu().clone() for k, v in state.items()}
                if main:
                    save_checkpoint(out / "best.pt", model, epoch=epoch, dev_weighted_f1=best_f1,
                                    train_config=train_config.to_dict(), **run_info)
            per_modality = lambda key: dict(zip(model_config.modalities, stats[key]))  # noqa: E731
            record = dict(
                epoch=epoch,
                train={k: stats[k] for k in ("loss", "classification", "feature")},
                unimodal_loss=per_modality("unimodal_loss"),
                unimodal_score=per_modality("unimodal_score"),
                ratio=per_modality("ratios"),
                coefficient=per_modality("coefficients"),
                **{key: per_modality(key) for key in TRACE_NORMS if key in stats},
                modulated=train_config.modulates(epoch),
                skipped_steps=stats["skipped_steps"],
                dev=dict(loss=dev.loss, accuracy=dev.accuracy, weighted_f1=dev.weighted_f1,
                         unimodal_weighted_f1=dev.unimodal_weighted_f1),
                lr=optimizer.param_groups[0]["lr"],
                padding_waste=padding_waste(splits["train"], train_config.batch_size, **_batch_order(train_config, epoch)),
                seconds=seconds,
                utterances_per_second=splits["train"].num_utterances / seconds,
            )
            history.append(record)
            if main:
                metrics_file.write(strict_json(record) + "\n")
                metrics_file.flush()
                if train_config.trace:
                    write_step_trace(out, epoch, progress.trace, model_config.modalities)
            if on_epoch_end is not None:
                on_epoch_end(record)
            if main:
                tqdm.write(
                    f"epoch {epoch:3d} | loss {stats['loss']:.4f} | dev loss {dev.loss:.4f} "
                    f"f1 {dev.weighted_f1:.4f} acc {dev.accuracy:.4f} | rho "
                    + " ".join(f"{m}={r:.3f}" for m, r in record["ratio"].items())
                    + f" | {record['utterances_per_second']:.0f} utt/s"
                    + (f" | {stats['skipped_steps']} steps skipped (non-finite)" if stats["skipped_steps"] else "")
                    + (" *" if best_epoch == epoch else "")
                )
            epoch, progress = epoch + 1, EpochProgress(streak=progress.streak)
            save_run_state(len(history))
        if epoch <= train_config.epochs:
            say(f"early stop: no better dev F1 for {train_config.patience} epochs")

    if best_state is None:
        raise NonFiniteTraining("no epoch produced a finite model; nothing to report")
    model.load_state_dict(best_state)
    test = evaluate("test")
    say(f"\ntest (best dev epoch {best_epoch}): accuracy {test.accuracy:.4f} | weighted F1 {test.weighted_f1:.4f}")
    say(test.report(corpus.classes))
    summary = dict(
        run_info,
        config=model_config.to_dict(),
        train_config=train_config.to_dict(),
        best_epoch=best_epoch,
        best_dev_weighted_f1=best_f1,
        test=test.summary(corpus.classes),
        ablations=ablations(model_config, train_config),
        epochs_run=len(history),
        timing=dict(seconds=sum(r["seconds"] for r in history)),
        **({} if ctx is None else {"world_size": world_size}),
    )
    if main:
        write_json_atomic(out / "summary.json", summary)
        plot_training(history, out / "training.png", title=f"Ada2I on {corpus.source}")
    say(f"wrote {out / 'best.pt'}, {out / 'metrics.jsonl'}, {out / 'summary.json'}, {out / 'training.png'}")
    return summary


def _silent(*args, **kwargs) -> None:
    pass


def _check_world_size(state: dict, world_size: int, out: Path) -> None:
    """A run resumes with the number of processes it was trained with (its batches' shards and each
    process's random state depend on it)."""
    saved = state.get("world_size", 1)
    if saved != world_size:
        raise ValueError(
            f"--resume {out}: the run was trained by {saved} process(es) and resumes only with as many "
            f"(this launch has {world_size}); launch it the way it was launched"
        )


def _interrupted(signum: int | None, epoch: int, steps: int, out: Path, ctx) -> "RunInterrupted":
    """The stop of every process of a run, after the same step (the signal may have reached another
    process only: then this one reports SIGTERM, the signal torchrun forwards)."""
    name = signal.Signals(signum).name if signum else "a signal to another process"
    command = f"python -m ada2i_fast.train --resume {out}"
    if ctx is not None:
        command = f"torchrun <the same launch: {ctx.world_size} processes> -m ada2i_fast.train --resume {out}"
    return RunInterrupted(
        f"{name}: stopped in epoch {epoch} after step {steps}; saved {out / 'last.pt'}. Resume with: {command}",
        code=128 + (signum or signal.SIGTERM),
    )


class RunInterrupted(SystemExit):
    """SIGINT or SIGTERM stopped the run after a whole step; its state is saved."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(code)
        self.message = message


# Flags that may accompany --resume: they change how the run executes, not what it computes.
_RESUME_FLAGS = {"resume", "device", "quiet", "backend", "log_every"}


def main(argv=None) -> dict:
    """The CLI: flags -> configs and data -> :func:`fit`; bad data or flags end in one ``error:`` line.

    Launched by torchrun (WORLD_SIZE, RANK, LOCAL_RANK set), it joins the process group first and
    leaves it at the end; rank 0 alone reads the run folder and writes it, and an error on any
    process ends every process, rank 0 printing it."""
    parser = build_parser()
    args = parser.parse_args(argv)
    ctx, joined = None, False
    try:
        check_device(args.device)
        if distributed.launched_by_torchrun() and not distributed.initialized():
            _, args.device = distributed.init(args.device)
            joined = True
        ctx = distributed.current()
        if args.resume:
            corpus, model_config, train_config, out, run_info, state = _resumed_run(args, parser, ctx)
        else:
            corpus, model_config, train_config, out, run_info, state = _new_run(args, ctx)
        with use_backend(args.backend):
            return fit(corpus, model_config, train_config, out, run_info, resume=state)
    except RunInterrupted as interrupted:
        if ctx is None or ctx.is_main:
            print(interrupted.message, file=sys.stderr)
        raise
    except (ValueError, FileNotFoundError) as error:
        if ctx is not None and not ctx.is_main:
            raise SystemExit(1) from error  # rank 0 says what went wrong
        raise SystemExit(f"error: {error}") from error
    finally:
        if joined:
            distributed.shutdown()


def _new_run(args: argparse.Namespace, ctx):
    """The data, configs and fresh output folder of a new run (the folder made by rank 0)."""
    seed = args.seed if args.seed is not None else TrainConfig.preset(args.dataset).seed

    def load():
        corpus = open_corpus(args.dataset, args.data, seed=seed, size=args.size, task=args.task,
                             synthetic=args.synthetic, announce=ctx is None or ctx.is_main)
        return (corpus, *configs_from_args(args, corpus), data_identity(corpus))

    corpus, model_config, train_config, identity = distributed.on_every_rank(ctx, load)
    if ctx is not None:
        identities = distributed.gather_objects(identity)
        other = next((rank for rank, found in enumerate(identities) if found != identities[0]), None)
        if other is not None:
            raise ValueError(f"rank {other} loaded other data than rank 0 (their fingerprints differ); "
                             "every process needs the same --data")

    def make_out() -> str:
        out = Path(args.out) if args.out else fresh_run_dir(Path("runs") / args.dataset)
        prepare_out(out, overwrite=args.overwrite)
        return str(out)

    out = Path(distributed.on_main(ctx, make_out))
    run_info = dict(dataset=args.dataset, data=corpus.source, size=args.size, task=args.task,
                    synthetic=args.synthetic, classes=list(corpus.classes), data_identity=identity)
    return corpus, model_config, train_config, out, run_info, None


def _resumed_run(args: argparse.Namespace, parser: argparse.ArgumentParser, ctx=None):
    """The configs, data and state of the run in ``--resume DIR``, refusing flags that would change it.
    Distributed: rank 0 reads the state and gives it to every process; each opens the data."""
    changed = [name for name, value in vars(args).items()
               if name not in _RESUME_FLAGS and value != parser.get_default(name)]
    if changed:
        flags = ", ".join("--" + name.replace("_", "-") for name in changed)
        raise ValueError(f"--resume continues a run with its own settings; drop {flags}")
    out = Path(args.resume)

    def read_state() -> dict:
        state = load_state(out)
        _check_world_size(state, 1 if ctx is None else ctx.world_size, out)
        return state

    state = distributed.on_main(ctx, read_state)
    run_info = state["run_info"]
    train_config = TrainConfig(**{**state["train_config"], "device": args.device, "progress": not args.quiet,
                                  "log_every": args.log_every})
    data = None if run_info["data"].startswith("synthetic") else run_info["data"]

    def load() -> Corpus:
        corpus = open_corpus(run_info["dataset"], data, seed=train_config.seed, size=run_info["size"],
                             task=run_info["task"], synthetic=run_info.get("synthetic", "redundant"),
                             announce=ctx is None or ctx.is_main)
        if data_identity(corpus) != run_info["data_identity"]:
            raise ValueError(f"--resume {out}: the data at {run_info['data']} changed since the run started")
        return corpus

    corpus = distributed.on_every_rank(ctx, load)
    return corpus, Ada2IConfig.from_dict(state["model_config"]), train_config, out, run_info, state


def console() -> None:
    """The ``ada2i-train`` script (a console script exits with what it returns)."""
    main()


if __name__ == "__main__":
    main()
