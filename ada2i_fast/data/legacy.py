"""Readers for the legacy pickle layouts of SPEC §1 (iemocap.pkl, meld.pkl, mosei_data.pkl).

Each file is one dict, field-major: ``data[field][dialogue_id]`` is a per-utterance list
(mosei labels: ``data["label"][task][dialogue_id]``). Files are read through
:func:`safe_load_file` (bounded, restricted), never ``pickle.load``, and nothing in them is
trusted: ids, labels, speakers and features are type-checked before they are hashed, printed
or converted, and every problem is a :class:`LegacyDataError` naming file, split, dialogue and
field.
"""

from __future__ import annotations

import random
import reprlib
from os import PathLike
from typing import Any, Mapping

import numpy as np

from ..modalities import LEGACY_FIELDS
from ..datasets import dataset_spec
from .corpus import Corpus, Split
from .safe_pickle import safe_load_file

SPLIT_KEYS = {
    "iemocap": {"train": "trainVid", "test": "testVid"},
    "meld": {"train": "trainVid", "test": "testVid"},
    "mosei": {"train": "trainVid", "dev": "valVid", "test": "testVid"},
}
SPEAKER_FIELD = {"iemocap": "speaker", "meld": "speakers", "mosei": "speaker"}
IEMOCAP_SPEAKERS = {"M": 0, "F": 1}
DEV_FRACTION = 0.1

# Sanity bounds, far above the corpora of SPEC §1 (at most ~2,250 dialogues per split, dialogues
# of at most ~110 utterances, vectors 300..1024 wide) and far below what exhausts a machine.
MAX_DIALOGUES_PER_SPLIT = 100_000
MAX_UTTERANCES_PER_DIALOGUE = 10_000
MAX_FEATURE_DIM = 65_536
MAX_ID_CHARS = 256
MAX_INT_ID = 2**63

_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxtuple, _SHORT.maxstring, _SHORT.maxother = 2, 5, 5, 40, 40


class LegacyDataError(ValueError):
    """A legacy pickle does not hold a valid corpus; the message names file, split, dialogue and field."""


def load_legacy(path: str | PathLike, dataset: str, *, task: str = "7class", seed: int = 12) -> Corpus:
    """Read a legacy pickle and give it train/dev/test splits (:func:`add_dev_split`)."""
    return add_dev_split(read_legacy(path, dataset, task=task), seed)


def read_legacy(path: str | PathLike, dataset: str, *, task: str = "7class") -> Corpus:
    """The file's own splits, unchanged: train/test (iemocap, meld) or train/dev/test (mosei).

    Dialogue ids (strings, or ints turned into strings) must be unique within and across splits.
    """
    classes = dataset_spec(dataset).class_names(task)
    data = safe_load_file(path)
    try:
        return _read_corpus(data, dataset, task, classes, str(path))
    except ValueError as error:
        raise LegacyDataError(f"{path}: {error}") from None


def _read_corpus(data, dataset: str, task: str, classes: tuple[str, ...], source: str) -> Corpus:
    if not isinstance(data, Mapping):
        raise ValueError(f"expected a dict at the top level, got {type(data).__name__}")
    ids = {split: _dialogue_ids(data, key, split) for split, key in SPLIT_KEYS[dataset].items()}
    _check_disjoint(ids, SPLIT_KEYS[dataset])
    reader = _DialogueReader(data, dataset, task)
    splits = {
        split: Split.from_dialogues([name for _, name in pairs], [reader.read(split, *pair) for pair in pairs])
        for split, pairs in ids.items()
    }
    return Corpus(dataset, classes, splits, source=source).validate()


def _dialogue_ids(data: Mapping, key: str, split: str) -> list[tuple[Any, str]]:
    """(id as the file's tables key it, id as a string) per dialogue, in file order.

    Sets of ids are sorted by name: their order is arbitrary and the dev carve needs one.
    """
    if key not in data:
        raise ValueError(f"missing key {key!r} (the {split} dialogue ids)")
    raw = data[key]
    where = f"split {split!r}, key {key!r}"
    if isinstance(raw, np.ndarray) and raw.ndim == 1 and raw.dtype.kind in "iuU":
        raw = raw.tolist()
    if not isinstance(raw, (list, tuple, set, frozenset)):
        raise ValueError(f"{where}: expected a list of dialogue ids, got {type(raw).__name__}")
    if not 0 < len(raw) <= MAX_DIALOGUES_PER_SPLIT:
        raise ValueError(f"{where}: {len(raw)} dialogue ids; expected 1 to {MAX_DIALOGUES_PER_SPLIT}")
    pairs = [(i, _id_name(where, n, i)) for n, i in enumerate(raw)]
    if isinstance(raw, (set, frozenset)):
        pairs.sort(key=lambda pair: pair[1])
    seen: set[str] = set()
    for _, name in pairs:
        if name in seen:
            raise ValueError(f"{where}: dialogue id {name!r} appears twice")
        seen.add(name)
    return pairs


def _id_name(where: str, n: int, dialogue_id) -> str:
    # Checked before anything hashes or prints the id: a hostile one may be a huge shared structure.
    if isinstance(dialogue_id, str):
        if len(dialogue_id) > MAX_ID_CHARS:
            raise ValueError(
                f"{where}: dialogue id #{n} is {len(dialogue_id)} characters long (at most {MAX_ID_CHARS})"
            )
        return str(dialogue_id)
    if isinstance(dialogue_id, (int, np.integer)) and not isinstance(dialogue_id, (bool, np.bool_)):
        if not -MAX_INT_ID < dialogue_id < MAX_INT_ID:
            raise ValueError(f"{where}: dialogue id #{n} is an int outside the 64-bit range")
        return str(int(dialogue_id))
    raise ValueError(f"{where}: dialogue id #{n} is a {type(dialogue_id).__name__}; ids must be strings or ints")


def _check_disjoint(ids: dict[str, list[tuple[Any, str]]], keys: dict[str, str]) -> None:
    first: dict[str, str] = {}
    for split, pairs in ids.items():
        for _, name in pairs:
            other = first.setdefault(name, split)
            if other != split:
                raise ValueError(
                    f"dialogue id {name!r} is in split {other!r} ({keys[other]}) and split {split!r} ({keys[split]}): "
                    "the same dialogue in two splits leaks between training and evaluation"
                )


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

    def read(self, split: str, dialogue_id: Any, name: str) -> dict[str, np.ndarray]:
        where = f"split {split!r}, dialogue {name!r}"
        try:
            return self._read(where, dialogue_id)
        except (TypeError, AttributeError, KeyError, IndexError, OverflowError, RecursionError) as error:
            raise ValueError(f"{where}: malformed data ({type(error).__name__}: {_SHORT.repr(str(error))})") from None

    def _read(self, where: str, dialogue_id: Any) -> dict[str, np.ndarray]:
        speaker_field = SPEAKER_FIELD[self.dataset]
        fields = (*LEGACY_FIELDS.values(), "label", speaker_field)
        raw = {field: self._get(where, field, dialogue_id) for field in fields}
        counts = {field: len(values) for field, values in raw.items()}
        if len(set(counts.values())) != 1:
            raise ValueError(f"{where}: ragged dialogue, utterance counts differ per field: {counts}")
        if counts["label"] == 0:
            raise ValueError(f"{where}, field 'label': empty dialogue")
        if counts["label"] > MAX_UTTERANCES_PER_DIALOGUE:
            raise ValueError(f"{where}: {counts['label']} utterances (at most {MAX_UTTERANCES_PER_DIALOGUE})")
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
        if not isinstance(values, (list, tuple, np.ndarray)) or getattr(values, "ndim", 1) == 0:
            raise ValueError(f"{where}, field {field!r}: expected a per-utterance list, got {type(values).__name__}")
        return values

    def _features(self, where: str, field: str, values) -> np.ndarray:
        try:
            x = np.asarray(values)
        except (ValueError, TypeError):
            sizes = sorted({len(v) if hasattr(v, "__len__") else 1 for v in values}) if type(values) is list else "?"
            raise ValueError(f"{where}, field {field!r}: utterance vectors differ in size ({sizes})") from None
        if x.dtype.kind not in "iuf":
            raise ValueError(f"{where}, field {field!r}: features must be numbers, got {_kind_name(x)}")
        if x.ndim != 2 or not 0 < x.shape[1] <= MAX_FEATURE_DIM:
            raise ValueError(
                f"{where}, field {field!r}: expected a list of vectors of 1 to {MAX_FEATURE_DIM} numbers, "
                f"got shape {x.shape}"
            )
        expected = self.dims.setdefault(field, x.shape[1])
        if x.shape[1] != expected:
            raise ValueError(f"{where}, field {field!r}: feature dim {x.shape[1]}, earlier dialogues have {expected}")
        return x.astype(np.float32, copy=False)

    @staticmethod
    def _labels(where: str, values) -> np.ndarray:
        _refuse_bools(where, "label", values)
        try:
            y = np.asarray(values).reshape(len(values), -1)
        except (ValueError, TypeError):
            y = np.empty((0, 0))
        integral = y.dtype.kind in "iu" or (
            y.dtype.kind == "f" and np.isfinite(y).all() and np.array_equal(y, np.round(y))
        )
        if y.shape[1:] != (1,) or not integral:
            raise ValueError(
                f"{where}, field 'label': expected one integer label per utterance, got {_SHORT.repr(values)}"
            )
        return y[:, 0].astype(np.int64)

    def _speakers(self, where: str, field: str, values) -> np.ndarray:
        if self.dataset == "mosei":
            # One speaker per video: the public code keeps only the list's length.
            return np.zeros(len(values), dtype=np.int64)
        if self.dataset == "iemocap":
            unknown = [s for s in values if not (isinstance(s, str) and s in IEMOCAP_SPEAKERS)]
            if unknown:
                shown = sorted({_SHORT.repr(s) for s in unknown})
                raise ValueError(f"{where}, field {field!r}: speakers must be 'M' or 'F', got [{', '.join(shown)}]")
            return np.array([IEMOCAP_SPEAKERS[s] for s in values], dtype=np.int64)
        _refuse_bools(where, field, values)
        s = np.asarray(values)
        if s.ndim != 1 or s.dtype.kind not in "iu" or (s < 0).any():
            raise ValueError(
                f"{where}, field {field!r}: speakers must be non-negative int ids, got {_SHORT.repr(values)}"
            )
        return s.astype(np.int64)


def _refuse_bools(where: str, field: str, values) -> None:
    # numpy would read [True, 2] as the ints [1, 2]; a bool is never a class or speaker id.
    if isinstance(values, np.ndarray):
        bools = values.dtype.kind == "b"
    else:
        bools = any(isinstance(v, (bool, np.bool_)) for v in values)
    if bools:
        raise ValueError(f"{where}, field {field!r}: expected ints, got booleans ({_SHORT.repr(values)})")


def _kind_name(x: np.ndarray) -> str:
    names = {"b": "booleans", "U": "strings", "S": "byte strings", "O": "Python objects", "c": "complex numbers"}
    return f"{names.get(x.dtype.kind, x.dtype)} ({_SHORT.repr(x.ravel()[:3].tolist())})"
