"""Dialogue batches: which dialogues go together (order, buckets) and the padded gather."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from ..modules.batch import Batch
from .corpus import Split, dialogue_rows


def num_batches(split: Split, batch_size: int) -> int:
    return math.ceil(split.num_dialogues / batch_size)


def batch_order(
    split: Split, batch_size: int, *, shuffle: bool, seed: int | None = None, bucket: bool = False
) -> list[np.ndarray]:
    """The dialogue indices of each batch of one epoch.

    ``bucket``: sort dialogues by length (random tie-break when shuffling), cut into batches,
    then shuffle the batch order, so each batch pads to a length close to its dialogues'.
    The same ``seed`` gives the same epoch; pass ``seed + epoch`` for a new order each epoch.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    n = split.num_dialogues
    rng = np.random.default_rng(seed)
    if bucket:
        tie_break = rng.random(n) if shuffle else np.arange(n)
        order = np.lexsort((tie_break, split.lengths))
    else:
        order = rng.permutation(n) if shuffle else np.arange(n)
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if bucket and shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def iterate_batches(
    split: Split,
    modalities: str,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int | None = None,
    bucket: bool = False,
    every: tuple[int, int] = (0, 1),
) -> Iterator[Batch]:
    """One epoch of padded :class:`Batch` objects (see :func:`batch_order` for the order).

    ``every=(r, n)``: only the batches r, r + n, r + 2n, ... (whole batches for rank r of n, as in a
    distributed evaluation); the others are never gathered."""
    _check_modalities(split, modalities)
    first, step = every
    for dialogues in batch_order(split, batch_size, shuffle=shuffle, seed=seed, bucket=bucket)[first::step]:
        yield gather_batch(split, modalities, dialogues)


def _check_modalities(split: Split, modalities: str) -> None:
    missing = [m for m in modalities if m not in split.features]
    if not modalities or missing:
        raise ValueError(f"modalities {modalities!r} not available; the split has {''.join(split.features)!r}")


def shard_dialogues(dialogues: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """Rank ``rank``'s dialogues of one global batch: positions rank, rank + world_size, ...

    The shards of ranks 0..world_size-1 are disjoint and together are exactly ``dialogues``; a
    batch with fewer dialogues than ranks leaves the last ranks empty. Taking every world_size-th
    dialogue rather than a contiguous slice spreads a length-bucketed batch's long and short
    dialogues evenly over the ranks."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in [0, {world_size}), got {rank}")
    return dialogues[rank::world_size]


@dataclass(frozen=True)
class Shard:
    """One rank's part of a global batch in a distributed run.

    ``share`` is the rank's fraction of the global batch's real utterances: the weight of its loss,
    which is a mean over its own utterances. An empty shard (a global batch with fewer dialogues
    than ranks) holds the global batch's first dialogue with ``share`` 0: its step runs like any
    other and takes part in every collective, contributing nothing."""

    batch: Batch
    share: float

    @property
    def empty(self) -> bool:
        return self.share == 0.0

    def to(self, device, non_blocking: bool = False) -> "Shard":
        return dataclasses.replace(self, batch=self.batch.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "Shard":
        return dataclasses.replace(self, batch=self.batch.pin_memory())


def iterate_shards(
    split: Split,
    modalities: str,
    batch_size: int,
    *,
    rank: int,
    world_size: int,
    shuffle: bool,
    seed: int | None = None,
    bucket: bool = False,
) -> Iterator[Shard]:
    """Rank ``rank``'s :class:`Shard` of each global batch of :func:`iterate_batches` (the same
    ``batch_order``, so every rank walks the same global batches); see :func:`shard_dialogues`.
    Every rank yields one shard per global batch, empty or not, and computes the global batch's
    utterance count from the split's lengths, with no communication."""
    _check_modalities(split, modalities)
    for dialogues in batch_order(split, batch_size, shuffle=shuffle, seed=seed, bucket=bucket):
        mine = shard_dialogues(dialogues, rank, world_size)
        if len(mine):
            share = int(split.lengths[mine].sum()) / int(split.lengths[dialogues].sum())
            yield Shard(gather_batch(split, modalities, mine), share)
        else:
            yield Shard(gather_batch(split, modalities, dialogues[:1]), 0.0)


def gather_batch(split: Split, modalities: str, dialogues: np.ndarray) -> Batch:
    """Dialogues ``dialogues`` of ``split`` as one zero-padded batch, in that order."""
    lengths = split.lengths[dialogues]
    b, t = len(dialogues), int(lengths.max())
    # Real cells of the [B*T] grid, row-major, line up with the dialogues' rows in order.
    cells = np.flatnonzero(np.arange(t) < lengths[:, None])
    rows = dialogue_rows(split.offsets, dialogues)
    features = {}
    for m in modalities:
        x = split.features[m]
        padded = np.zeros((b * t, x.shape[1]), dtype=np.float32)
        padded[cells] = x[rows]
        features[m] = torch.from_numpy(padded).view(b, t, -1)
    labels = np.zeros(b * t, dtype=np.int64)
    labels[cells] = split.labels[rows]
    return Batch.build(features, torch.from_numpy(lengths), torch.from_numpy(labels).view(b, t))


def padding_waste(
    split: Split, batch_size: int, *, shuffle: bool, seed: int | None = None, bucket: bool = False
) -> float:
    """Fraction of padded cells among all B*T cells of one epoch's batches."""
    lengths = split.lengths
    cells = real = 0
    for dialogues in batch_order(split, batch_size, shuffle=shuffle, seed=seed, bucket=bucket):
        cells += len(dialogues) * int(lengths[dialogues].max())
        real += int(lengths[dialogues].sum())
    return 1.0 - real / cells
