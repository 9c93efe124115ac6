"""One training run of the SPEC §4 recipe, in named phases a reader can follow top to bottom::

    trainer = Trainer(corpus, model_config, train_config, out, run_info)
    summary = trainer.run(resume=state)    # setup -> restore -> (run_epoch -> end_epoch -> save_state)* -> finish

``run_epoch`` trains one epoch (stopping early on SIGINT/SIGTERM, after a whole step), ``end_epoch``
evaluates dev, keeps the best state and logs the epoch, ``save_state`` writes ``last.pt`` and
``finish`` reports the test split of the best-dev state. In a torchrun process group every process
runs the same phases on its shard (``distributed.Context``); rank 0 alone prints and writes files.
"""

from __future__ import annotations

import contextlib
import itertools
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from ..atomic import write_json_atomic
from ..checkpointing.torch_file import load_weights
from ..config import Ada2IConfig, TrainConfig
from ..data import Corpus, num_batches, padding_waste
from ..data.batching import iterate_shards
from ..memory import shown_bytes
from ..devices import resolve_precision
from ..modules.model import Ada2I
from . import distributed
from .checkpoint import load_checkpoint, save_checkpoint
from .eval_loop import evaluate_split
from .metric_log import TRACED, MetricLog, epoch_record, read_history
from .plots import plot_training
from .run_folder import MODEL_FOLDER, run_files, size_of
from .run_state import RunState, save_state
from .step import ShardStep, make_optimizer, train_step
from .trace import StepTrace

def count_epochs(n: int) -> str:
    return f"{n} epoch{'s' if n != 1 else ''}"


class RunInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the run after a whole step; its state is saved. ``code`` is the
    exit status a command reports (128 + the signal)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message, self.code = message, code


class NonFiniteTraining(ValueError):
    """Too many consecutive steps had a non-finite loss or gradient."""


@dataclass
class EpochProgress:
    """Where an epoch stands: steps done, the running sums of the logged values, the traced steps,
    and the run of consecutive skipped (non-finite) steps, which carries over from epoch to epoch."""

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

    def check_streak(self, epoch: int, limit: int, out: Path) -> None:
        """Raise :class:`NonFiniteTraining` once ``limit`` consecutive steps were skipped."""
        longest = int(self.longest_streak)
        if longest >= limit:
            terms = self.means()["nonfinite_terms"]
            blamed = ", ".join(f"{name} in {count}" for name, count in terms.items() if count) or "the gradients only"
            saved = f"; the state after epoch {epoch - 1} is in {out / 'last.pt'}" if epoch > 1 else ""
            raise NonFiniteTraining(
                f"stopped in epoch {epoch}: {longest} consecutive steps up to step {int(self.last_skipped_step)} "
                f"had a non-finite loss or gradient norm and were skipped (non-finite loss terms: {blamed}){saved}"
            )


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

    @property
    def asked(self) -> bool:
        return self.signal is not None


def ablations(model_config: Ada2IConfig, train_config: TrainConfig) -> dict[str, bool]:
    """Which of the method's parts a run kept (the paper's ablations)."""
    return {
        "afw": model_config.mmt_nlayers > 0,
        "amw": model_config.mmcosine,
        "modulation": train_config.modulation,
        "grad_noise": train_config.modulation and train_config.grad_noise,
    }


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


class Trainer:
    """A training run (module docstring). ``on_epoch_end(record)`` runs on every process after each
    epoch's record is written (a study's pruner raises from it)."""

    def __init__(self, corpus: Corpus, model_config: Ada2IConfig, train_config: TrainConfig, out: Path,
                 run_info: dict, *, on_epoch_end: Callable[[dict], None] | None = None) -> None:
        self.corpus, self.model_config, self.out, self.run_info = corpus, model_config, out, run_info
        self.on_epoch_end = on_epoch_end
        self.context = distributed.current()
        self.device = torch.device(train_config.device)
        self.train_config = train_config.replace(precision=resolve_precision(train_config.precision, self.device))
        self.say = print if self.context.is_main else (lambda *args, **kwargs: None)

    def run(self, resume: RunState | None = None) -> dict:
        """Train until the last epoch or early stopping; returns the run's summary."""
        self.setup()
        if resume is not None:
            self.restore(resume)
        self.announce(resume)
        config = self.train_config
        self.log = MetricLog.of_run(self.out, self.model_config.modalities, self.corpus.classes, trace=config.trace,
                                    tensorboard=config.tensorboard, finished_epochs=len(self.history),
                                    main=self.context.is_main)
        with contextlib.closing(self.log):
            with StopRequest() as stop, self.whole_run_bar() as self.run_bar:
                while self.epoch <= config.epochs and self.epoch - self.best_epoch <= config.patience:
                    start = time.perf_counter()
                    if not self.run_epoch(stop):
                        self.save_state()
                        raise self.interrupted(stop.signal)
                    self.end_epoch(time.perf_counter() - start)
                    self.epoch, self.progress = self.epoch + 1, EpochProgress(streak=self.progress.streak)
                    self.save_state()
                if self.epoch <= config.epochs:
                    self.say(f"early stop after epoch {self.epoch - 1}: no better dev F1 for {config.patience} epochs")
            return self.finish()

    # --- the phases ----------------------------------------------------------------------------

    def setup(self) -> None:
        """The model (the same initial weights on every process), Adam, the plateau scheduler and the
        noise generator, all from the recipe's seed; nothing trained yet."""
        config = self.train_config
        torch.manual_seed(config.seed)
        self.model = Ada2I(self.model_config).to(self.device)
        self.context.share_parameters(self.model, config.seed)
        if config.compile:
            for encoder in self.model.encoders.values():
                encoder.compile()
        self.optimizer = make_optimizer(self.model, config)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(self.optimizer, mode="min")
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)  # the same noise on every rank
        self.best_f1, self.best_epoch, self.best_state, self.history = -1.0, 0, None, []
        self.epoch, self.progress = 1, EpochProgress()

    def restore(self, state: RunState) -> None:
        """Continue where ``state`` (the run's ``last.pt``) left off: weights, optimizer, scheduler,
        early stopping, the epoch in progress and every random state of this process. A state these
        do not accept is a ``ValueError`` naming ``last.pt``."""
        state.check_world_size(self.context.world_size, self.out)
        self.best_f1, self.best_epoch = state.best_f1, state.best_epoch
        self.best_state, self.history = self.context.on_main(lambda: self.read_run_files(state))
        try:
            load_weights(self.model, state.model, self.out / "last.pt")
            self.optimizer.load_state_dict(state.optimizer)
            self.scheduler.load_state_dict(state.scheduler)
            self.epoch, self.progress = state.epoch, EpochProgress(**state.progress)
            rng = state.rng[self.context.rank]  # last: nothing after it may draw
            torch.set_rng_state(rng["torch"])
            self.generator.set_state(rng["generator"])
            if self.device.type == "cuda":
                torch.cuda.set_rng_state(rng["cuda"], self.device)
        except (KeyError, TypeError, RuntimeError, IndexError) as error:
            raise ValueError(f"{self.out / 'last.pt'}: damaged run state, cannot resume from it "
                             f"({type(error).__name__}: {error})") from None

    def read_run_files(self, state: RunState) -> tuple[dict | None, list[dict]]:
        """The best-dev weights (``best.pt``, which must belong to this run) and the epoch records."""
        best = None
        if state.best_epoch:
            model, metadata = load_checkpoint(self.out / "best.pt")
            if metadata.get("run_id") != self.run_info.get("run_id"):
                raise ValueError(f"{self.out / 'best.pt'} belongs to another run than {self.out / 'last.pt'}; "
                                 "refusing to mix two runs")
            best = model.state_dict()
        return best, read_history(self.out, state.finished_epochs)

    def run_epoch(self, stop: StopRequest) -> bool:
        """Continue epoch ``self.epoch`` from ``self.progress.steps``; False when ``stop`` ended it
        early (after a whole step; in a process group every process stops after the same step)."""
        config, context = self.train_config, self.context
        train = self.corpus.splits["train"]
        shards = iterate_shards(train, self.model_config.modalities, config.batch_size, rank=context.rank,
                                world_size=context.world_size, **self.batch_order(self.epoch))
        bar = tqdm(batches_on_device(itertools.islice(shards, self.progress.steps, None), self.device),
                   initial=self.progress.steps, total=num_batches(train, config.batch_size), desc=f"epoch {self.epoch}",
                   leave=False, position=1, disable=not (config.progress and context.is_main))
        modulate, vote = config.modulates(self.epoch), context.stop_vote(lambda: stop.asked)
        for shard in bar:
            logs = train_step(self.model, shard.batch, self.optimizer, config, modulate=modulate,
                              generator=self.generator, hook=StepTrace() if config.trace else None,
                              shard=ShardStep(shard.share, stop=stop.asked, context=context))
            stopping = vote.push(logs.pop("stop_requested"))
            self.progress.add(logs, trace=config.trace)
            self.log.add_step((self.epoch - 1) * bar.total + self.progress.steps, logs)
            self.run_bar.update()
            if config.log_every and context.is_main and self.progress.steps % config.log_every == 0:
                bar.set_postfix(loss=f"{self.progress.means()['loss']:.4f}")
            if stopping:
                bar.close()
                return False
        return not vote.drain()

    def end_epoch(self, seconds: float) -> None:
        """Dev evaluation, the plateau scheduler, the best state (best.pt), and the epoch's record."""
        self.progress.check_streak(self.epoch, self.train_config.max_skipped_steps, self.out)
        dev = self.evaluate("dev")
        self.scheduler.step(dev.loss)
        state = self.model.state_dict()
        if dev.weighted_f1 > self.best_f1 and all(bool(torch.isfinite(v).all()) for v in state.values()
                                                  if v.is_floating_point()):
            self.best_f1, self.best_epoch = dev.weighted_f1, self.epoch
            self.best_state = {k: v.detach().cpu().clone() for k, v in state.items()}
            if self.context.is_main:
                save_checkpoint(self.out / "best.pt", self.model, epoch=self.epoch, dev_weighted_f1=self.best_f1,
                                train_config=self.train_config.to_dict(), **self.run_info)
        self.log_epoch(self.epoch_record(dev, seconds), dev)

    def save_state(self) -> None:
        """``last.pt``: everything :meth:`restore` needs (every process's random state, gathered)."""
        rng = {"torch": torch.get_rng_state(), "generator": self.generator.get_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        per_rank = self.context.gather(rng)
        if not self.context.is_main:
            return
        save_state(self.out / "last.pt", RunState(
            model_config=self.model_config.to_dict(), train_config=self.train_config.to_dict(),
            run_info=self.run_info, model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(), epoch=self.epoch, finished_epochs=len(self.history),
            progress=self.progress.state_dict(), best_f1=self.best_f1, best_epoch=self.best_epoch, rng=per_rank,
            world_size=self.context.world_size,
        ))

    def finish(self) -> dict:
        """The test report of the best-dev state; ``summary.json``, ``training.png`` and ``model/`` (with a
        copy of the corpus's featuriser, when it has one: the folder alone predicts on new conversations)."""
        from ..data.featuriser import FeaturiserError, corpus_featuriser

        if self.best_state is None:
            raise NonFiniteTraining("no epoch produced a finite model; nothing to report")
        self.model.load_state_dict(self.best_state)
        test, classes = self.evaluate("test"), self.corpus.classes
        self.say(f"\ntest (best dev epoch {self.best_epoch}): accuracy {test.accuracy:.4f} | "
                 f"weighted F1 {test.weighted_f1:.4f}")
        self.say(test.report(classes))
        self.log.add_test(test, self.best_epoch)
        summary = dict(
            self.run_info, config=self.model_config.to_dict(), train_config=self.train_config.to_dict(),
            best_epoch=self.best_epoch, best_dev_weighted_f1=self.best_f1, test=test.summary(classes),
            ablations=ablations(self.model_config, self.train_config), epochs_run=len(self.history),
            timing=dict(seconds=sum(r["seconds"] for r in self.history)),
            **({"world_size": self.context.world_size} if self.context.joined else {}),
        )
        out = self.out
        if self.context.is_main:
            try:
                featuriser = corpus_featuriser(self.corpus.source)
            except FeaturiserError:  # none (synthetic, legacy, older corpus): the pipeline says why when asked
                featuriser = None
            self.model.save_pretrained(out / MODEL_FOLDER, metadata=dict(
                self.run_info, epoch=self.best_epoch, dev_weighted_f1=self.best_f1,
                train_config=self.train_config.to_dict()), featuriser=featuriser)
            write_json_atomic(out / "summary.json", summary)
            plot_training(self.history, out / "training.png", title=f"Ada2I on {self.corpus.source}")
            if not self.train_config.keep_last:
                for name in ("best.pt", "last.pt"):
                    (out / name).unlink(missing_ok=True)
        self.say(f"wrote {out}: " + ", ".join(f"{p.name}{'/' if p.is_dir() else ''} ({shown_bytes(size_of(p))})"
                                              for p in run_files(out))
                 + ("" if self.train_config.keep_last else " (best.pt and last.pt removed: the run is over and model/ "
                    "holds its best-dev model; --keep-last keeps them to extend the run with --resume --epochs N)"))
        return summary

    # --- helpers of the phases -----------------------------------------------------------------

    def announce(self, resume: RunState | None) -> None:
        """The start line: where the run writes, how long it is at most, on what data and machine."""
        splits, context, config = self.corpus.splits, self.context, self.train_config
        processes = f" x {context.world_size} processes" if context.joined else ""
        # Without a better dev F1 after its best epoch (at least 1), a run stops patience epochs later.
        can_stop_early = max(self.best_epoch, 1) + config.patience < config.epochs
        early = f" (early stopping after {count_epochs(config.patience)} without a better dev F1 can end it sooner)"
        unmodulated = config.unmodulated_note()
        self.say(f"run {self.out}: {count_epochs(config.epochs)} x {num_batches(splits['train'], config.batch_size)} "
                 "steps at most" + (early if can_stop_early else "")
                 + (f", resuming epoch {self.epoch} at step {self.progress.steps}" if resume else "")
                 + (f" | {unmodulated}" if unmodulated else "")
                 + f" | data {self.corpus.source}: train {splits['train'].num_dialogues} dialogues, dev "
                 f"{splits['dev'].num_dialogues}, test {splits['test'].num_dialogues}, modalities "
                 f"{self.model_config.modalities} | device {self.device}{processes}, {config.precision}")

    def whole_run_bar(self) -> tqdm:
        """The steps of the whole run with its ETA, above the epoch's bar (to the last epoch: early
        stopping can end the run sooner)."""
        config, steps = self.train_config, num_batches(self.corpus.splits["train"], self.train_config.batch_size)
        return tqdm(total=config.epochs * steps, initial=(self.epoch - 1) * steps + self.progress.steps,
                    desc=f"run (<= {config.epochs} epochs)", unit="step", position=0,
                    disable=not (config.progress and self.context.is_main))

    def batch_order(self, epoch: int) -> dict:
        return dict(shuffle=True, seed=self.train_config.seed + epoch, bucket=self.train_config.bucket)

    def evaluate(self, split: str):
        return evaluate_split(self.model, self.corpus.splits[split], batch_size=self.train_config.batch_size,
                              device=self.device, context=self.context)

    def epoch_record(self, dev, seconds: float) -> dict:
        """The epoch's ``metrics.jsonl`` record (``metric_log.METRICS``): the means of its steps and its own values."""
        stats, train = self.progress.means(), self.corpus.splits["train"]
        return epoch_record(stats, dict(
            epoch=self.epoch,
            modulated=self.train_config.modulates(self.epoch),
            skipped_steps=stats["skipped_steps"],
            dev=dict(loss=dev.loss, accuracy=dev.accuracy, weighted_f1=dev.weighted_f1,
                     unimodal_weighted_f1=dev.unimodal_weighted_f1),
            lr=self.optimizer.param_groups[0]["lr"],
            padding_waste=padding_waste(train, self.train_config.batch_size, **self.batch_order(self.epoch)),
            seconds=seconds,
            utterances_per_second=train.num_utterances / seconds,
        ), self.model_config.modalities)

    def log_epoch(self, record: dict, dev) -> None:
        """The record (and the traced steps) in the metric log, the hook, one line."""
        self.history.append(record)
        self.log.add_epoch(record, dev, steps=self.progress.steps, traced=self.progress.trace)
        if self.on_epoch_end is not None:
            self.on_epoch_end(record)
        if self.context.is_main:
            skipped = record["skipped_steps"]
            tqdm.write(
                f"epoch {self.epoch:3d} | loss {record['train']['loss']:.4f} | dev loss {record['dev']['loss']:.4f} "
                f"f1 {record['dev']['weighted_f1']:.4f} acc {record['dev']['accuracy']:.4f} | rho "
                + " ".join(f"{m}={r:.3f}" for m, r in record["ratio"].items())
                + f" | {record['utterances_per_second']:.0f} utt/s"
                + (f" | {skipped} steps skipped (non-finite)" if skipped else "")
                + (" *" if self.best_epoch == self.epoch else "")
            )

    def interrupted(self, signum: int | None) -> RunInterrupted:
        """The stop of every process of a run, after the same step (the signal may have reached another
        process only: then this one reports SIGTERM, the signal torchrun forwards)."""
        name = signal.Signals(signum).name if signum else "a signal to another process"
        command = f"python -m ada2i_fast.train --resume {self.out}"
        if self.context.joined:
            command = (f"torchrun <the same launch: {self.context.world_size} processes> -m ada2i_fast.train "
                       f"--resume {self.out}")
        return RunInterrupted(
            f"{name}: stopped in epoch {self.epoch} after step {self.progress.steps}; saved {self.out / 'last.pt'}. "
            f"Resume with: {command}",
            code=128 + (signum or signal.SIGTERM),
        )

