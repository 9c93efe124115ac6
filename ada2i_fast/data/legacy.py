"""Readers for the legacy pickle layouts of SPEC §1 (iemocap.pkl, meld.pkl, mosei_data.pkl).

Each file is one dict, field-major: ``data[field][dialogue_id]`` is a per-utterance list
(mosei labels: ``data["label"][task][dialogue_id]``). Files are read through
:func:`safe_load`, never ``pickle.load``.
"""

from __future__ import annotations

import random
from os import PathLike
from typing import Any, Mapping

import numpy as np

from ..modalities import LEGACY_FIELDS
from .corpus import Corpus, Split, dataset_classes
from .safe_pickle import safe_load

SPLIT_KEYS = {
    "iemocap": {"train": "trainVid", "test": "testVid"},
    "meld": {"train": "trainVid", "test": "testVid"},
    "mosei": {"train": "trainVid", "dev": "valVid", "test": "testVid"},
}
SPEAKER_FIELD = {"iemocap": "speaker", "meld": "speakers", "mosei": "speaker"}
IEMOCAP_SPEAKERS = {"M": 0, "F": 1}
DEV_FRACTION = 0.1


def load_legacy(path: str | PathLike, dataset: str, *, task: str = "7class", seed: int = 12) -> Corpus:
    """Read a legacy pickle and give it train/dev/test splits (:func:`add_dev_split`)."""
    return add_dev_split(read_legacy(path, dataset, task=task), seed)


def read_legacy(path: str | PathLike, dataset: str, *, task: str = "7class") -> Corpus:
    """The file's own splits, unchanged: train/test (iemocap, meld) or train/dev/test (mosei)."""
    classes = dataset_classes(dataset, task)
    with open(path, "rb") as f:
        data = safe_load(f)
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected a dict at the top level, got {type(data).__name__}")
    reader = _DialogueReader(data, dataset, task)
    splits = {}
    for split, key in SPLIT_KEYS[dataset].items():
        if key not in data:
            raise ValueError(f"{path}: missing key {key!r} (the {split} dialogue ids)")
        ids = _ordered_ids(data[key])
        splits[split] = Split.from_dialogues([str(i) for i in ids], [reader.read(split, i) for i in ids])
    return Corpus(dataset, classes, splits, source=str(path)).validate()


def _ordered_ids(ids) -> list:
    # Some files store the id lists as sets, whose order is arbitrary; the dev carve needs one.
    return sorted(ids, key=str) if isinstance(ids, (set, frozenset)) else list(ids)


def add_dev_split(corpus: Corpus, seed: int) -> Corpus:
    """SPEC §1: without a dev split, the first ``int(0.1 * n)`` training dialogues become dev.

    IEMOCAP shuffles the training ids first with ``random.Random(seed)`` (the public code's
    ``random.seed(seed); random.shuffle(ids)``); MELD keeps the file order.
    """
    if "dev" in corpus.splits:
        return corpus
    train = corpus.splits["train"]
    order = list(range(train.num_dialogues))
    if corpus.name == "iemocap":
        random.Random(seed).shuffle(order)
    n_dev = int(DEV_FRACTION * len(order))
    if n_dev == 0:
        raise ValueError(
            f"{corpus.source}: {len(order)} training dialogues are too few to carve a dev split "
            f"(the first int({DEV_FRACTION} * n) become dev)"
        )
    splits = {"train": train.take(order[n_dev:]), "dev": train.take(order[:n_dev]), "test": corpus.splits["test"]}
    return Corpus(corpus.name, corpus.classes, splits, corpus.source)


class _DialogueReader:
    """Turns one dialogue's per-utterance lists into arrays, naming dialogue and field on error."""

    def __init__(self, data: Mapping, dataset: str, task: str) -> None:
        self.data, self.dataset, self.task = data, dataset, task
        self.dims: dict[str, int] = {}

    def read(self, split: str, dialogue_id: Any) -> dict[str, np.ndarray]:
        where = f"split {split!r}, dialogue {str(dialogue_id)!r}"
        speaker_field = SPEAKER_FIELD[self.dataset]
        fields = (*LEGACY_FIELDS.values(), "label", speaker_field)
        raw = {field: self._get(where, field, dialogue_id) for field in fields}
        counts = {field: len(values) for field, values in raw.items()}
        if len(set(counts.values())) != 1:
            raise ValueError(f"{where}: ragged dialogue, utterance counts differ per field: {counts}")
        if counts["label"] == 0:
            raise ValueError(f"{where}, field 'label': empty dialogue")
        arrays = {m: self._features(where, field, raw[field]) for m, field in LEGACY_FIELDS.items()}
        arrays["labels"] = self._labels(where, raw["label"])
        arrays["speakers"] = self._speakers(where, speaker_field, raw[speaker_field])
        return arrays

    def _get(self, where: str, field: str, dialogue_id: Any):
        table = self.data.get(field)
        if field == "label" and self.dataset == "mosei":
            field = f"label[{self.task!r}]"
            table = table.get(self.task) if isinstance(table, Mapping) else None
        if not isinstance(table, Mapping):
            raise ValueError(f"{where}, field {field!r}: missing from the file")
        if dialogue_id not in table:
            raise ValueError(f"{where}, field {field!r}: missing for this dialogue")
        values = table[dialogue_id]
        if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
            raise ValueError(f"{where}, field {field!r}: expected a per-utterance list, got {type(values).__name__}")
        return values

    def _features(self, where: str, field: str, values) -> np.ndarray:
        try:
            x = np.asarray(values, dtype=np.float32)
        except (ValueError, TypeError):
            sizes = sorted({np.size(v) for v in values}) if isinstance(values, (list, tuple)) else "?"
            raise ValueError(f"{where}, field {field!r}: utterance vectors differ in size ({sizes})") from None
        if x.ndim != 2:
            raise ValueError(f"{where}, field {field!r}: expected a list of vectors, got shape {x.shape}")
        expected = self.dims.setdefault(field, x.shape[1])
        if x.shape[1] != expected:
            raise ValueError(f"{where}, field {field!r}: feature dim {x.shape[1]}, earlier dialogues have {expected}")
        return x

    @staticmethod
    def _labels(where: str, values) -> np.ndarray:
        try:
            y = np.asarray(values).reshape(len(values), -1)
        except ValueError:
            y = np.empty((0, 0))
        integral = y.dtype.kind in "iu" or (y.dtype.kind == "f" and np.array_equal(y, np.round(y)))
        if y.shape[1:] != (1,) or not integral:
            raise ValueError(f"{where}, field 'label': expected one integer label per utterance, got {values[:5]!r}")
        return y[:, 0].astype(np.int64)

    def _speakers(self, where: str, field: str, values) -> np.ndarray:
        if self.dataset == "mosei":
            # One speaker per video: the public code keeps only the list's length.
            return np.zeros(len(values), dtype=np.int64)
        if self.dataset == "iemocap":
            unknown = sorted({s for s in values if s not in IEMOCAP_SPEAKERS}, key=str)
            if unknown:
                raise ValueError(f"{where}, field {field!r}: speakers must be 'M' or 'F', got {unknown}")
            return np.array([IEMOCAP_SPEAKERS[s] for s in values], dtype=np.int64)
        s = np.asarray(values)
        if s.ndim != 1 or s.dtype.kind not in "iu" or (s < 0).any():
            raise ValueError(f"{where}, field {field!r}: speakers must be non-negative int ids, got {s[:5]!r}")
        return s.astype(np.int64)
