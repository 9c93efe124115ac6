"""The in-memory corpus: per split, columnar arrays of utterances plus dialogue offsets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from ..modalities import in_order


def dialogue_rows(offsets: np.ndarray, dialogues: np.ndarray) -> np.ndarray:
    """Row indices of the given dialogues' utterances, dialogue after dialogue."""
    dialogues = np.asarray(dialogues, dtype=np.int64)
    starts = offsets[dialogues]
    lengths = offsets[dialogues + 1] - starts
    ends = np.cumsum(lengths)
    return np.repeat(starts - (ends - lengths), lengths) + np.arange(ends[-1] if len(ends) else 0)


@dataclass(frozen=True, eq=False)
class Split:
    """One split, columnar: dialogue ``d`` is rows ``offsets[d]:offsets[d+1]`` of every array.

    ``features`` maps a modality letter to an [N, d] float32 array (possibly a read-only memmap).
    """

    features: dict[str, np.ndarray]
    labels: np.ndarray
    speakers: np.ndarray
    offsets: np.ndarray
    dialogue_ids: tuple[str, ...]

    @classmethod
    def from_dialogues(cls, dialogue_ids: Sequence[str], dialogues: Sequence[Mapping[str, np.ndarray]]) -> "Split":
        """Concatenate per-dialogue arrays (keys: modality letters, "labels", "speakers")."""
        if not dialogues:
            raise ValueError("a split needs at least one dialogue")
        lengths = [len(d["labels"]) for d in dialogues]
        modalities = [k for k in dialogues[0] if k not in ("labels", "speakers")]
        return cls(
            features={m: np.concatenate([d[m] for d in dialogues]).astype(np.float32, copy=False) for m in modalities},
            labels=np.concatenate([d["labels"] for d in dialogues]).astype(np.int64, copy=False),
            speakers=np.concatenate([d["speakers"] for d in dialogues]).astype(np.int64, copy=False),
            offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            dialogue_ids=tuple(dialogue_ids),
        )

    @property
    def num_dialogues(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_utterances(self) -> int:
        return int(self.offsets[-1])

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def take(self, dialogues: Sequence[int]) -> "Split":
        """The sub-split of the given dialogue indices, in that order (a view when they are a range)."""
        idx = np.asarray(dialogues, dtype=np.int64)
        if len(idx) and np.array_equal(idx, np.arange(idx[0], idx[0] + len(idx))):
            rows = slice(int(self.offsets[idx[0]]), int(self.offsets[idx[-1] + 1]))
        else:
            rows = dialogue_rows(self.offsets, idx)
        lengths = self.lengths[idx]
        return Split(
            features={m: x[rows] for m, x in self.features.items()},
            labels=self.labels[rows],
            speakers=self.speakers[rows],
            offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            dialogue_ids=tuple(self.dialogue_ids[i] for i in idx),
        )

    def validate(self, name: str, num_classes: int) -> None:
        """Raise ValueError naming the split, the dialogue and the field of the first problem found."""
        offsets = self.offsets
        if offsets.ndim != 1 or len(offsets) < 2 or offsets[0] != 0:
            raise ValueError(f"split {name!r}, field 'offsets': must be 1-D, start at 0 and hold >= 1 dialogue")
        if len(self.dialogue_ids) != self.num_dialogues:
            raise ValueError(
                f"split {name!r}, field 'dialogue_ids': {len(self.dialogue_ids)} ids "
                f"for {self.num_dialogues} dialogues"
            )
        lengths = self.lengths
        if (lengths < 1).any():
            d = int(np.flatnonzero(lengths < 1)[0])
            raise ValueError(f"split {name!r}, dialogue {self.dialogue_ids[d]!r}: empty dialogue (length {lengths[d]})")
        n = self.num_utterances
        columns = {"labels": self.labels, "speakers": self.speakers, **self.features}
        for field, x in columns.items():
            want_ndim = 1 if field in ("labels", "speakers") else 2
            if x.ndim != want_ndim:
                raise ValueError(f"split {name!r}, field {field!r}: expected {want_ndim}-D, got shape {x.shape}")
            if len(x) != n:
                d = self._dialogue_of(min(len(x), n))
                raise ValueError(
                    f"split {name!r}, dialogue {self.dialogue_ids[d]!r}, field {field!r}: "
                    f"ragged: {len(x)} rows where the dialogues hold {n} utterances"
                )
        for field in ("labels", "speakers"):
            if columns[field].dtype != np.int64:
                raise ValueError(f"split {name!r}, field {field!r}: dtype must be int64, got {columns[field].dtype}")
        bad = (self.labels < 0) | (self.labels >= num_classes)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"split {name!r}, dialogue {self.dialogue_ids[self._dialogue_of(row)]!r}, field 'labels': "
                f"label {self.labels[row]} out of range [0, {num_classes})"
            )
        for m, x in self.features.items():
            if x.dtype != np.float32:
                raise ValueError(f"split {name!r}, field {m!r}: dtype must be float32, got {x.dtype}")
            finite = np.isfinite(x).all(axis=1)
            if not finite.all():
                row = int(np.flatnonzero(~finite)[0])
                raise ValueError(
                    f"split {name!r}, dialogue {self.dialogue_ids[self._dialogue_of(row)]!r}, field {m!r}: "
                    "non-finite feature values"
                )

    def _dialogue_of(self, row: int) -> int:
        return min(int(np.searchsorted(self.offsets, row, side="right")) - 1, self.num_dialogues - 1)


@dataclass(frozen=True, eq=False)
class Corpus:
    """A dataset's splits ("train", "dev", "test"), class names and where it came from."""

    name: str
    classes: tuple[str, ...]
    splits: dict[str, Split]
    source: str

    @property
    def modalities(self) -> str:
        return in_order(next(iter(self.splits.values())).features)

    @property
    def dims(self) -> dict[str, int]:
        return {m: x.shape[1] for m, x in next(iter(self.splits.values())).features.items()}

    def validate(self, num_classes: int | None = None) -> "Corpus":
        """Check every split (see :meth:`Split.validate`) and that feature dims agree across splits."""
        num_classes = len(self.classes) if num_classes is None else num_classes
        if not self.splits:
            raise ValueError(f"corpus {self.name!r} has no splits")
        reference_name, reference = next(iter(self.splits.items()))
        for name, split in self.splits.items():
            split.validate(name, num_classes)
            if split.features.keys() != reference.features.keys():
                raise ValueError(
                    f"split {name!r} has modalities {sorted(split.features)}, "
                    f"split {reference_name!r} has {sorted(reference.features)}"
                )
            for m, x in split.features.items():
                want = reference.features[m].shape[1]
                if x.shape[1] != want:
                    raise ValueError(
                        f"split {name!r}, dialogue {split.dialogue_ids[0]!r}, field {m!r}: "
                        f"feature dim {x.shape[1]}, split {reference_name!r} has {want}"
                    )
        return self
