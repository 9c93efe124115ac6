"""The metric log of a training run: one table (:data:`METRICS`) of what a run records per step and
per epoch and each value's name in the log's three sinks, written by the main process only:

- ``metrics.jsonl``: one strict-JSON record per finished epoch, the run's record;
- ``steps.jsonl`` (``--trace``): one line per step with its balance values and gradient and update norms;
- TensorBoard event files in ``OUT/tensorboard`` (``--tensorboard``; a sweep's trials each write
  their own), beside metrics.jsonl.

TensorBoard, per step (x: the step of the whole run): ``train/loss_per_step`` and each modality's
``rho/<m>`` and ``k/<m>`` (the coefficient the step computes; it is applied from the recipe's
modulation epoch on). Per epoch: train and dev loss, dev accuracy and weighted F1, each modality's
own dev weighted F1 (``dev/unimodal_weighted_f1/<m>``), the learning rate, throughput
(``throughput/utterances_per_second``, ``throughput/seconds_per_step``) and the dev confusion matrix
as an image, each at x = the epoch. At the end, the test scores (``test/weighted_f1``,
``test/accuracy``) and confusion matrix of the best-dev model, at x = the run's last epoch (where the
run ended, as the per-epoch scalars count; the best epoch is in the image's title and in
``summary.json``). Step values are kept on the device and read once per epoch, so logging adds no
synchronisation inside an epoch.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from ..atomic import atomic_open, strict_json
from .plots import confusion_figure
from .run_folder import METRICS_FILE, STEPS_FILE, TENSORBOARD_FOLDER, read_records


@dataclass(frozen=True)
class Metric:
    """One logged value and its name in each place.

    ``step``: its key in ``train_step``'s logs (None: a value of the whole epoch); ``record``: its
    path in a ``metrics.jsonl`` record; ``steps``: whether a ``steps.jsonl`` line holds it (under
    ``record``'s last name); ``tensorboard_step`` / ``tensorboard_epoch``: its TensorBoard tag per
    step / per epoch; ``per_modality``: one value per modality (``{m: value}`` in the files,
    ``tag/<m>`` in TensorBoard); ``traced``: measured only with ``--trace``."""

    step: str | None
    record: tuple[str, ...]
    steps: bool = False
    tensorboard_step: str | None = None
    tensorboard_epoch: str | None = None
    per_modality: bool = False
    traced: bool = False


# In the order of a metrics.jsonl record's keys.
METRICS = (
    Metric(None, ("epoch",)),
    Metric("loss", ("train", "loss"), tensorboard_step="train/loss_per_step", tensorboard_epoch="train/loss"),
    Metric("classification", ("train", "classification")),
    Metric("feature", ("train", "feature")),
    Metric("unimodal_loss", ("unimodal_loss",), per_modality=True),
    Metric("unimodal_score", ("unimodal_score",), steps=True, per_modality=True),
    Metric("ratios", ("ratio",), steps=True, tensorboard_step="rho", per_modality=True),
    Metric("coefficients", ("coefficient",), steps=True, tensorboard_step="k", per_modality=True),
    Metric("grad_norm_before", ("grad_norm_before",), steps=True, per_modality=True, traced=True),
    Metric("grad_norm_after", ("grad_norm_after",), steps=True, per_modality=True, traced=True),
    Metric("update_norm", ("update_norm",), steps=True, per_modality=True, traced=True),
    Metric(None, ("modulated",)),
    Metric(None, ("skipped_steps",)),
    Metric(None, ("dev", "loss"), tensorboard_epoch="dev/loss"),
    Metric(None, ("dev", "accuracy"), tensorboard_epoch="dev/accuracy"),
    Metric(None, ("dev", "weighted_f1"), tensorboard_epoch="dev/weighted_f1"),
    Metric(None, ("dev", "unimodal_weighted_f1"), tensorboard_epoch="dev/unimodal_weighted_f1", per_modality=True),
    Metric(None, ("lr",), tensorboard_epoch="lr"),
    Metric(None, ("padding_waste",)),
    Metric(None, ("seconds",)),
    Metric(None, ("utterances_per_second",), tensorboard_epoch="throughput/utterances_per_second"),
)
# What a traced step keeps for steps.jsonl: whether it was skipped, then the per-modality values.
TRACED = ("skipped", *(metric.step for metric in METRICS if metric.steps))


def epoch_record(means: dict, epoch_values: dict, modalities: str) -> dict:
    """A ``metrics.jsonl`` record: each step value's mean over the epoch from ``means`` (per
    modality a list in ``modalities`` order; the traced ones only when present) and the epoch's own
    values from ``epoch_values``, keyed by their record path's last name (a dev value by ``dev``'s
    dict)."""
    record: dict = {}
    for metric in METRICS:
        *parents, name = metric.record
        if metric.step is not None:
            if metric.step not in means:
                continue
            value = dict(zip(modalities, means[metric.step])) if metric.per_modality else means[metric.step]
        else:
            value = (epoch_values[parents[0]] if parents else epoch_values)[name]
        target = record
        for parent in parents:
            target = target.setdefault(parent, {})
        target[name] = value
    return record


def read_history(run_dir: Path, epochs: int) -> list[dict]:
    """The records of epochs 1..``epochs``, by their epoch numbers, rewriting ``metrics.jsonl`` (and
    ``steps.jsonl``) without any later epoch (a run stopped between writing an epoch's lines and
    its state leaves some); a damaged line or a missing epoch is an error naming the file."""
    path = run_dir / METRICS_FILE
    by_epoch = {r["epoch"]: r for r in read_records(path) if r["epoch"] <= epochs}
    missing = [epoch for epoch in range(1, epochs + 1) if epoch not in by_epoch]
    if missing:
        raise ValueError(f"{path}: no line for epoch {missing[0]} although the saved state has {epochs} epoch(s)")
    history = [by_epoch[epoch] for epoch in range(1, epochs + 1)]
    _rewrite(path, history)
    steps = run_dir / STEPS_FILE
    if steps.exists():
        _rewrite(steps, [row for row in read_records(steps) if row["epoch"] <= epochs])
    return history


def _rewrite(path: Path, records: list[dict]) -> None:
    with atomic_open(path) as handle:
        handle.write("".join(strict_json(record) + "\n" for record in records).encode())


class Sink:
    """Where the metric log writes; each method does nothing unless a sink writes that."""

    def add_step(self, step: int, logs: dict) -> None:
        """A step's logs (device tensors; ``step``: the step of the whole run)."""

    def add_epoch(self, record: dict, dev, *, steps: int, traced: list[dict]) -> None:
        """The epoch's ``record`` (:func:`epoch_record`), its dev evaluation, the number of steps its
        ``record["seconds"]`` timed and its traced steps (empty without ``--trace``)."""

    def add_test(self, test, best_epoch: int) -> None:
        """The test evaluation of the best-dev model (of ``best_epoch``)."""

    def close(self) -> None:
        pass


class MetricsFile(Sink):
    """``metrics.jsonl``, appended one record per epoch."""

    def __init__(self, out: Path) -> None:
        self.file = open(out / METRICS_FILE, "a")

    def add_epoch(self, record: dict, dev, *, steps: int, traced: list[dict]) -> None:
        self.file.write(strict_json(record) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class StepsFile(Sink):
    """``steps.jsonl`` (``--trace``): the epoch's traced steps, appended at its end."""

    def __init__(self, out: Path, modalities: str) -> None:
        self.path, self.modalities = out / STEPS_FILE, modalities

    def add_epoch(self, record: dict, dev, *, steps: int, traced: list[dict]) -> None:
        names = {metric.step: metric.record[-1] for metric in METRICS if metric.steps}
        rows = [{k: v.tolist() for k, v in step.items()} for step in traced]
        lines = [
            strict_json(dict(epoch=record["epoch"], step=n, skipped=row.pop("skipped"),
                             **{names[k]: dict(zip(self.modalities, v)) for k, v in row.items()}))
            for n, row in enumerate(rows, 1)
        ]
        with open(self.path, "a") as handle:
            handle.write("".join(line + "\n" for line in lines))


class TensorBoardLog(Sink):
    """The TensorBoard event files (module docstring)."""

    def __init__(self, out: Path, modalities: str, classes: tuple[str, ...], *, epoch: int = 0) -> None:
        """``epoch``: the epochs the run has finished already (a resumed run's)."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ValueError('--tensorboard needs the tensorboard package: pip install "ada2i-fast[tensorboard]"') from None
        _quiet_writer_threads()
        try:
            self.writer = SummaryWriter(str(out / TENSORBOARD_FOLDER))
        except OSError as error:
            raise OSError(error.errno, f"--tensorboard: cannot write into {out / TENSORBOARD_FOLDER} "
                          f"({error.strerror or error})") from None
        self.modalities, self.classes, self.epoch = modalities, classes, epoch
        self.per_step = [metric for metric in METRICS if metric.tensorboard_step]
        self.steps: list[tuple[int, list[torch.Tensor]]] = []  # (run step, the per_step values)

    def add_step(self, step: int, logs: dict) -> None:
        self.steps.append((step, [logs[metric.step].detach() for metric in self.per_step]))

    def add_epoch(self, record: dict, dev, *, steps: int, traced: list[dict]) -> None:
        self._write_steps()
        epoch = self.epoch = record["epoch"]
        for metric in METRICS:
            if metric.tensorboard_epoch:
                value = record
                for name in metric.record:
                    value = value[name]
                self._add(metric, value, epoch)
        if steps:
            self.writer.add_scalar("throughput/seconds_per_step", record["seconds"] / steps, epoch)
        self.writer.add_figure("dev/confusion_matrix", self._confusion(dev, f"dev, epoch {epoch}"), epoch)
        self.writer.flush()

    def add_test(self, test, best_epoch: int) -> None:
        """The test scores of the best-dev model (of ``best_epoch``), at the run's last epoch."""
        self.writer.add_scalar("test/weighted_f1", test.weighted_f1, self.epoch)
        self.writer.add_scalar("test/accuracy", test.accuracy, self.epoch)
        self.writer.add_figure("test/confusion_matrix", self._confusion(
            test, f"test, the best dev epoch's model (epoch {best_epoch} of {self.epoch})"), self.epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()

    def _add(self, metric: Metric, value, x: int, tag: str | None = None) -> None:
        tag = tag or metric.tensorboard_epoch
        if metric.per_modality:
            for modality, value_m in value.items():
                self.writer.add_scalar(f"{tag}/{modality}", value_m, x)
        else:
            self.writer.add_scalar(tag, value, x)

    def _write_steps(self) -> None:
        if not self.steps:
            return
        steps, values = zip(*self.steps)
        columns = [torch.stack(column).float().cpu().tolist() for column in zip(*values)]
        for n, step in enumerate(steps):
            for metric, column in zip(self.per_step, columns):
                value = dict(zip(self.modalities, column[n])) if metric.per_modality else column[n]
                self._add(metric, value, step, metric.tensorboard_step)
        self.steps = []

    def _confusion(self, evaluation, title: str):
        from sklearn.metrics import confusion_matrix

        matrix = confusion_matrix(evaluation.labels, evaluation.predictions, labels=list(range(len(self.classes))))
        return confusion_figure(matrix, self.classes, title=title)


def _quiet_writer_threads() -> None:
    """Leave out the traceback of TensorBoard's event-writer thread: a write it fails (an unwritable
    folder, a full disk) is kept and raised again by the writer's next call in the main thread,
    which ends the run in one error line."""
    from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread

    shown = threading.excepthook
    if getattr(shown, "leaves_out_event_writers", False):
        return

    def excepthook(args) -> None:
        if not isinstance(args.thread, _AsyncWriterThread):
            shown(args)

    excepthook.leaves_out_event_writers = True
    threading.excepthook = excepthook


class MetricLog:
    """A run's metric log: its sinks (none on a process other than the main one) fed together."""

    def __init__(self, sinks: list[Sink]) -> None:
        self.sinks = sinks

    @classmethod
    def of_run(cls, out: Path, modalities: str, classes: tuple[str, ...], *, trace: bool, tensorboard: bool,
               finished_epochs: int, main: bool) -> "MetricLog":
        """metrics.jsonl, plus steps.jsonl with ``trace`` and TensorBoard with ``tensorboard``, on the main process."""
        if not main:
            return cls([])
        sinks: list[Sink] = []
        try:
            if tensorboard:
                sinks.append(TensorBoardLog(out, modalities, classes, epoch=finished_epochs))
            sinks.append(MetricsFile(out))
            if trace:
                sinks.append(StepsFile(out, modalities))
        except BaseException:
            cls(sinks).close()
            raise
        return cls(sinks)

    def add_step(self, step: int, logs: dict) -> None:
        for sink in self.sinks:
            sink.add_step(step, logs)

    def add_epoch(self, record: dict, dev, *, steps: int, traced: list[dict]) -> None:
        for sink in self.sinks:
            sink.add_epoch(record, dev, steps=steps, traced=traced)

    def add_test(self, test, best_epoch: int) -> None:
        for sink in self.sinks:
            sink.add_test(test, best_epoch)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
