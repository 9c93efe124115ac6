"""One entry point: a corpus from a legacy pickle, a cache directory, or the synthetic generator."""

from __future__ import annotations

from os import PathLike
from pathlib import Path

from .cache import load_cache, load_or_build
from ..datasets import dataset_spec
from .corpus import Corpus
from .legacy import add_dev_split
from .synthetic import make_synthetic


def load_corpus(
    dataset: str,
    path: str | PathLike | None = None,
    *,
    seed: int = 12,
    synthetic_size: float = 1.0,
    task: str = "7class",
    synthetic: str = "redundant",
    cache_dir: str | PathLike | None = None,
) -> Corpus:
    """The train/dev/test corpus of ``dataset``, validated.

    ``path``: a legacy pickle (read through its columnar cache, built on first use next to the
    file or under ``cache_dir``), a cache directory, or None for :func:`make_synthetic` with
    ``seed``, ``synthetic_size`` and the family ``synthetic``. ``seed`` also drives IEMOCAP's dev carve (SPEC §1).
    """
    dataset_spec(dataset).class_names(task)  # rejects an unknown dataset or task before touching any file
    if path is None:
        return make_synthetic(dataset, seed=seed, size=synthetic_size, task=task, family=synthetic).validate()
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no {dataset} data at {path} (expected a legacy .pkl file or a cache directory)")
    if path.is_dir():
        corpus = load_cache(path, dataset=dataset, task=task)
    else:
        corpus = load_or_build(path, dataset, task=task, cache_dir=cache_dir)
    return add_dev_split(corpus, seed)
