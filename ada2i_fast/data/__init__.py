"""Data layer: legacy pickles (restricted unpickler) -> columnar cache -> corpus -> padded batches."""

from .batching import iterate_batches, num_batches, padding_waste
from .cache import CacheError
from .corpus import Corpus, Split
from .legacy import LegacyDataError
from .loading import load_corpus
from .safe_pickle import PickleLoadError, UnsafePickleError
from .synthetic import make_synthetic

__all__ = [
    "CacheError",
    "Corpus",
    "LegacyDataError",
    "PickleLoadError",
    "Split",
    "UnsafePickleError",
    "iterate_batches",
    "load_corpus",
    "make_synthetic",
    "num_batches",
    "padding_waste",
]
