"""A safe columnar cache of a legacy pickle: one .npy per array per split plus a JSON manifest.

Layout: ``<dir>/manifest.json`` and ``<dir>/<split>/{a,t,v,labels,speakers,offsets}.npy``.
Arrays load with ``allow_pickle=False`` (features memory-mapped). The manifest records where the
data came from (a legacy pickle's size, mtime and sha256, to notice a changed source; or the
transcript files a corpus was built from), every array's shape and dtype, and a checksum of
itself (to notice a hand-edited manifest).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from os import PathLike
from pathlib import Path

import numpy as np

from ..modalities import ORDER
from .corpus import Corpus, Split
from .legacy import read_legacy

FORMAT = "ada2i-columnar-cache"
VERSION = 1
MANIFEST = "manifest.json"
LEGACY = "legacy-pickle"  # source kinds: a legacy pickle's cache, or "transcripts" (data.transcripts)


class CacheError(ValueError):
    """A cache directory is unreadable, corrupt or does not match what was asked for."""


def cache_path(
    source: str | PathLike, dataset: str, *, task: str = "7class", cache_dir: str | PathLike | None = None
) -> Path:
    """Where the cache of ``source`` lives: next to it, or under ``cache_dir`` (keyed by its path)."""
    source = Path(source).resolve()
    name = f"{source.name}.{dataset}" + (f"-{task}" if dataset == "mosei" else "")
    if cache_dir is None:
        return source.parent / f"{name}.cache"
    return Path(cache_dir) / f"{name}-{hashlib.sha256(str(source).encode()).hexdigest()[:10]}.cache"


def load_or_build(
    source: str | PathLike, dataset: str, *, task: str = "7class", cache_dir: str | PathLike | None = None
) -> Corpus:
    """The file's own splits, as :func:`read_legacy` gives them, read through the cache.

    The corpus's ``source`` is the pickle's path. Builds the cache on first use and rebuilds it
    when the source changed. A corrupt cache raises :class:`CacheError`; an unwritable cache
    location only warns and returns the pickle's corpus.
    """
    source = Path(source)
    directory = cache_path(source, dataset, task=task, cache_dir=cache_dir)
    if not (directory.exists() and _source_unchanged(read_manifest(directory)["source"], source)):
        corpus = read_legacy(source, dataset, task=task)
        try:
            write_cache(corpus, directory, source=dict(kind=LEGACY, **file_record(source)), task=task)
        except OSError as error:
            warnings.warn(f"could not write the data cache {directory} ({error}); read {source} directly",
                          stacklevel=2)
            return corpus
    return dataclasses.replace(load_cache(directory, dataset=dataset, task=task), source=str(source))


def file_record(path: str | PathLike) -> dict:
    """What a manifest records of a source file: resolved path, size, mtime and sha256."""
    path = Path(path)
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": _sha256(path)}


def write_cache(corpus: Corpus, directory: str | PathLike, *, source: dict, task: str = "7class") -> None:
    """Write ``corpus`` with ``source`` (a JSON record of where it came from, with a ``kind``);
    atomic (built in a temp dir, then renamed)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        splits = {}
        for name, split in corpus.splits.items():
            (tmp / name).mkdir()
            arrays = {}
            for key, array in _columns(split).items():
                np.save(tmp / name / f"{key}.npy", np.ascontiguousarray(array), allow_pickle=False)
                arrays[key] = {"shape": list(array.shape), "dtype": str(array.dtype)}
            splits[name] = {"dialogue_ids": list(split.dialogue_ids), "arrays": arrays}
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "dataset": corpus.name,
            "task": task if corpus.name == "mosei" else None,
            "classes": list(corpus.classes),
            "source": source,
            "splits": splits,
        }
        manifest["checksum"] = _checksum(manifest)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        _replace_dir(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_manifest(directory: str | PathLike) -> dict:
    directory = Path(directory)
    path = directory / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CacheError(f"{path}: unreadable manifest ({error}); delete {directory} to rebuild the cache") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CacheError(f"{path}: not an {FORMAT} manifest")
    if manifest.get("version") != VERSION:
        raise CacheError(
            f"{path}: cache format version {manifest.get('version')!r}, this code reads {VERSION}; "
            f"delete {directory} to rebuild the cache"
        )
    if manifest.get("checksum") != _checksum(manifest):
        raise CacheError(f"{path}: the manifest was modified (checksum mismatch); delete {directory} to rebuild")
    return manifest


def load_cache(directory: str | PathLike, *, dataset: str | None = None, task: str = "7class") -> Corpus:
    """Open a cache directory (features memory-mapped read-only); checks it against its manifest.

    The corpus's ``source`` is the directory, which :func:`load_corpus` accepts as a path.
    ``dataset`` checks a legacy pickle's cache; a transcript corpus brings its own classes and
    trains under any dataset's preset.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    wanted = (dataset, task if dataset == "mosei" else None)
    legacy = manifest["source"].get("kind", LEGACY) == LEGACY
    if legacy and dataset is not None and (manifest["dataset"], manifest["task"]) != wanted:
        raise CacheError(
            f"{directory} caches dataset {manifest['dataset']!r} (task {manifest['task']!r}), "
            f"not {dataset!r}" + (f" (task {task!r})" if dataset == "mosei" else "")
        )
    splits = {}
    for name, info in manifest["splits"].items():
        arrays = {key: _load_array(directory / name / f"{key}.npy", spec, directory)
                  for key, spec in info["arrays"].items()}
        splits[name] = Split(
            features={m: arrays[m] for m in ORDER if m in arrays},
            labels=np.array(arrays["labels"]),
            speakers=np.array(arrays["speakers"]),
            offsets=np.array(arrays["offsets"]),
            dialogue_ids=tuple(info["dialogue_ids"]),
        )
    corpus = Corpus(manifest["dataset"], tuple(manifest["classes"]), splits, str(directory))
    try:
        return corpus.validate()
    except ValueError as error:
        raise CacheError(f"{directory}: inconsistent cache: {error}; delete it to rebuild") from error


def _columns(split: Split) -> dict[str, np.ndarray]:
    return {**split.features, "labels": split.labels, "speakers": split.speakers, "offsets": split.offsets}


def _load_array(path: Path, spec: dict, directory: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError) as error:
        raise CacheError(f"{path}: unreadable or truncated ({error}); delete {directory} to rebuild") from None
    if list(array.shape) != spec["shape"] or str(array.dtype) != spec["dtype"]:
        raise CacheError(
            f"{path}: holds {array.dtype}{list(array.shape)}, the manifest says {spec['dtype']}{spec['shape']}; "
            f"delete {directory} to rebuild the cache"
        )
    return array


def _source_unchanged(recorded: dict, source: Path) -> bool:
    stat = source.stat()
    if stat.st_size != recorded["size"]:
        return False
    return stat.st_mtime_ns == recorded["mtime_ns"] or _sha256(source) == recorded["sha256"]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _checksum(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _replace_dir(tmp: Path, directory: Path) -> None:
    """Move ``tmp`` to ``directory``, replacing a stale one; rename(2) cannot replace a non-empty dir."""
    stale = None
    if directory.exists():
        stale = directory.with_name(f"{tmp.name}.stale")
        os.replace(directory, stale)
    try:
        os.replace(tmp, directory)
    except OSError:
        if not directory.exists():
            raise
        shutil.rmtree(tmp)  # another process finished the same cache first
    if stale is not None:
        shutil.rmtree(stale, ignore_errors=True)
