"""Corpora from raw conversations: transcripts plus an audio file per utterance (text + audio, optional visual).

    python -m ada2i_fast.data.conversations --csv-dir DIR --layout meld --audio-dir AUDIO --out PATH
    python -m ada2i_fast.data.conversations --csv-dir DIR --layout generic --audio-column wav --out PATH
    python -m ada2i_fast.train --dataset meld --data PATH --modalities at

Transcripts: the CSV layouts and flags of ``data.transcripts`` (read by its code). Audio, one file
per CSV row:

* ``--audio-column NAME`` (any layout): the row's audio file, a path relative to ``--csv-dir`` and
  inside it (links resolved) unless ``--allow-paths-outside-csv-dir``;
* ``--layout meld --audio-dir AUDIO``: MELD's raw naming, ``AUDIO/{split}/dia{Dialogue_ID}_utt{Utterance_ID}.wav``
  (e.g. ``AUDIO/train/dia0_utt0.wav``, ``AUDIO/dev/...``, ``AUDIO/test/...``).

Audio must be a regular file, checked on the opened descriptor before anything reads it (a device
or a FIFO never ends). wav and flac are read directly; any other container (mp4, mp3, ...) through
``ffmpeg``, which must be on PATH. Multi-channel audio is averaged to mono and every file is
resampled to 16 kHz; a rate under 8 kHz, a missing or unreadable file is an error naming the file.
A silent file (peak under 1e-4), one shorter than 0.1 s, one with a NaN or infinite sample, one
peaking over 1e3 (float audio no recording gives) or one openSMILE gives non-finite features for
is an error listing every such file, or, with ``--skip-bad-audio``, its utterance is dropped (a
dialogue left empty goes with it) and listed: printed and recorded in the manifest's ``source.skipped``.

Audio features are openSMILE functionals, eGeMAPSv02 (88) by default or ``--audio-features
ComParE_2016`` (6373), extracted by a process pool over ``--workers`` cores (default: all) with a
progress bar that counts every file as it finishes. Each file's features are cached in ``--feature-cache`` (default: ``PATH.features``
beside the corpus, which ``write_cache`` replaces whole) under a key of the file's sha256 and the
feature set, each vector with that key and a sha256 of both, verified when read (an entry renamed or
swapped with another is refused), its members' sizes and .npy headers checked before anything is
decompressed; written atomically, so a rerun after an interruption extracts only what is missing.
``--visual-column NAME``: a ``.npy`` vector per row (relative to ``--csv-dir`` and inside it, as audio). Audio and visual
features are standardised with the train split's mean and std.

The corpus keeps its featuriser (``data.featuriser``: the layout, the text featuriser, the audio
feature set and the standardisations), with which ``predict --csv`` featurises new conversations.

Text features: TF-IDF→SVD as in ``data.transcripts``, the user's ``--embeddings DIR`` (as there), or
``--text-model DIR``, a local sentence-transformers model folder (loaded with local files only;
nothing is downloaded). The manifest's source (kind ``conversations``) records the extractors,
feature sets, package versions and skipped utterances.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import zipfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from math import gcd
from os import PathLike
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..atomic import atomic_open
from ..checkpointing.json_files import open_regular_file
from ..cli import user_errors_as_one_line
from ..datasets import SPLITS, TEXT_DIM
from .cache import CONVERSATIONS, check_replaceable, file_record, write_cache
from .corpus import Corpus
from .featuriser import AudioFeatures, Featuriser, SentenceEncoderText, Standardisation, VisualFeatures
from ..memory import check_fits_in_memory, corpus_bytes
from .transcripts import (
    LAYOUTS, MAX_DIALOGUE_LENGTH, MAX_FIELD_CHARS, Layout, SplitRows, TranscriptError, assemble_corpus,
    build_parser as transcripts_parser, layout_from_args, layout_record, read_columns, read_transcripts,
    split_paths, text_features,
)

FEATURE_SETS = {"eGeMAPSv02": 88, "ComParE_2016": 6373}  # openSMILE functionals and their widths
SAMPLE_RATE = 16_000  # every file is resampled to this before extraction
MIN_SAMPLE_RATE = 8_000  # below this the feature sets' frequency bands are missing
MIN_SECONDS = 0.1
SILENCE_PEAK = 1e-4  # a peak under this (-80 dBFS) is a silent file
MAX_PEAK = 1e3  # float audio peaking above this (+60 dBFS) is not a recording: garbage or a unit error
DIRECT_SUFFIXES = (".wav", ".flac")  # read by soundfile; anything else goes through ffmpeg
CACHE_VERSION = 3  # part of every cache key: bump when extraction or the cache file changes
NPY_HEADER_BYTES = 4096  # room for a .npy member's header in a cache entry (numpy writes 128)
OUTSIDE_FLAG = "--allow-paths-outside-csv-dir"


class AudioError(ValueError):
    """An audio file is missing, unreadable or unusable; names the file."""


@dataclass(frozen=True)
class Utterance:
    """Where one CSV row's audio is, for messages and the skip list."""

    split: str
    row: int  # the row's index in its file
    csv_line: int
    audio: Path


@dataclass(frozen=True)
class Skipped(Utterance):
    """An utterance whose audio gives no features, and why."""

    reason: str


@dataclass(frozen=True)
class Built:
    """What :func:`build_conversation_corpus` made."""

    corpus: Corpus
    skipped: list[Skipped]
    source: dict  # what the manifest records of how the corpus was made
    featuriser: Featuriser  # what made the features, for new conversations


def build_conversation_corpus(
    csv_dir: str | PathLike,
    layout: Layout | str = "meld",
    *,
    audio_column: str | None = None,
    audio_dir: str | PathLike | None = None,
    visual_column: str | None = None,
    audio_features: str = "eGeMAPSv02",
    text_model: str | PathLike | None = None,
    embeddings: str | PathLike | None = None,
    text_dim: int = TEXT_DIM,
    feature_cache: str | PathLike,
    workers: int | None = None,
    skip_bad_audio: bool = False,
    seed: int = 0,
    max_field_chars: int = MAX_FIELD_CHARS,
    max_dialogue_length: int = MAX_DIALOGUE_LENGTH,
    paths_outside_csv_dir: bool = False,
) -> Built:
    """The text + audio (+ visual) corpus of the conversations in ``csv_dir``, validated.

    The files that ``audio_column`` and ``visual_column`` name must lie in ``csv_dir`` (links resolved)
    unless ``paths_outside_csv_dir``; MELD's clips must lie in ``audio_dir``."""
    layout = LAYOUTS[layout] if isinstance(layout, str) else layout
    csv_dir = Path(csv_dir)
    if audio_features not in FEATURE_SETS:
        raise ValueError(f"unknown --audio-features {audio_features!r}; expected one of {', '.join(FEATURE_SETS)}")
    _check_text_options(text_model, embeddings)  # before the extraction, which may take hours
    rows, classes = read_transcripts(csv_dir, layout, max_field_chars=max_field_chars,
                                     max_dialogue_length=max_dialogue_length)
    utterances = {split: _audio_files(csv_dir, layout, split, r, audio_column, audio_dir, max_field_chars,
                                      paths_outside_csv_dir)
                  for split, r in rows.items()}
    total = sum(len(r.texts) for r in rows.values())
    check_fits_in_memory(corpus_bytes(total, text_dim + FEATURE_SETS[audio_features]),
                         f"a corpus of the {total} utterances in {csv_dir}", "choose a smaller --text-dim")
    audio, problems = extract_audio_features([u for split in SPLITS for u in utterances[split]], audio_features,
                                             Path(feature_cache), workers)
    if problems and not skip_bad_audio:
        raise AudioError(_problems_message(problems))
    rows = {split: _without(r, {s.row for s in problems if s.split == split}, split) for split, r in rows.items()}
    features = {split: {"a": _in_file_order({u.row: audio[u.audio] for u in utterances[split] if u.audio in audio},
                                            len(rows[split].texts), FEATURE_SETS[audio_features])}
                for split in SPLITS}
    texts, text = _text_features(rows, text_model, embeddings, text_dim, seed)
    for split, x in texts.items():
        features[split]["t"] = x
    if visual_column:
        for split, x in _visual_features(csv_dir, layout, split_paths(csv_dir, layout), rows, visual_column,
                                         max_field_chars, paths_outside_csv_dir).items():
            features[split]["v"] = x
    standardisations = _standardise(features, rows, ("a", "v"))
    corpus = assemble_corpus(layout, classes, rows, features, csv_dir)
    source = _source_record(csv_dir, layout, corpus, audio_features, text_model, embeddings, audio_column,
                            audio_dir, visual_column, problems)
    files = {"column": audio_column} if audio_column else {"meld_dir": str(Path(audio_dir).resolve())}
    featuriser = Featuriser(
        layout_record(layout, classes), classes, text,
        audio=AudioFeatures(audio_features, standardisations["a"], files),
        visual=VisualFeatures(visual_column, standardisations["v"]) if visual_column else None,
    )
    return Built(corpus, problems, source, featuriser)


# --- audio files ---------------------------------------------------------------------------------------------


def _audio_files(csv_dir: Path, layout: Layout, split: str, rows: SplitRows, audio_column: str | None,
                 audio_dir: str | PathLike | None, max_field_chars: int, outside_allowed: bool) -> list[Utterance]:
    """Each row's audio file, in file order, each inside its folder (``csv_dir``, or MELD's clip folder)."""
    if not audio_column and not (layout.name == "meld" and audio_dir is not None):
        raise ValueError("name each utterance's audio: --audio-column NAME (a path relative to --csv-dir), "
                         "or --layout meld with --audio-dir DIR (DIR/{split}/dia{Dialogue_ID}_utt{Utterance_ID}.wav)")
    clips = Path(audio_dir) / split if audio_dir is not None else None
    paths = audio_paths(rows, layout, audio_column, clips, base=csv_dir, max_field_chars=max_field_chars)
    if audio_column is None:
        _check_clip_names(paths, clips, rows)
    elif not outside_allowed:
        check_inside(paths, csv_dir, rows, audio_column)
    return [Utterance(split, i, rows.lines[i], path) for i, path in enumerate(paths)]


def check_inside(paths: list[Path], csv_dir: Path, rows: SplitRows, column: str) -> None:
    """Refuse the first of ``paths`` (the file row i's ``column`` names) that is not inside ``csv_dir``
    once links are resolved: an absolute path, one through ``..`` or through a link that leads out."""
    root = csv_dir.resolve()
    for i, path in enumerate(paths):
        if not path.resolve().is_relative_to(root):
            raise TranscriptError(f"{rows.path}, line {rows.lines[i]}: {column!r} names {path}, outside --csv-dir "
                                  f"{csv_dir} (paths are relative to it, never absolute, through '..' or through a "
                                  f"link that leads out); pass {OUTSIDE_FLAG} to read files elsewhere")


def _check_clip_names(paths: list[Path], clips: Path, rows: SplitRows) -> None:
    """Refuse a MELD clip name that leaves ``clips`` (a Dialogue_ID or Utterance_ID holding a '/'); the
    clip itself may be a link to anywhere, as the folder is the user's."""
    for i, path in enumerate(paths):
        if path.parent != clips:
            raise TranscriptError(f"{rows.path}, line {rows.lines[i]}: its Dialogue_ID and Utterance_ID give the clip "
                                  f"{path}, outside --audio-dir's {clips}")


def audio_paths(rows: SplitRows, layout: Layout, audio_column: str | None, clips: Path | None, *, base: Path,
                max_field_chars: int = MAX_FIELD_CHARS) -> list[Path]:
    """Each row's audio file, in file order: the path in ``audio_column`` (relative to ``base``), else
    MELD's clip naming, ``clips/dia{Dialogue_ID}_utt{Utterance_ID}.wav``."""
    optional = (layout.speaker, layout.label)
    if audio_column:
        names = read_columns(rows.path, layout, (audio_column,), optional=optional,
                             max_field_chars=max_field_chars)[audio_column]
        if "" in names:
            raise TranscriptError(f"{rows.path}, line {rows.lines[names.index('')]}: empty {audio_column!r}; "
                                  "every utterance needs its audio file")
        return [base / name for name in names]
    ids = read_columns(rows.path, layout, ("Dialogue_ID", "Utterance_ID"), optional=optional,
                       max_field_chars=max_field_chars)
    return [clips / f"dia{d}_utt{u}.wav" for d, u in zip(ids["Dialogue_ID"], ids["Utterance_ID"])]


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """The file's samples (mono float32) and rate; wav and flac directly, others through ffmpeg."""
    with open_regular_file(path, "audio file", AudioError) as handle:
        if path.suffix.lower() not in DIRECT_SUFFIXES:
            return _read_with_ffmpeg(path)
        import soundfile

        try:
            samples, rate = soundfile.read(handle, dtype="float32", always_2d=True)
        except (RuntimeError, soundfile.SoundFileError) as error:
            raise AudioError(f"unreadable audio file {path} ({error})") from None
    return samples.mean(axis=1), rate


def _read_with_ffmpeg(path: Path) -> tuple[np.ndarray, int]:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise AudioError(f"{path}: a {path.suffix or 'suffix-less'} file is read through ffmpeg, which is not on "
                         f"PATH; install ffmpeg or convert the file to wav or flac")
    command = [ffmpeg, "-nostdin", "-v", "error", "-i", str(path), "-vn", "-ac", "1", "-ar", str(SAMPLE_RATE),
               "-f", "f32le", "-"]
    done = subprocess.run(command, capture_output=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.decode(errors="replace").strip().splitlines() or ["no message"])[-1]
        raise AudioError(f"unreadable audio file {path} (ffmpeg: {last})")
    return np.frombuffer(done.stdout, dtype=np.float32), SAMPLE_RATE


def _problem(samples: np.ndarray, rate: int, path: Path) -> str | None:
    """Why the audio cannot give features (too short, non-finite, absurdly loud, silent), or None; a too
    low rate is an error."""
    if rate < MIN_SAMPLE_RATE:
        raise AudioError(f"{path}: sample rate {rate} Hz, under the {MIN_SAMPLE_RATE} Hz the features need")
    seconds = len(samples) / rate
    if seconds < MIN_SECONDS:
        return f"too short ({seconds:.3f} s < {MIN_SECONDS} s)"
    finite = np.isfinite(samples)
    if not finite.all():
        return f"non-finite samples ({np.count_nonzero(~finite)} of {len(samples)} NaN or infinite)"
    peak = float(np.abs(samples).max())
    if peak > MAX_PEAK:
        return f"absurd amplitude (peak {peak:.1e} > {MAX_PEAK:.0e})"
    if peak < SILENCE_PEAK:
        return f"silent (peak {peak:.1e} < {SILENCE_PEAK:.0e})"
    return None


def _resampled(samples: np.ndarray, rate: int) -> np.ndarray:
    if rate == SAMPLE_RATE:
        return samples
    from scipy.signal import resample_poly

    common = gcd(rate, SAMPLE_RATE)
    return resample_poly(samples, SAMPLE_RATE // common, rate // common).astype(np.float32)


# --- extraction and its cache --------------------------------------------------------------------------------


def extract_audio_features(utterances: list[Utterance], feature_set: str, cache_dir: Path,
                           workers: int | None) -> tuple[dict[Path, np.ndarray], list[Skipped]]:
    """Each usable file's features and the utterances whose audio is unusable (in order).

    Files already in ``cache_dir`` are read from it; the others are extracted by ``workers``
    processes (1: in this process), each result cached as soon as it is made."""
    keys = {u.audio: cache_key(u.audio, feature_set) for u in utterances}
    todo = [path for path, key in keys.items() if not cached_file(cache_dir, key).is_file()]
    reasons = dict(zip(todo, _run_extraction(todo, [keys[p] for p in todo], feature_set, cache_dir, workers)))
    features = {path: _read_cached(cache_dir, key, FEATURE_SETS[feature_set])
                for path, key in keys.items() if reasons.get(path) is None}
    skipped = [Skipped(**asdict(u), reason=reasons[u.audio]) for u in utterances if reasons.get(u.audio) is not None]
    return features, skipped


def cache_key(path: Path, feature_set: str) -> str:
    """The file's content and the feature set: a moved or renamed file keeps its key, an edited one does not."""
    digest = hashlib.sha256()
    with open_regular_file(path, "audio file", AudioError) as f:
        try:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
        except OSError as error:
            raise AudioError(f"unreadable audio file {path} ({error.strerror})") from None
    identity = f"{digest.hexdigest()}|{feature_set}|{_version('opensmile')}|{SAMPLE_RATE}|{CACHE_VERSION}"
    return hashlib.sha256(identity.encode()).hexdigest()[:32]


def _run_extraction(paths: list[Path], keys: list[str], feature_set: str, cache_dir: Path,
                    workers: int | None) -> list[str | None]:
    """Extract and cache each file; its problem (why it gives no features) or None, in order. The
    progress bar counts each file as it finishes; an error cancels the files not started."""
    if not paths:
        return []
    cache_dir.mkdir(parents=True, exist_ok=True)
    workers = min(workers or os.cpu_count() or 1, len(paths))
    with tqdm(total=len(paths), desc=f"openSMILE {feature_set}", unit="file") as bar:
        if workers == 1:
            results = []
            for path, key in zip(paths, keys):
                results.append(extract_one(path, key, feature_set, cache_dir))
                bar.update(1)
            return results
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(extract_one, path, key, feature_set, cache_dir) for path, key in zip(paths, keys)]
            try:
                for future in as_completed(futures):
                    future.result()  # the first error stops the build
                    bar.update(1)
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise
            return [future.result() for future in futures]


def extract_one(path: Path, key: str, feature_set: str, cache_dir: Path) -> str | None:
    """Extract one file's features into the cache; the reason it cannot give features, or None."""
    samples, rate = read_audio(path)
    problem = _problem(samples, rate, path)
    if problem is not None:
        return problem
    features = _smile(feature_set).process_signal(_resampled(samples, rate), SAMPLE_RATE)
    vector = features.to_numpy(dtype=np.float32).reshape(-1)
    if not np.isfinite(vector).all():
        return "openSMILE gave non-finite features"
    with atomic_open(cached_file(cache_dir, key)) as handle:
        np.savez(handle, features=vector, key=np.array(key), sha256=np.array(_digest(key, vector)))
    return None


def cached_file(cache_dir: Path, key: str) -> Path:
    return cache_dir / f"{key}.npz"


def _digest(key: str, vector: np.ndarray) -> str:
    """The checksum of a cache entry: its key (what it is for) and its vector."""
    return hashlib.sha256(key.encode() + np.ascontiguousarray(vector).tobytes()).hexdigest()


def _read_cached(cache_dir: Path, key: str, dim: int) -> np.ndarray:
    """The feature vector cached under ``key``, checked against the key and checksum written with it."""
    path = cached_file(cache_dir, key)
    advice = "delete it and build again (only that file is extracted again)"
    members = {"features": ((dim,), np.dtype(np.float32)), "key": ((), np.dtype("<U32")),
               "sha256": ((), np.dtype("<U64"))}
    try:
        with zipfile.ZipFile(path) as archive:
            saved = {name: _bounded_member(archive, f"{name}.npy", *kind) for name, kind in members.items()}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise AudioError(f"damaged feature cache file {path} ({error}); {advice}") from None
    vector, stored_key, digest = saved["features"], str(saved["key"]), str(saved["sha256"])
    if stored_key != key:
        raise AudioError(f"feature cache file {path} holds the features of another file or feature set (its record "
                         f"says key {stored_key}, renamed or swapped with another entry); {advice}")
    if digest != _digest(key, vector):
        raise AudioError(f"feature cache file {path} differs from the checksum written with it; {advice}")
    return vector


_NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _bounded_member(archive: zipfile.ZipFile, name: str, shape: tuple, dtype: np.dtype) -> np.ndarray:
    """Member ``name`` of an .npz archive, which must hold an array of ``shape`` and ``dtype``: its size
    and its .npy header are checked before anything is decompressed beyond the header."""
    info = archive.getinfo(name)
    most = NPY_HEADER_BYTES + int(np.prod(shape)) * dtype.itemsize
    if info.file_size > most:
        raise ValueError(f"{name} unpacks to {info.file_size} bytes, more than the {most} of a {dtype}{list(shape)}")
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version not in _NPY_HEADER_READERS:
            raise ValueError(f"{name}: .npy format {version} is not one numpy.savez writes")
        found_shape, _, found_dtype = _NPY_HEADER_READERS[version](member)
        if (found_shape, found_dtype) != (shape, dtype):
            raise ValueError(f"{name} holds {found_dtype}{list(found_shape)}, not {dtype}{list(shape)}")
    with archive.open(info) as member:
        return np.lib.format.read_array(member, allow_pickle=False)


_SMILES: dict = {}  # one openSMILE extractor per feature set and process


def _smile(feature_set: str):
    if feature_set not in _SMILES:
        import opensmile

        _SMILES[feature_set] = opensmile.Smile(feature_set=opensmile.FeatureSet[feature_set],
                                               feature_level=opensmile.FeatureLevel.Functionals)
    return _SMILES[feature_set]


def _problems_message(problems: list[Skipped]) -> str:
    return (f"{describe_problems(problems)}; fix or remove them, or pass --skip-bad-audio to drop those utterances "
            "(they are then listed in the manifest)")


def describe_problems(problems: list[Skipped]) -> str:
    """How many utterances have unusable audio, the first five files and why."""
    shown = "; ".join(f"{s.audio} ({s.reason})" for s in problems[:5])
    more = f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
    return f"{len(problems)} utterance(s) have unusable audio: {shown}{more}"


def _without(rows: SplitRows, dropped: set[int], split: str) -> SplitRows:
    """``rows`` without the rows ``dropped``; a dialogue left empty is dropped too."""
    if not dropped:
        return rows
    order, lengths, ids = [], [], []
    for d, dialogue_id in enumerate(rows.dialogue_ids):
        kept = [i for i in rows.order[rows.offsets[d]:rows.offsets[d + 1]] if i not in dropped]
        if kept:
            order.extend(kept)
            lengths.append(len(kept))
            ids.append(dialogue_id)
    if not order:
        raise AudioError(f"every utterance of split {split!r} has unusable audio; nothing is left to build from")
    return replace(rows, order=np.array(order, dtype=np.int64), dialogue_ids=ids,
                   offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))


# --- text and visual features, standardisation ---------------------------------------------------------------


def _text_features(rows: dict[str, SplitRows], text_model: str | PathLike | None,
                   embeddings: str | PathLike | None, text_dim: int, seed: int) -> tuple[dict[str, np.ndarray], object]:
    """One row per CSV row of each split, and the featuriser's text part: the sentence model's embeddings,
    else those of ``data.transcripts.text_features`` (the user's, or TF-IDF→SVD fitted on train)."""
    if text_model is None:
        return text_features(rows, embeddings, text_dim, seed)
    text = SentenceEncoderText.of(Path(text_model))
    return {split: text.transform(r.texts, f"sentence encoding, {split}") for split, r in rows.items()}, text


def _check_text_options(text_model: str | PathLike | None, embeddings: str | PathLike | None) -> None:
    if text_model is not None and embeddings is not None:
        raise ValueError("--text-model and --embeddings both give the text features; choose one")
    if text_model is not None and not Path(text_model).is_dir():
        raise ValueError(f"--text-model {text_model}: no such folder; it must be a local sentence-transformers "
                         "model folder (nothing is downloaded)")


def load_sentence_model(folder: Path):
    """A sentence-transformers model from a local folder; never downloads."""
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"--text-model {folder}: not a loadable sentence-transformers model ({error})") from None


def _visual_features(csv_dir: Path, layout: Layout, paths: dict[str, Path], rows: dict[str, SplitRows],
                     column: str, max_field_chars: int, outside_allowed: bool) -> dict[str, np.ndarray]:
    """Each kept row's vector from the ``.npy`` file its ``column`` names (relative to ``csv_dir``)."""
    vectors: dict[str, dict[int, np.ndarray]] = {}
    dim = None
    for split, r in rows.items():
        names = read_columns(paths[split], layout, (column,), max_field_chars=max_field_chars)[column]
        files = [csv_dir / name for name in names]
        if not outside_allowed:
            check_inside(files, csv_dir, r, column)
        vectors[split] = {}
        for i in r.order.tolist():
            vectors[split][i] = vector = visual_vector(files[i], dim)
            dim = len(vector)
    return {split: _in_file_order(vectors[split], len(r.texts), dim) for split, r in rows.items()}


def _in_file_order(vectors: dict[int, np.ndarray], count: int, dim: int) -> np.ndarray:
    """Row i is ``vectors[i]``; the rows of dropped utterances (never used) are NaN."""
    out = np.full((count, dim), np.nan, dtype=np.float32)
    for i, vector in vectors.items():
        out[i] = vector
    return out


def visual_vector(path: Path, dim: int | None) -> np.ndarray:
    try:
        with open_regular_file(path, "visual features file") as handle:
            x = np.load(handle, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"visual features {path}: cannot read ({error})") from None
    x = np.squeeze(x)
    if x.ndim != 1 or x.dtype.kind not in "fiu" or not np.isfinite(x).all():
        raise ValueError(f"visual features {path}: expected a finite numeric vector, got {x.dtype}{list(x.shape)}")
    if dim is not None and len(x) != dim:
        raise ValueError(f"visual features {path}: dim {len(x)}, the first vector has {dim}")
    return x.astype(np.float32)


def _standardise(features: dict[str, dict[str, np.ndarray]], rows: dict[str, SplitRows],
                 modalities: tuple[str, ...]) -> dict[str, Standardisation]:
    """Scale each of ``modalities`` in place with the mean and std of the train split's utterances; returns them."""
    standardisations = {}
    for m in modalities:
        if m not in features["train"]:
            continue
        standardisations[m] = standardisation = Standardisation.fit(features["train"][m][rows["train"].order])
        for split in features:
            features[split][m] = standardisation.apply(features[split][m])
    return standardisations


# --- the record and the CLI ----------------------------------------------------------------------------------


def _source_record(csv_dir: Path, layout: Layout, corpus: Corpus, audio_features: str, text_model, embeddings,
                   audio_column, audio_dir, visual_column, skipped: list[Skipped]) -> dict:
    if text_model:
        text = {"extractor": "sentence-transformers", "model": str(Path(text_model).resolve()),
                "version": _version("sentence-transformers")}
    elif embeddings:
        text = {"extractor": "embeddings", "folder": str(Path(embeddings).resolve())}
    else:
        text = {"extractor": "tfidf-svd", "dim": corpus.dims["t"], "version": _version("scikit-learn")}
    return {
        "kind": CONVERSATIONS,
        "layout": layout.name,
        "modalities": corpus.modalities,
        "text": text,
        "audio": {
            "extractor": "openSMILE", "feature_set": audio_features, "level": "functionals",
            "sample_rate": SAMPLE_RATE, "standardised": "train mean/std",
            "files": {"column": audio_column} if audio_column else {"meld_dir": str(Path(audio_dir).resolve())},
            "versions": {p: _version(p) for p in ("opensmile", "soundfile", "numpy", "scipy")},
        },
        "visual": {"column": visual_column, "standardised": "train mean/std"} if visual_column else None,
        "skipped": [dict(asdict(s), audio=str(s.audio)) for s in skipped],
        "files": {split: file_record(path) for split, path in split_paths(csv_dir, layout).items()},
    }


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def build_parser() -> argparse.ArgumentParser:
    parser = transcripts_parser()
    parser.prog = "python -m ada2i_fast.data.conversations"
    parser.description = ("Build a text + audio (+ visual) corpus from transcript CSVs and an audio file per "
                          "utterance; train on it with --data OUT.")
    group = parser.add_argument_group("audio and visual")
    group.add_argument("--audio-column", metavar="NAME",
                       help="column holding each utterance's audio file, relative to --csv-dir")
    group.add_argument("--audio-dir", metavar="DIR",
                       help="--layout meld: DIR/{split}/dia{Dialogue_ID}_utt{Utterance_ID}.wav, split train/dev/test")
    group.add_argument("--audio-features", choices=tuple(FEATURE_SETS), default="eGeMAPSv02",
                       help="openSMILE functionals (default: eGeMAPSv02)")
    group.add_argument("--visual-column", metavar="NAME",
                       help="column holding each utterance's visual feature vector (.npy), relative to --csv-dir")
    group.add_argument("--text-model", metavar="DIR",
                       help="a local sentence-transformers model folder for the text features, instead of TF-IDF")
    group.add_argument("--feature-cache", metavar="DIR",
                       help="where extracted audio features are cached (default: OUT.features beside --out)")
    group.add_argument("--workers", type=int, help="extraction processes (default: every core)")
    group.add_argument("--skip-bad-audio", action="store_true",
                       help="drop utterances whose audio is silent, too short, non-finite (NaN, inf) or of absurd "
                       f"amplitude (peak over {MAX_PEAK:g}) (listed) instead of stopping")
    group.add_argument(OUTSIDE_FLAG, action="store_true",
                       help="let --audio-column and --visual-column name files anywhere (absolute paths, '..', links "
                       "that lead out); by default each must lie inside --csv-dir")
    return parser


@user_errors_as_one_line
def main(argv=None) -> Built:
    args = build_parser().parse_args(argv)
    layout = layout_from_args(args)
    out = Path(args.out)
    check_replaceable(out)  # before the extraction, which may take hours
    built = build_conversation_corpus(
        args.csv_dir, layout, audio_column=args.audio_column, audio_dir=args.audio_dir,
        visual_column=args.visual_column, audio_features=args.audio_features, text_model=args.text_model,
        embeddings=args.embeddings, text_dim=args.text_dim, feature_cache=args.feature_cache or f"{out}.features",
        workers=args.workers, skip_bad_audio=args.skip_bad_audio, seed=args.seed, max_field_chars=args.max_field_chars,
        max_dialogue_length=args.max_dialogue_length, paths_outside_csv_dir=args.allow_paths_outside_csv_dir,
    )
    write_cache(built.corpus, out, source=built.source, featuriser=built.featuriser)
    for s in built.skipped:
        print(f"skipped {s.split} line {s.csv_line}: {s.audio} ({s.reason})")
    corpus = built.corpus
    sizes = ", ".join(f"{name} {s.num_dialogues}/{s.num_utterances}" for name, s in corpus.splits.items())
    dims = ", ".join(f"{m} {d}" for m, d in corpus.dims.items())
    print(f"wrote {out}: {sizes} (dialogues/utterances), dims {dims}, {len(built.skipped)} skipped, "
          f"classes {', '.join(corpus.classes)}; train with --data {out} --modalities {corpus.modalities}")
    return built


if __name__ == "__main__":
    main()
