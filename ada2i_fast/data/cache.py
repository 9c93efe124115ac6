"""A safe columnar cache of a legacy pickle: one .npy per array per split plus a JSON manifest.

Layout: ``<dir>/manifest.json`` and ``<dir>/<split>/{a,t,v,labels,speakers,offsets}.npy``, and for a
corpus built from transcripts ``<dir>/featuriser/``, what made its features (``data.featuriser``; the
manifest records its checksum; corpora written before it have none).
Arrays load with ``allow_pickle=False`` (features memory-mapped). The manifest records where the
data came from (a legacy pickle's path, size and sha256, to notice a changed source; or the
transcript files a corpus was built from), every array's shape, dtype and sha256 (verified on
load, to notice altered contents), and a checksum of itself (to notice a hand-edited manifest).

A transcript corpus (``data.transcripts``) is a cache folder too, and may be the only copy of
the user's features: :func:`load_or_build` replaces only the caches of legacy pickles,
:func:`write_cache` only a cache folder or an empty one, and no message advises deleting one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import secrets
import shutil
import warnings
from os import PathLike
from pathlib import Path

import numpy as np

from ..checkpointing.json_files import read_json
from ..datasets import SPLITS, dataset_spec
from ..modalities import ORDER
from .corpus import Corpus, Split
from .legacy import read_legacy

FORMAT = "ada2i-columnar-cache"
VERSION = 2  # 2: a sha256 per array, the source pickle compared by its bytes
MANIFEST = "manifest.json"
LEGACY = "legacy-pickle"  # source kinds: a legacy pickle's cache, TRANSCRIPTS or CONVERSATIONS (data.conversations)
TRANSCRIPTS = "transcripts"
CONVERSATIONS = "conversations"
ARRAY_KEYS = (*ORDER, "labels", "speakers", "offsets")
REQUIRED_KEYS = ("labels", "speakers", "offsets")
FEATURISER = "featuriser"  # the folder of a transcript corpus's featuriser (data.featuriser)


class CacheError(ValueError):
    """A cache directory is unreadable, corrupt or does not match what was asked for."""


class StaleCacheError(CacheError):
    """A cache written by an older version of this code; ``kind`` is its manifest's source kind."""

    def __init__(self, message: str, kind: str | None) -> None:
        super().__init__(message)
        self.kind = kind


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
    source: str | PathLike,
    dataset: str,
    *,
    task: str = "7class",
    cache_dir: str | PathLike | None = None,
    verify: bool = True,
) -> Corpus:
    """The file's own splits, as :func:`read_legacy` gives them, read through the cache.

    The corpus's ``source`` is the pickle's path. Builds the cache on first use and rebuilds it
    when the pickle's bytes changed (its sha256 is compared on every load) or the cache was
    written by an older version of this code. A corrupt cache raises :class:`CacheError`; an
    unwritable cache location only warns and returns the pickle's corpus. ``verify``: check
    every array's sha256 (see :func:`load_cache`).
    """
    source = Path(source)
    directory = cache_path(source, dataset, task=task, cache_dir=cache_dir)
    if directory.exists() and (manifest := _reusable_manifest(directory, source)) is not None:
        corpus = load_cache(directory, dataset=dataset, task=task, verify=verify, manifest=manifest)
        return dataclasses.replace(corpus, source=str(source))
    corpus = read_legacy(source, dataset, task=task)
    try:
        write_cache(corpus, directory, source=dict(kind=LEGACY, **file_record(source)), task=task)
    except OSError as error:
        warnings.warn(f"could not write the data cache {directory} ({error}); read {source} directly",
                      stacklevel=2)
        return corpus
    # Just written from ``corpus``: the hashes would only re-read what was written.
    return dataclasses.replace(load_cache(directory, dataset=dataset, task=task, verify=False), source=str(source))


def _reusable_manifest(directory: Path, source: Path) -> dict | None:
    """The manifest of ``directory`` when it caches ``source`` as it is now; None when it must be rebuilt.

    Raises :class:`CacheError` for anything that is not positively a legacy cache (a corrupt
    manifest, a transcript corpus): those are never replaced.
    """
    try:
        manifest = read_manifest(directory)
    except StaleCacheError as error:
        if error.kind == LEGACY:
            return None
        raise
    kind = manifest["source"].get("kind")
    if kind != LEGACY:
        raise CacheError(
            f"{directory} holds a {kind!r} corpus, not the cache of {source}; "
            "pass cache_dir= to keep the cache of the pickle elsewhere"
        )
    recorded = manifest["source"]
    if source.stat().st_size != recorded["size"] or _sha256(source) != recorded["sha256"]:
        return None
    return manifest


def file_record(path: str | PathLike) -> dict:
    """What a manifest records of a source file: resolved path, size, mtime and sha256."""
    path = Path(path)
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": _sha256(path)}


def write_cache(corpus: Corpus, directory: str | PathLike, *, source: dict, task: str = "7class",
                featuriser=None) -> None:
    """Write ``corpus`` with ``source`` (a JSON record of where it came from, with a ``kind``) and
    ``featuriser`` (a ``data.featuriser.Featuriser``, what made its features; None: unknown); atomic
    (built in a temp dir, then renamed). Folders and files follow the umask."""
    directory = Path(directory)
    check_replaceable(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = new_temp_dir(directory)
    try:
        splits = {}
        for name, split in corpus.splits.items():
            (tmp / name).mkdir()
            arrays = {}
            for key, array in _columns(split).items():
                array = np.ascontiguousarray(array)
                np.save(tmp / name / f"{key}.npy", array, allow_pickle=False)
                arrays[key] = {"shape": list(array.shape), "dtype": str(array.dtype), "sha256": array_sha256(array)}
            splits[name] = {"dialogue_ids": list(split.dialogue_ids), "arrays": arrays}
        featuriser_record = None if featuriser is None else {
            "folder": FEATURISER, "checksum": featuriser.save(tmp / FEATURISER), "modalities": featuriser.modalities,
            "text": featuriser.text.kind,
        }
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "dataset": corpus.name,
            "task": task if corpus.name == "mosei" else None,
            "classes": list(corpus.classes),
            "source": source,
            "splits": splits,
            **({"featuriser": featuriser_record} if featuriser_record else {}),
        }
        manifest["checksum"] = manifest_checksum(manifest)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        replace_dir(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_replaceable(directory: Path) -> None:
    """Refuse a ``directory`` that :func:`write_cache` must not replace (builders call it before their work)."""
    if directory.exists() and not _replaceable(directory):
        raise CacheError(f"{directory} exists and is not a corpus or cache folder (no {FORMAT} manifest); name a new folder")


def _replaceable(directory: Path) -> bool:
    """An empty folder, or one whose manifest says it is a cache (valid or not): never the user's own files."""
    if directory.is_dir() and not any(directory.iterdir()):
        return True
    try:
        return read_json(directory / MANIFEST).get("format") == FORMAT
    except (ValueError, AttributeError):
        return False


def read_manifest(directory: str | PathLike) -> dict:
    """The checked manifest of a cache directory; :class:`CacheError` says what is wrong and how to rebuild."""
    directory = Path(directory)
    path = directory / MANIFEST
    try:
        manifest = read_json(path)
    except ValueError as error:
        raise CacheError(f"unreadable manifest: {error}; {_rebuild_advice(directory, None)}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CacheError(f"{path}: not an {FORMAT} manifest; {_rebuild_advice(directory, None)}")
    if manifest.get("checksum") != manifest_checksum(manifest):
        raise CacheError(
            f"{path}: the manifest was modified after it was written (checksum mismatch); "
            f"{_rebuild_advice(directory, manifest)}"
        )
    if manifest.get("version") != VERSION:
        raise StaleCacheError(
            f"{path}: written by an older version of this code (cache format {manifest.get('version')!r}, "
            f"this code reads {VERSION}); {_rebuild_advice(directory, manifest, stale=True)}",
            _source_kind(manifest),
        )
    problem = _structure_problem(manifest)
    if problem:
        raise CacheError(f"{path}: {problem}; {_rebuild_advice(directory, manifest)}")
    return manifest


def _rebuild_advice(directory: Path, manifest: dict | None, *, stale: bool = False) -> str:
    """How to rebuild the cache in ``directory`` (never by deleting it: it may hold the user's data).

    ``stale``: the cache is only in an older format, which loading its pickle replaces by itself.
    """
    kind = _source_kind(manifest)
    source = manifest.get("source") if isinstance(manifest, dict) else None
    if kind == LEGACY and isinstance(source, dict):
        pickle = source.get("path", "its source pickle")
        if stale:
            return f"this folder is the cache of {pickle}: loading that pickle rebuilds it"
        return (f"this folder is the cache of {pickle} and holds nothing else: to rebuild it, rename or move "
                "the folder away and load that pickle again")
    if kind == TRANSCRIPTS and isinstance(source, dict):
        csv_dir = source.get("path") or _csv_dir(source) or "CSV_DIR"
        layout = source.get("layout", "LAYOUT")
        return (f"this folder is a transcript corpus: rebuild it with `python -m ada2i_fast.data.transcripts "
                f"--csv-dir {csv_dir} --layout {layout} --out {directory}`")
    if kind == CONVERSATIONS:
        return (f"this folder is a conversation corpus: rebuild it with `python -m ada2i_fast.data.conversations "
                f"--out {directory}` and the flags it was built with (extracted audio features stay cached)")
    return ("if it is the cache of a legacy pickle, rename or move the folder away and load that pickle again to "
            "rebuild it; a transcript corpus is rebuilt with `python -m ada2i_fast.data.transcripts`")


def _source_kind(manifest) -> str | None:
    source = manifest.get("source") if isinstance(manifest, dict) else None
    return source.get("kind", LEGACY) if isinstance(source, dict) else None


def _csv_dir(source: dict) -> str | None:
    files = source.get("files")
    train = files.get("train") if isinstance(files, dict) else None
    return str(Path(train["path"]).parent) if isinstance(train, dict) and isinstance(train.get("path"), str) else None


def _structure_problem(manifest: dict) -> str | None:
    """What is malformed in a manifest whose checksum matches (a hand-made one), or None."""
    if not isinstance(manifest.get("dataset"), str) or not _is_list_of(manifest.get("classes"), str):
        return "'dataset' must be a string and 'classes' a list of strings"
    source = manifest.get("source")
    if not isinstance(source, dict):
        return "'source' must be a record"
    if _source_kind(manifest) == LEGACY and not (
        isinstance(source.get("size"), int) and isinstance(source.get("sha256"), str)
    ):
        return "the source record of a legacy cache needs the pickle's 'size' and 'sha256'"
    splits = manifest.get("splits")
    if not isinstance(splits, dict) or not splits or not set(splits) <= set(SPLITS):
        return f"'splits' must map some of {', '.join(SPLITS)} to their arrays"
    for name, info in splits.items():
        if not isinstance(info, dict) or not _is_list_of(info.get("dialogue_ids"), str):
            return f"split {name!r} needs a list of string 'dialogue_ids'"
        arrays = info.get("arrays")
        if not isinstance(arrays, dict) or not set(REQUIRED_KEYS) <= set(arrays) <= set(ARRAY_KEYS):
            return f"split {name!r} must list the arrays {', '.join(REQUIRED_KEYS)} and some of {', '.join(ORDER)}"
        for key, spec in arrays.items():
            if not (isinstance(spec, dict) and _is_list_of(spec.get("shape"), int)
                    and isinstance(spec.get("dtype"), str) and isinstance(spec.get("sha256"), str)):
                return f"split {name!r}, array {key!r} needs a 'shape', a 'dtype' and a 'sha256'"
    return None


def _is_list_of(value, kind: type) -> bool:
    return isinstance(value, list) and all(isinstance(v, kind) and not isinstance(v, bool) for v in value)


def load_cache(
    directory: str | PathLike,
    *,
    dataset: str | None = None,
    task: str = "7class",
    verify: bool = True,
    manifest: dict | None = None,
) -> Corpus:
    """Open a cache directory (features memory-mapped read-only); checks it against its manifest.

    The corpus's ``source`` is the directory, which :func:`load_corpus` accepts as a path.
    ``dataset`` checks a legacy pickle's cache; a transcript corpus brings its own classes and
    trains under any dataset's preset. ``verify`` (default) compares every array's sha256 with
    the manifest's: it reads every byte once (~45 ms for the 78 MB of a full-size meld, most of
    such a load). ``manifest``: one :func:`read_manifest` already returned for this directory.
    """
    directory = Path(directory)
    manifest = read_manifest(directory) if manifest is None else manifest
    advice = _rebuild_advice(directory, manifest)
    wanted = (dataset, task if dataset == "mosei" else None)
    legacy = _source_kind(manifest) == LEGACY
    if legacy and dataset is not None and (manifest["dataset"], manifest["task"]) != wanted:
        raise CacheError(
            f"{directory} caches dataset {manifest['dataset']!r} (task {manifest['task']!r}), "
            f"not {dataset!r}" + (f" (task {task!r})" if dataset == "mosei" else "")
        )
    splits = {}
    for name, info in manifest["splits"].items():
        arrays = {key: _load_array(directory / name / f"{key}.npy", spec, verify, advice)
                  for key, spec in info["arrays"].items()}
        splits[name] = Split(
            features={m: arrays[m] for m in ORDER if m in arrays},
            labels=np.array(arrays["labels"]),
            speakers=np.array(arrays["speakers"]),
            offsets=np.array(arrays["offsets"]),
            dialogue_ids=tuple(info["dialogue_ids"]),
        )
    classes = tuple(manifest["classes"])
    if legacy:  # caches written before the class table had full names recorded the abbreviations
        classes = dataset_spec(manifest["dataset"]).canonical(classes, manifest["task"] or "7class")
    corpus = Corpus(manifest["dataset"], classes, splits, str(directory))
    try:
        return corpus.validate()
    except ValueError as error:
        raise CacheError(f"{directory}: inconsistent cache: {error}; {advice}") from error


def _columns(split: Split) -> dict[str, np.ndarray]:
    return {**split.features, "labels": split.labels, "speakers": split.speakers, "offsets": split.offsets}


def _load_array(path: Path, spec: dict, verify: bool, advice: str) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False, mmap_mode="r")
    except Exception as error:  # noqa: BLE001 - numpy's header parser raises more than ValueError (TokenError)
        raise CacheError(f"{path}: unreadable or truncated ({type(error).__name__}: {error}); {advice}") from None
    if list(array.shape) != spec["shape"] or str(array.dtype) != spec["dtype"]:
        raise CacheError(
            f"{path}: holds {array.dtype}{list(array.shape)}, the manifest says {spec['dtype']}{spec['shape']}; "
            f"{advice}"
        )
    if verify and array_sha256(array) != spec["sha256"]:
        raise CacheError(
            f"{path}: its contents changed after the cache was written (sha256 mismatch: altered, or damaged "
            f"on disk); {advice}"
        )
    return array


def array_sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array)).hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_checksum(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def new_temp_dir(directory: Path) -> Path:
    """An empty sibling of ``directory`` to build in; unlike tempfile.mkdtemp (0o700) it follows the umask."""
    while True:
        tmp = directory.with_name(f".{directory.name}.{os.getpid()}-{secrets.token_hex(4)}")
        try:
            tmp.mkdir()
            return tmp
        except FileExistsError:
            continue


def replace_dir(tmp: Path, directory: Path) -> None:
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
