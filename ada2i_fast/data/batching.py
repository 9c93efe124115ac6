"""Dialogue batches: which dialogues go together (order, buckets) and the padded gather."""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch

from ..batch import Batch
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
) -> Iterator[Batch]:
    """One epoch of padded :class:`Batch` objects (see :func:`batch_order` for the order)."""
    missing = [m for m in modalities if m not in split.features]
    if not modalities or missing:
        raise ValueError(f"modalities {modalities!r} not available; the split has {''.join(split.features)!r}")
    for dialogues in batch_order(split, batch_size, shuffle=shuffle, seed=seed, bucket=bucket):
        yield gather_batch(split, modalities, dialogues)


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
