"""What turns conversations into a corpus's features, kept with the corpus and with every model trained on it.

A corpus built from transcripts (``data.transcripts``, ``data.conversations``) keeps its featuriser in
its folder's ``featuriser/``, and a finished run's ``model/`` a copy of it, in safe formats only
(JSON and ``.npy`` read with ``allow_pickle=False``; nothing is unpickled):

* ``featuriser.json``: the CSV layout (column names), the class names, and per modality how its
  features are made: text by TF-IDF→SVD (the vectoriser's settings and vocabulary), by a local
  sentence-transformers model (its folder, name and package version) or the user's own embeddings
  (which no code here can compute for new text); audio by openSMILE (the feature set); visual from a
  ``.npy`` per utterance; a checksum of itself and the shape, dtype and sha256 of every array;
* ``text_idf.npy`` and ``text_components.npy`` (the TF-IDF idf and the SVD components, float32),
  ``audio_mean.npy``/``audio_std.npy`` and ``visual_mean.npy``/``visual_std.npy`` (the train split's
  standardisation).

:meth:`Featuriser.features` computes what the corpus holds for the same utterances. The corpus's text
features are scikit-learn's (``TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)``, then
``TruncatedSVD``), computed as every version of the builders computed them (a rebuilt corpus is the
same corpus); :meth:`TfidfSvdText.transform` is that transform written out over the saved arrays,
equal to it to float32 rounding. The sentence model, openSMILE and the standardisations run the
builders' own code.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..checkpointing.json_files import read_json
from ..modalities import in_order
from .cache import (
    FEATURISER, CacheError, array_sha256, manifest_checksum, new_temp_dir, read_manifest, replace_dir,
)
from .progress import stage

FORMAT = "ada2i-featuriser"
VERSION = 1
DESCRIPTION = "featuriser.json"
# The vectoriser's settings the transform below implements (the rest are scikit-learn's defaults).
TFIDF = dict(ngram_range=(1, 2), sublinear_tf=True, lowercase=True, token_pattern=r"(?u)\b\w\w+\b", norm="l2",
             use_idf=True, smooth_idf=True, analyzer="word", strip_accents=None, stop_words=None)
CHUNK = 2048  # utterances per step of a transform's progress bar


class FeaturiserError(ValueError):
    """A featuriser is missing, damaged, or cannot compute what is asked of it; one line says why."""


# --- text ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TfidfSvdText:
    """TF-IDF over word 1-2-grams with sublinear tf, l2-normalised, then the SVD's projection."""

    vocabulary: tuple[str, ...]  # the term of each TF-IDF column
    idf: np.ndarray  # [V] float64
    components: np.ndarray  # [dim, V] float32, TruncatedSVD.components_
    kind = "tfidf-svd"

    @property
    def dim(self) -> int:
        return self.components.shape[0]

    def transform(self, texts: Sequence[str], description: str = "TF-IDF -> SVD") -> np.ndarray:
        """[len(texts), dim] float32: ``svd.transform(vectorizer.transform(texts))`` from the saved arrays
        (to float32 rounding: the components are kept in float32)."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        with tqdm(total=len(texts), desc=description, unit="utt") as bar:
            for start in range(0, len(texts), CHUNK):
                chunk = texts[start:start + CHUNK]
                out[start:start + len(chunk)] = self._tfidf(chunk) @ self.components.T
                bar.update(len(chunk))
        return out

    def _tfidf(self, texts: Sequence[str]):
        """The l2-normalised TF-IDF rows of ``texts`` (scikit-learn's, term for term), float32 CSR."""
        from scipy.sparse import csr_matrix

        index = self._index
        rows, columns = [], []
        for row, text in enumerate(texts):
            for term in _terms(text):
                column = index.get(term)
                if column is not None:
                    rows.append(row)
                    columns.append(column)
        counts = csr_matrix((np.ones(len(rows)), (rows, columns)), shape=(len(texts), len(self.vocabulary)))
        counts.sum_duplicates()
        values = (np.log(counts.data) + 1.0) * self.idf[counts.indices]  # sublinear tf, then idf
        row_of = np.repeat(np.arange(len(texts)), np.diff(counts.indptr))
        norms = np.sqrt(np.bincount(row_of, weights=values * values, minlength=len(texts)))
        values /= norms[row_of]
        return csr_matrix((values.astype(np.float32), counts.indices, counts.indptr), shape=counts.shape)

    @functools.cached_property
    def _index(self) -> dict[str, int]:
        return {term: i for i, term in enumerate(self.vocabulary)}

    def record(self) -> dict:
        settings = {k: list(v) if isinstance(v, tuple) else v for k, v in TFIDF.items()}
        return {"kind": self.kind, "dim": self.dim, "settings": settings, "vocabulary": list(self.vocabulary),
                "scikit-learn": _version("scikit-learn")}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"text_idf": self.idf, "text_components": self.components}

    @classmethod
    def from_record(cls, record: dict, arrays: dict[str, np.ndarray], where: Path) -> "TfidfSvdText":
        settings = {k: tuple(v) if isinstance(v, list) else v for k, v in record.get("settings", {}).items()}
        if settings != TFIDF:
            raise FeaturiserError(f"{where}: TF-IDF settings {record.get('settings')} are not the ones this version "
                                  f"computes ({TFIDF}); rebuild the corpus with this version")
        text = cls(tuple(record["vocabulary"]), arrays["text_idf"], arrays["text_components"])
        if text.components.shape != (record["dim"], len(text.vocabulary)) or text.idf.shape != (len(text.vocabulary),):
            raise FeaturiserError(f"{where}: the SVD components {list(text.components.shape)} and idf "
                                  f"{list(text.idf.shape)} do not fit a vocabulary of {len(text.vocabulary)} terms "
                                  f"and text dim {record['dim']}")
        return text


@dataclass(frozen=True, eq=False)
class FittedTfidfSvd:
    """scikit-learn's vectoriser and SVD as fitted on the training split, and the training features they gave."""

    vectorizer: object  # TfidfVectorizer(**TFIDF)
    svd: object  # TruncatedSVD
    train: np.ndarray  # [N, dim] float32: svd.fit_transform's

    def transform(self, texts: Sequence[str], description: str) -> np.ndarray:
        """[len(texts), dim] float32: scikit-learn's transform, as the corpus builders have always computed
        it (chunks for the progress bar give the same rows: each row depends on its text only)."""
        out = np.empty((len(texts), self.svd.n_components), dtype=np.float32)
        with tqdm(total=len(texts), desc=description, unit="utt") as bar:
            for start in range(0, len(texts), CHUNK):
                chunk = texts[start:start + CHUNK]
                out[start:start + len(chunk)] = self.svd.transform(self.vectorizer.transform(chunk))
                bar.update(len(chunk))
        return out

    def featuriser(self) -> TfidfSvdText:
        vocabulary = self.vectorizer.vocabulary_
        return TfidfSvdText(tuple(sorted(vocabulary, key=vocabulary.get)), self.vectorizer.idf_.astype(np.float64),
                            self.svd.components_.astype(np.float32))


def fit_tfidf_svd(texts: Sequence[str], text_dim: int, seed: int) -> FittedTfidfSvd:
    """Fit the vectoriser and TruncatedSVD(``text_dim``, ``random_state=seed``) on ``texts`` (the training
    split). Fewer components than ``text_dim`` when the texts have too few distinct terms or utterances,
    said on stdout; none at all is a ``FeaturiserError``."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(**TFIDF)
    with stage(f"fitting TF-IDF on {len(texts)} training utterances"):
        train = vectorizer.fit_transform(texts)
    rows, terms = train.shape
    dim = min(text_dim, terms - 1, rows - 1)
    if dim < 1:
        raise FeaturiserError(f"the training transcripts give {terms} distinct terms in {rows} utterances; "
                              "too few for features")
    if dim < text_dim:
        limit = f"{terms} distinct terms" if terms <= rows else f"{rows} utterances"
        tqdm.write(f"text dim {dim}, not {text_dim}: the training transcripts give only {limit} (TruncatedSVD "
                   f"keeps at most one fewer components)")
    svd = TruncatedSVD(n_components=dim, random_state=seed)
    with stage(f"fitting TruncatedSVD: {dim} components of {rows} x {terms} TF-IDF"):
        features = svd.fit_transform(train)
    return FittedTfidfSvd(vectorizer, svd, features.astype(np.float32))


_TOKEN = re.compile(TFIDF["token_pattern"])


def _terms(text: str) -> list[str]:
    """scikit-learn's word analyser: lowercase, tokens of 2+ word characters, then the 1- and 2-grams."""
    tokens = _TOKEN.findall(text.lower())
    return tokens + [f"{a} {b}" for a, b in zip(tokens, tokens[1:])]


@dataclass(frozen=True)
class SentenceEncoderText:
    """Embeddings of a local sentence-transformers model folder (loaded with local files only)."""

    model: str  # the folder, resolved
    dim: int
    version: str | None  # of sentence-transformers
    kind = "sentence-transformers"

    @classmethod
    def of(cls, folder: Path) -> "SentenceEncoderText":
        """The text part of the model in ``folder`` (loaded once per process)."""
        model = str(Path(folder).resolve())
        encoder = _sentence_encoder(model)
        dim = len(encoder.encode(["a"])[0])  # the dimension's accessor was renamed across versions
        return cls(model, dim, _version("sentence-transformers"))

    def transform(self, texts: Sequence[str], description: str = "sentence encoding") -> np.ndarray:
        """[len(texts), dim] float32, in one ``encode`` call (it batches by length; its bar counts the batches)."""
        folder = Path(self.model)
        if not folder.is_dir():
            raise FeaturiserError(f"the text features come from the sentence-transformers model {self.model}, which "
                                  f"is not on this machine; put it there, or name its copy with --text-model DIR "
                                  f"(text_model= in Python)")
        tqdm.write(f"{description} ({folder.name}): {len(texts)} utterances")
        return _sentence_encoder(self.model).encode(list(texts), batch_size=64, convert_to_numpy=True,
                                                    show_progress_bar=True).astype(np.float32)

    def record(self) -> dict:
        return {"kind": self.kind, "dim": self.dim, "model": self.model, "name": Path(self.model).name,
                "sentence-transformers": self.version}

    def arrays(self) -> dict[str, np.ndarray]:
        return {}

    @classmethod
    def from_record(cls, record: dict, arrays: dict, where: Path) -> "SentenceEncoderText":
        return cls(record["model"], record["dim"], record.get("sentence-transformers"))


@dataclass(frozen=True)
class OwnEmbeddingsText:
    """The user's own embeddings (``--embeddings DIR``): nothing here can compute them for new text."""

    folder: str
    dim: int
    kind = "embeddings"

    def transform(self, texts: Sequence[str], description: str = "") -> np.ndarray:
        raise FeaturiserError(f"the corpus's text features are your own embeddings (--embeddings {self.folder}): "
                              "this model cannot featurise new text; embed your conversations the same way and call "
                              "model.predict on a Batch of them")

    def record(self) -> dict:
        return {"kind": self.kind, "dim": self.dim, "folder": self.folder}

    def arrays(self) -> dict[str, np.ndarray]:
        return {}

    @classmethod
    def from_record(cls, record: dict, arrays: dict, where: Path) -> "OwnEmbeddingsText":
        return cls(record["folder"], record["dim"])


@functools.lru_cache(maxsize=2)
def _sentence_encoder(folder: str):
    from .conversations import load_sentence_model

    return load_sentence_model(Path(folder))


TEXT_KINDS = {kind.kind: kind for kind in (TfidfSvdText, SentenceEncoderText, OwnEmbeddingsText)}


# --- audio and visual ----------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Standardisation:
    """The train split's mean and std of a modality's features (a constant feature's std is 1)."""

    mean: np.ndarray  # [d] float32
    std: np.ndarray  # [d] float32

    @classmethod
    def fit(cls, train: np.ndarray) -> "Standardisation":
        mean, std = train.mean(axis=0), train.std(axis=0)
        std[std < 1e-6] = 1.0  # a constant feature stays constant (zero) instead of dividing by zero
        return cls(mean.astype(np.float32), std.astype(np.float32))

    def apply(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)


@dataclass(frozen=True, eq=False)
class AudioFeatures:
    """openSMILE functionals of each utterance's audio file, standardised with the train split's statistics."""

    feature_set: str
    standardisation: Standardisation
    files: dict  # how the corpus named its files: {"column": NAME} or {"meld_dir": DIR}

    @property
    def dim(self) -> int:
        return len(self.standardisation.mean)

    def transform(self, paths: Sequence[Path], cache_dir: Path, workers: int | None) -> np.ndarray:
        from .conversations import Utterance, describe_problems, extract_audio_features

        utterances = [Utterance("new", i, i + 1, Path(p)) for i, p in enumerate(paths)]
        features, problems = extract_audio_features(utterances, self.feature_set, cache_dir, workers)
        if problems:
            raise FeaturiserError(f"{describe_problems(problems)}; fix or remove them")
        return self.standardisation.apply(np.stack([features[u.audio] for u in utterances]))


@dataclass(frozen=True, eq=False)
class VisualFeatures:
    """A ``.npy`` vector per utterance, standardised with the train split's statistics."""

    column: str
    standardisation: Standardisation

    @property
    def dim(self) -> int:
        return len(self.standardisation.mean)

    def transform(self, paths: Sequence[Path]) -> np.ndarray:
        from .conversations import visual_vector

        return self.standardisation.apply(np.stack([visual_vector(Path(p), self.dim) for p in paths]))


# --- the featuriser, on disk ---------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Featuriser:
    """How a corpus's features were made, per modality; ``layout`` (the CSV columns, as
    ``data.transcripts.Layout`` fields) and ``classes`` say how its transcripts were read."""

    layout: dict
    classes: tuple[str, ...]
    text: TfidfSvdText | SentenceEncoderText | OwnEmbeddingsText
    audio: AudioFeatures | None = None
    visual: VisualFeatures | None = None
    folder: Path | None = None  # where it was read from (saving elsewhere links or copies its files)
    checksum: str | None = None  # of featuriser.json, as read from it

    @property
    def modalities(self) -> str:
        return in_order([m for m, part in (("a", self.audio), ("t", self.text), ("v", self.visual)) if part])

    @property
    def dims(self) -> dict[str, int]:
        parts = {"a": self.audio, "t": self.text, "v": self.visual}
        return {m: parts[m].dim for m in self.modalities}

    def features(self, modalities: str, texts: Sequence[str], audio: Sequence[Path] | None = None,
                 visual: Sequence[Path] | None = None, *, cache_dir: Path | None = None,
                 workers: int | None = None) -> dict[str, np.ndarray]:
        """Each of ``modalities``' features of the utterances (float32 [N, d_m], in the order given): what
        the corpus holds for the same utterances. ``audio``/``visual``: each utterance's file, where asked
        for; extracted audio features are cached in ``cache_dir``."""
        missing = [m for m in modalities if m not in self.modalities]
        if missing:
            raise FeaturiserError(f"the corpus has no modality {missing[0]!r} (it has {self.modalities!r})")
        out = {}
        if "a" in modalities:
            out["a"] = self.audio.transform(_needed(audio, len(texts), "audio"), cache_dir, workers)
        if "t" in modalities:
            out["t"] = self.text.transform(texts)
        if "v" in modalities:
            out["v"] = self.visual.transform(_needed(visual, len(texts), "visual"))
        return out

    def save(self, folder: Path) -> str:
        """Write the featuriser into ``folder`` (replaced whole, atomically): its files are linked, or
        copied, from the folder it was read from; otherwise written. Returns its checksum."""
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = new_temp_dir(folder)
        try:
            if self.folder is not None:
                checksum = self.checksum
                for source in self.folder.iterdir():
                    _link_or_copy(source, tmp / source.name)
            else:
                description = self._description()
                checksum = manifest_checksum(description)
                for name, array in self._arrays().items():
                    np.save(tmp / f"{name}.npy", array, allow_pickle=False)
                (tmp / DESCRIPTION).write_text(json.dumps({**description, "checksum": checksum}))
            replace_dir(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return checksum

    def _arrays(self) -> dict[str, np.ndarray]:
        arrays = dict(self.text.arrays())
        for name, part in (("audio", self.audio), ("visual", self.visual)):
            if part is not None:
                arrays[f"{name}_mean"], arrays[f"{name}_std"] = part.standardisation.mean, part.standardisation.std
        return arrays

    def _description(self) -> dict:
        arrays = {name: {"shape": list(a.shape), "dtype": str(a.dtype), "sha256": array_sha256(a)}
                  for name, a in self._arrays().items()}
        audio = self.audio and {"feature_set": self.audio.feature_set, "dim": self.audio.dim, "files": self.audio.files}
        visual = self.visual and {"column": self.visual.column, "dim": self.visual.dim}
        return {"format": FORMAT, "version": VERSION, "layout": self.layout, "classes": list(self.classes),
                "text": self.text.record(), "audio": audio, "visual": visual, "arrays": arrays}

    @classmethod
    def load(cls, folder: Path) -> "Featuriser":
        """The featuriser in ``folder``, every array checked against the checksum written with it."""
        folder = Path(folder)
        path = folder / DESCRIPTION
        try:
            description = read_json(path)
        except ValueError as error:
            raise FeaturiserError(f"{error} (an unreadable featuriser)") from None
        if not isinstance(description, dict) or description.get("format") != FORMAT:
            raise FeaturiserError(f"{path}: not an {FORMAT} file")
        if description.get("checksum") != manifest_checksum(description):
            raise FeaturiserError(f"{path}: modified after it was written (checksum mismatch)")
        if description.get("version") != VERSION:
            raise FeaturiserError(f"{path}: featuriser version {description.get('version')!r}, this code reads "
                                  f"{VERSION}; rebuild the corpus with this version")
        try:
            arrays = {name: _load_array(folder / f"{name}.npy", spec) for name, spec in description["arrays"].items()}
            text = TEXT_KINDS[description["text"]["kind"]].from_record(description["text"], arrays, path)
            audio, visual = description["audio"], description["visual"]
            return cls(
                layout=dict(description["layout"]),
                classes=tuple(description["classes"]),
                text=text,
                audio=audio and AudioFeatures(audio["feature_set"], _standardisation(arrays, "audio"), audio["files"]),
                visual=visual and VisualFeatures(visual["column"], _standardisation(arrays, "visual")),
                folder=folder,
                checksum=description["checksum"],
            )
        except (KeyError, TypeError, AttributeError) as error:
            raise FeaturiserError(f"{path}: malformed featuriser ({type(error).__name__}: {error})") from None


def _needed(paths, count: int, modality: str) -> Sequence[Path]:
    if paths is None or len(paths) != count:
        found = "none" if paths is None else len(paths)
        raise FeaturiserError(f"the model uses {modality}: it needs one {modality} file per utterance ({count}), "
                              f"got {found}")
    return paths


def _standardisation(arrays: dict, name: str) -> Standardisation:
    return Standardisation(arrays[f"{name}_mean"], arrays[f"{name}_std"])


def _load_array(path: Path, spec: dict) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False, mmap_mode="r")
    except Exception as error:  # noqa: BLE001 - numpy's header parser raises more than ValueError
        raise FeaturiserError(f"{path}: unreadable or truncated ({type(error).__name__}: {error})") from None
    if list(array.shape) != spec["shape"] or str(array.dtype) != spec["dtype"] or array_sha256(array) != spec["sha256"]:
        raise FeaturiserError(f"{path}: differs from the checksum written with it (damaged or edited)")
    return array


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link (files are never changed in place, only replaced), or a copy across file systems."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def corpus_featuriser(source: str) -> Featuriser:
    """The featuriser of the corpus at ``source`` (a corpus's ``source``: its folder, a legacy pickle or
    a synthetic corpus's description); a ``FeaturiserError`` says why there is none."""
    advice = ("nothing here can featurise new conversations for it; to predict on new conversations, build a corpus "
              "from transcripts (python -m ada2i_fast.data.transcripts or data.conversations) and train on it")
    if str(source).startswith("synthetic"):
        raise FeaturiserError(f"the model was trained on a {source}, not on real conversations: {advice}")
    directory = Path(source)
    if not directory.exists():
        raise FeaturiserError(f"the corpus the model was trained on, {directory}, is not on this machine (a finished "
                              "run's model/ carries a copy of its featuriser; this model has none)")
    if not directory.is_dir():
        raise FeaturiserError(f"the model was trained on the legacy pickle {directory}, whose features were made "
                              f"elsewhere: {advice}")
    try:
        manifest = read_manifest(directory)
    except CacheError as error:
        raise FeaturiserError(str(error)) from None
    record = manifest.get("featuriser")
    if record is None:
        kind = manifest["source"].get("kind")
        if kind in ("transcripts", "conversations"):
            raise FeaturiserError(f"the corpus {directory} was built before corpora kept their featuriser: rebuild it "
                                  f"in place with the command that built it (the same data gives the same features, "
                                  f"so models trained on it find the featuriser there)")
        raise FeaturiserError(f"the corpus {directory} is the cache of a legacy pickle, whose features were made "
                              f"elsewhere: {advice}")
    featuriser = Featuriser.load(directory / FEATURISER)
    if featuriser.checksum != record["checksum"]:
        raise FeaturiserError(f"{directory / FEATURISER}: not the featuriser the corpus's manifest records")
    return featuriser


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
