"""``--tensorboard``: a run's curves as TensorBoard event files in ``OUT/tensorboard`` (the main process
only; a sweep's trials each write their own), beside metrics.jsonl, which stays the record.

Per step (x: the step of the whole run): ``train/loss_per_step`` and each modality's ``rho/<m>`` and
``k/<m>`` (the coefficient the step computes; it is applied from the recipe's modulation epoch on).
Per epoch: train and dev loss, dev accuracy and weighted F1, each modality's own dev weighted F1
(``dev/unimodal_weighted_f1/<m>``), the learning rate, throughput (``throughput/utterances_per_second``,
``throughput/seconds_per_step``) and the dev confusion matrix as an image, each at x = the epoch. At
the end, the test scores (``test/weighted_f1``, ``test/accuracy``) and confusion matrix of the best-dev
model, at x = the run's last epoch (where the run ended, as the per-epoch scalars count; the best
epoch is in the image's title and in ``summary.json``). Step values are kept on the device and read
once per epoch, so logging adds no synchronisation inside an epoch.
"""

from __future__ import annotations

import threading
from pathlib import Path

import torch

from .plots import confusion_figure

FOLDER = "tensorboard"


class TensorBoardLog:
    def __init__(self, out: Path, modalities: str, classes: tuple[str, ...], *, epoch: int = 0) -> None:
        """``epoch``: the epochs the run has finished already (a resumed run's)."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ValueError('--tensorboard needs the tensorboard package: pip install "ada2i-fast[tensorboard]"') from None
        _quiet_writer_threads()
        try:
            self.writer = SummaryWriter(str(out / FOLDER))
        except OSError as error:
            raise OSError(error.errno, f"--tensorboard: cannot write into {out / FOLDER} "
                          f"({error.strerror or error})") from None
        self.modalities, self.classes, self.epoch = modalities, classes, epoch
        self.steps: list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (run step, loss, rho, k)

    def add_step(self, step: int, logs: dict) -> None:
        self.steps.append((step, logs["loss"].detach(), logs["ratios"].detach(), logs["coefficients"].detach()))

    def add_epoch(self, record: dict, dev, *, steps: int) -> None:
        """The epoch's steps and its record (``Trainer.epoch_record``); ``dev`` is its dev evaluation,
        ``steps`` the steps its ``record["seconds"]`` timed."""
        self._write_steps()
        epoch, add = record["epoch"], self.writer.add_scalar
        self.epoch = epoch
        add("train/loss", record["train"]["loss"], epoch)
        add("dev/loss", record["dev"]["loss"], epoch)
        add("dev/accuracy", record["dev"]["accuracy"], epoch)
        add("dev/weighted_f1", record["dev"]["weighted_f1"], epoch)
        for modality, f1 in record["dev"]["unimodal_weighted_f1"].items():
            add(f"dev/unimodal_weighted_f1/{modality}", f1, epoch)
        add("lr", record["lr"], epoch)
        add("throughput/utterances_per_second", record["utterances_per_second"], epoch)
        if steps:
            add("throughput/seconds_per_step", record["seconds"] / steps, epoch)
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

    def _write_steps(self) -> None:
        if not self.steps:
            return
        steps, *values = zip(*self.steps)
        losses, ratios, coefficients = (torch.stack(v).float().cpu().tolist() for v in values)
        for step, loss, rho, k in zip(steps, losses, ratios, coefficients):
            self.writer.add_scalar("train/loss_per_step", loss, step)
            for modality, rho_m, k_m in zip(self.modalities, rho, k):
                self.writer.add_scalar(f"rho/{modality}", rho_m, step)
                self.writer.add_scalar(f"k/{modality}", k_m, step)
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
