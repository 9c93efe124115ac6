"""A padded batch of dialogues, validated once on the CPU so the model's step path never syncs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Batch:
    """B dialogues padded to T utterances. Build it with :meth:`Batch.build`.

    ``features[m]`` is [B, T, d_m]; ``lengths`` [B] (always on the CPU); ``labels`` [B, T] with
    padded positions ignored; ``mask`` [B, T] marks real utterances; ``flat_index`` [N] indexes
    real utterances of the flattened [B*T] grid, dialogue after dialogue (N = sum of lengths).
    ``label_range`` is (min, max) of the real labels, read on the CPU at build time.

    :meth:`build` casts floating features to float32 and zeroes padded rows (whatever they held, a
    padded row never reaches a real output); it refuses non-float features and non-integral labels
    or lengths, naming the field.
    """

    features: dict[str, Tensor]
    lengths: Tensor
    mask: Tensor
    flat_index: Tensor
    labels: Tensor | None = None
    label_range: tuple[int, int] | None = None

    @classmethod
    def build(cls, features: dict[str, Tensor], lengths, labels: Tensor | None = None) -> "Batch":
        """A batch of ``features`` ({modality: [B, T, d_m]}, zero-padded) with the dialogues' ``lengths`` and,
        to train or evaluate, ``labels`` [B, T]; checked on the CPU, padded rows zeroed."""
        lengths = _integral("lengths", torch.as_tensor(lengths, device="cpu"))
        if lengths.ndim != 1:
            raise ValueError(f"lengths must be 1-D [B], got shape {tuple(lengths.shape)}")
        if lengths.numel() == 0:
            raise ValueError("empty batch: no dialogues")
        if not features:
            raise ValueError("features must hold at least one modality")
        empty = (lengths < 1).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"empty dialogue at batch position(s) {empty}: every dialogue needs >= 1 utterance")
        b = lengths.numel()
        t = None
        for name, x in features.items():
            if x.ndim != 3 or x.shape[0] != b:
                raise ValueError(f"features[{name!r}] must be [B={b}, T, d], got shape {tuple(x.shape)}")
            if t is None:
                t = x.shape[1]
            elif x.shape[1] != t:
                raise ValueError(f"features[{name!r}] has T={x.shape[1]}, other modalities have T={t}")
        longest = int(lengths.max())
        if longest > t:
            raise ValueError(f"a dialogue has {longest} utterances but features are padded to T={t}")
        mask = torch.arange(t) < lengths.unsqueeze(1)
        flat_index = mask.flatten().nonzero().flatten()
        device = next(iter(features.values())).device
        features = {name: _real_rows_only(name, x, mask.to(x.device)) for name, x in features.items()}
        label_range = None
        if labels is not None:
            labels = torch.as_tensor(labels)
            if labels.shape != (b, t):
                raise ValueError(f"labels must be [B={b}, T={t}], got shape {tuple(labels.shape)}")
            real = _integral("labels", labels.cpu()[mask])
            label_range = (int(real.min()), int(real.max()))
            labels = torch.where(mask.to(labels.device), labels, 0).long()
        return cls(features, lengths, mask.to(device), flat_index.to(device), labels, label_range)

    @property
    def batch_size(self) -> int:
        """B, the number of dialogues."""
        return self.lengths.numel()

    @property
    def max_len(self) -> int:
        """T, the longest dialogue's number of utterances."""
        return self.mask.shape[1]

    @property
    def num_utterances(self) -> int:
        """N, the number of real utterances."""
        return self.flat_index.numel()

    @property
    def device(self) -> torch.device:
        """Where the batch's tensors are."""
        return self.mask.device

    def flat_labels(self) -> Tensor:
        """Labels of the real utterances, [N], in the order of ``flat_index``."""
        if self.labels is None:
            raise ValueError("this batch has no labels")
        return self.labels.reshape(-1).index_select(0, self.flat_index)

    def to(self, device, non_blocking: bool = False) -> "Batch":
        """The batch with every tensor on ``device``."""
        return self._map_tensors(lambda x: x.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "Batch":
        """The batch with every tensor in pinned memory (for asynchronous copies to a GPU)."""
        return self._map_tensors(lambda x: x.pin_memory())

    def _map_tensors(self, fn) -> "Batch":
        """``fn`` applied to every tensor but ``lengths``, which stays on the CPU."""
        return dataclasses.replace(
            self,
            features={m: fn(x) for m, x in self.features.items()},
            mask=fn(self.mask),
            flat_index=fn(self.flat_index),
            labels=None if self.labels is None else fn(self.labels),
        )


def _integral(name: str, values: Tensor) -> Tensor:
    """``values`` as int64 when every one is a whole number (bools are not numbers here)."""
    if values.dtype == torch.bool or values.is_complex():
        raise ValueError(f"{name} must be integers, got dtype {values.dtype}")
    if values.is_floating_point():
        whole = torch.isfinite(values) & (values == values.round())
        if not whole.all():
            bad = values[~whole][0].item()
            raise ValueError(f"{name} must be whole numbers, found {bad}")
    return values.long()


def _real_rows_only(name: str, x: Tensor, mask: Tensor) -> Tensor:
    """Float32 features (other float dtypes cast) with padded rows set to 0."""
    if not x.is_floating_point():
        raise ValueError(f"features[{name!r}] must be floating point, got dtype {x.dtype}")
    return torch.where(mask.unsqueeze(-1), x.float(), 0.0)
