import numpy as np
import pytest
import torch

from ada2i_fast.data import Split, iterate_batches, make_synthetic, num_batches, padding_waste
from ada2i_fast.modules.batch import Batch


@pytest.fixture(scope="module")
def indexed_split():
    """47 dialogues of 1..30 utterances; feature column 0 holds the utterance's row number."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 31, size=47)
    n = int(lengths.sum())
    rows = np.arange(n, dtype=np.float32)
    features = {m: np.column_stack([rows, rng.standard_normal((n, d)).astype(np.float32) + 1])
                for m, d in (("a", 3), ("t", 5))}
    return Split(
        features=features,
        labels=rng.integers(0, 7, size=n),
        speakers=np.zeros(n, np.int64),
        offsets=np.concatenate([[0], np.cumsum(lengths)]),
        dialogue_ids=tuple(f"d{i}" for i in range(47)),
    )


@pytest.mark.parametrize("shuffle,bucket", [(False, False), (True, False), (True, True), (False, True)])
def test_each_utterance_once_padding_zero_labels_aligned(indexed_split, shuffle, bucket):
    split = indexed_split
    seen = []
    batches = list(iterate_batches(split, "ta", 10, shuffle=shuffle, seed=3, bucket=bucket))
    assert len(batches) == num_batches(split, 10) == 5
    for batch in batches:
        assert isinstance(batch, Batch) and list(batch.features) == ["t", "a"]
        assert batch.max_len == int(batch.lengths.max())
        for m, x in batch.features.items():
            assert x.dtype == torch.float32 and x.shape[:2] == batch.mask.shape
            assert x.shape[2] == split.features[m].shape[1]
            assert not x[~batch.mask].any()
        assert not batch.labels[~batch.mask].any()
        rows = batch.features["t"].reshape(-1, 6)[batch.flat_index, 0].long().numpy()
        np.testing.assert_array_equal(batch.features["a"].reshape(-1, 4)[batch.flat_index, 0].long().numpy(), rows)
        np.testing.assert_array_equal(batch.flat_labels().numpy(), split.labels[rows])
        real = batch.features["t"].reshape(-1, 6)[batch.flat_index]
        np.testing.assert_array_equal(real[:, 1:].numpy(), split.features["t"][rows, 1:])
        seen.append(rows)
    seen = np.concatenate(seen)
    np.testing.assert_array_equal(np.sort(seen), np.arange(split.num_utterances))
    if not shuffle and not bucket:
        np.testing.assert_array_equal(seen, np.arange(split.num_utterances))


def _order(split, seed, bucket):
    batches = iterate_batches(split, "t", 10, shuffle=True, seed=seed, bucket=bucket)
    return [tuple(b.features["t"][:, 0, 0].long().tolist()) for b in batches]


@pytest.mark.parametrize("bucket", [False, True])
def test_order_is_deterministic_from_seed(indexed_split, bucket):
    assert _order(indexed_split, 1, bucket) == _order(indexed_split, 1, bucket)
    assert _order(indexed_split, 1, bucket) != _order(indexed_split, 2, bucket)


def test_bucketing_cuts_padding_waste():
    split = make_synthetic("iemocap", seed=0, size=1.0).splits["train"]
    plain = np.mean([padding_waste(split, 10, shuffle=True, seed=s) for s in range(5)])
    bucketed = max(padding_waste(split, 10, shuffle=True, seed=s, bucket=True) for s in range(5))
    assert bucketed <= 0.10 and plain > 0.3
    bucketed_batches = list(iterate_batches(split, "a", 10, shuffle=True, seed=0, bucket=True))
    cells = sum(b.mask.numel() for b in bucketed_batches)
    waste = padding_waste(split, 10, shuffle=True, seed=0, bucket=True)
    assert 1 - split.num_utterances / cells == pytest.approx(waste)


def test_bad_arguments(indexed_split):
    with pytest.raises(ValueError, match="modalities 'tv' not available"):
        next(iterate_batches(indexed_split, "tv", 4, shuffle=False))
    with pytest.raises(ValueError, match="batch_size"):
        next(iterate_batches(indexed_split, "t", 0, shuffle=False))
