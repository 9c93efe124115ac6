"""Corpora from conversation transcripts (CSV files, one per split): text-only, features from scikit-learn.

    python -m ada2i_fast.data.transcripts --csv-dir DIR --layout meld --out PATH
    python -m ada2i_fast.train --dataset meld --data PATH

Layouts: ``meld`` (MELD's ``{train,dev,test}_sent_emo.csv``), ``emorynlp`` (EmoryNLP's
``emorynlp_{split}_final.csv``, a dialogue is a scene of an episode of a season) and ``generic``
(every column name and the file pattern are flags). ``--train-file`` and its kin name a split's
file instead of the pattern; two splits never read one file. Utterances are grouped into dialogues
in the order the file first names them and ordered by their utterance id; speakers become int ids.
Fields longer than ``--max-field-chars``, dialogues longer than ``--max-dialogue-length`` and
corpora larger than the available memory are refused.

Text features are TF-IDF (word 1–2-grams, sublinear tf) followed by TruncatedSVD to ``text_dim``
columns, both fitted on the training split only (fewer columns when the training transcripts have
too few distinct terms, said when it happens), or the user's own embeddings (``{split}.npy``, one
row per CSV row in file order). The result is a columnar cache (``cache.write_cache``) that records
its layout, class names, source files and that audio and visual are absent, and keeps its
featuriser (``data.featuriser``: the layout, the vectoriser's vocabulary and idf, the SVD components),
with which ``predict --csv`` featurises new conversations.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from os import PathLike
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..cli import user_errors_as_one_line
from ..datasets import DATASETS, SPLITS, TEXT_DIM
from .cache import check_replaceable, file_record, write_cache
from .corpus import Corpus, Split
from .featuriser import Featuriser, OwnEmbeddingsText, TfidfSvdText, fit_tfidf_svd
from ..memory import check_fits_in_memory, corpus_bytes

MAX_FIELD_CHARS = 131_072  # csv's own default limit
MAX_DIALOGUE_LENGTH = 1000  # MELD's longest dialogue has 33 utterances


class TranscriptError(ValueError):
    """A transcript file is missing, unreadable or holds a row that cannot be used; names file and line."""


@dataclass(frozen=True)
class Layout:
    """Where a transcript file keeps each field. ``classes`` None: the training labels, sorted."""

    name: str
    files: str  # file-name pattern; {split} is train, dev or test
    text: str
    speaker: str
    label: str
    dialogue: tuple[str, ...]  # the columns whose values together name a dialogue
    position: str  # the utterance's position within its dialogue (an integer)
    classes: tuple[str, ...] | None = None
    split_files: dict[str, str] = field(default_factory=dict)  # split -> file name, instead of ``files``


LAYOUTS = {
    "meld": Layout(
        "meld", "{split}_sent_emo.csv", "Utterance", "Speaker", "Emotion", ("Dialogue_ID",), "Utterance_ID",
        DATASETS["meld"].classes,  # the index order of the field's meld.pkl (SPEC §1)
    ),
    "emorynlp": Layout(
        "emorynlp", "emorynlp_{split}_final.csv", "Utterance", "Speaker", "Emotion",
        ("Season", "Episode", "Scene_ID"), "Utterance_ID",
        ("Neutral", "Joyful", "Peaceful", "Powerful", "Scared", "Mad", "Sad"),
    ),
    "generic": Layout("generic", "{split}.csv", "text", "speaker", "label", ("dialogue",), "position"),
}


@dataclass
class SplitRows:
    """One file's rows, in file order; ``order[i]`` is the row of the corpus's utterance i."""

    path: Path
    texts: list[str]
    labels: list[str] | None  # None: the file has no label column (new conversations to predict)
    speakers: list[str]  # "" where the file has no speaker column
    lines: list[int]  # each row's line in the file, for error messages
    order: np.ndarray
    dialogue_ids: list[str]
    offsets: np.ndarray


@dataclass(frozen=True)
class Built:
    """A corpus and the featuriser that made its features."""

    corpus: Corpus
    featuriser: Featuriser


def build_transcript_corpus(csv_dir: str | PathLike, layout: Layout | str = "meld", **options) -> Corpus:
    """The corpus of :func:`build_transcripts` (without its featuriser)."""
    return build_transcripts(csv_dir, layout, **options).corpus


def build_transcripts(
    csv_dir: str | PathLike,
    layout: Layout | str = "meld",
    *,
    text_dim: int = TEXT_DIM,
    embeddings: str | PathLike | None = None,
    seed: int = 0,
    max_field_chars: int = MAX_FIELD_CHARS,
    max_dialogue_length: int = MAX_DIALOGUE_LENGTH,
) -> Built:
    """The train/dev/test corpus of the transcripts in ``csv_dir`` (modality ``t`` only), validated,
    and its featuriser. A field longer than ``max_field_chars``, a dialogue of more than
    ``max_dialogue_length`` utterances and a corpus whose features would not fit in memory are refused."""
    layout = LAYOUTS[layout] if isinstance(layout, str) else layout
    csv_dir = Path(csv_dir)
    rows, classes = read_transcripts(csv_dir, layout, max_field_chars=max_field_chars,
                                     max_dialogue_length=max_dialogue_length)
    utterances = sum(len(r.texts) for r in rows.values())
    check_fits_in_memory(corpus_bytes(utterances, _feature_dim(embeddings, text_dim)),
                         f"a corpus of the {utterances} utterances in {csv_dir}",
                         "choose a smaller --text-dim or fewer transcripts")
    features, text = text_features(rows, embeddings, text_dim, seed)
    corpus = assemble_corpus(layout, classes, rows, {split: {"t": x} for split, x in features.items()}, csv_dir)
    return Built(corpus, Featuriser(layout_record(layout, classes), classes, text))


def layout_record(layout: Layout, classes: tuple[str, ...]) -> dict:
    """What a featuriser keeps of the layout: how to read new transcripts, with the corpus's classes."""
    return asdict(replace(layout, classes=tuple(classes)))


def read_transcripts(csv_dir: Path, layout: Layout, *, max_field_chars: int = MAX_FIELD_CHARS,
                     max_dialogue_length: int = MAX_DIALOGUE_LENGTH) -> tuple[dict[str, SplitRows], tuple[str, ...]]:
    """Each split's checked rows and the class names (the layout's, else the training labels, sorted)."""
    limits = dict(max_field_chars=max_field_chars, max_dialogue_length=max_dialogue_length)
    paths = split_paths(csv_dir, layout)
    rows = {split: _read_split(path, layout, split, **limits)
            for split, path in tqdm(paths.items(), desc="reading transcripts", unit="file")}
    classes = layout.classes or tuple(sorted(set(rows["train"].labels)))
    class_index = {name: i for i, name in enumerate(classes)}
    for split in SPLITS:
        check_labels(rows[split], layout, class_index)
    return rows, classes


def assemble_corpus(layout: Layout, classes: tuple[str, ...], rows: dict[str, SplitRows],
                    features: dict[str, dict[str, np.ndarray]], source: Path) -> Corpus:
    """The validated corpus of ``rows``; ``features[split][modality]`` has one row per CSV row, in file order."""
    class_index = {name: i for i, name in enumerate(classes)}
    speaker_ids: dict[str, int] = {}
    splits = {}
    for split, r in rows.items():
        splits[split] = Split(
            features={m: x[r.order] for m, x in features[split].items()},
            labels=np.array([class_index[r.labels[i]] for i in r.order], dtype=np.int64),
            speakers=np.array([speaker_ids.setdefault(r.speakers[i], len(speaker_ids)) for i in r.order], dtype=np.int64),
            offsets=r.offsets,
            dialogue_ids=tuple(r.dialogue_ids),
        )
    return Corpus(layout.name, classes, splits, source=str(source)).validate()


def split_paths(csv_dir: Path, layout: Layout) -> dict[str, Path]:
    """Each split's file: ``layout.split_files[split]``, else ``layout.files`` with {split} filled in.
    Refuses a pattern with another placeholder and one file for two splits (a pattern without
    {split} gives every split not named explicitly the same file)."""
    paths = {split: csv_dir / (layout.split_files.get(split) or _filled(layout.files, split)) for split in SPLITS}
    first_split = {}
    for split, path in paths.items():
        other = first_split.setdefault(path.resolve(), split)
        if other != split:
            raise TranscriptError(
                f"{other} and {split} would both read {path}: each split needs its own file; put {{split}} in "
                f"--files (now {layout.files!r}) or name each split's file with --train-file, --dev-file and --test-file"
            )
    return paths


def _filled(pattern: str, split: str) -> str:
    try:
        return pattern.format(split=split)
    except KeyError as error:
        raise TranscriptError(f"--files {pattern!r}: unknown placeholder {{{error.args[0]}}}; "
                              "the only one is {split}") from None
    except (IndexError, ValueError, AttributeError) as error:
        raise TranscriptError(f"--files {pattern!r}: {error}; the only placeholder is {{split}}") from None


def _read_split(path: Path, layout: Layout, split: str, *, max_field_chars: int, max_dialogue_length: int) -> SplitRows:
    if not path.is_file():
        expected = f"--{split}-file" if split in layout.split_files else f"layout {layout.name!r} expects {layout.files!r}"
        raise TranscriptError(f"missing split {split!r}: no file {path} ({expected})")
    return read_rows(path, layout, id_prefix=(split,), max_field_chars=max_field_chars,
                     max_dialogue_length=max_dialogue_length)


def read_rows(path: Path, layout: Layout, *, id_prefix: tuple[str, ...] = (), optional: tuple[str, ...] = (),
              max_field_chars: int = MAX_FIELD_CHARS, max_dialogue_length: int = MAX_DIALOGUE_LENGTH) -> SplitRows:
    """The rows of one transcript file, grouped into dialogues (ids: ``id_prefix`` and the dialogue
    columns' values, joined by ``_``) and ordered by position. Columns in ``optional`` (the speaker,
    the label) may be absent from the file."""
    texts, labels, speakers, lines = [], [], [], []
    dialogues: dict[tuple[str, ...], list[tuple[int, int]]] = {}  # dialogue -> (position, row) of its utterances
    with _csv_field_limit(max_field_chars):
        for line, row in _csv_rows(path, layout, optional):
            where = f"{path}, line {line}"
            utterance = (row[layout.text] or "").strip()
            if not utterance:
                raise TranscriptError(f"{where}: empty utterance")
            try:
                position = int(row[layout.position])
            except (TypeError, ValueError):
                raise TranscriptError(f"{where}: {layout.position} {row[layout.position]!r} is not an integer") from None
            dialogues.setdefault(tuple(row[c] for c in layout.dialogue), []).append((position, len(texts)))
            texts.append(utterance)
            labels.append((row.get(layout.label) or "").strip())
            speakers.append((row.get(layout.speaker) or "").strip())
            lines.append(line)
            labelled = layout.label in row  # every row has the header's columns
    if not texts:
        raise TranscriptError(f"{path}: no utterances")
    order, ids, offsets = _dialogue_order(path, layout, id_prefix, dialogues, lines, max_dialogue_length)
    return SplitRows(path, texts, labels if labelled else None, speakers, lines, order, ids, offsets)


def _dialogue_order(path: Path, layout: Layout, id_prefix: tuple[str, ...], dialogues: dict, lines: list[int],
                    max_dialogue_length: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    """The rows in corpus order (dialogue after dialogue, each by position), the dialogue ids and offsets."""
    order, lengths, ids = [], [], []
    for key, members in dialogues.items():
        if len(members) > max_dialogue_length:
            raise TranscriptError(
                f"{path}: dialogue {'/'.join(key)!r} has {len(members)} utterances, more than "
                f"--max-dialogue-length {max_dialogue_length}; raise it if the dialogue is meant to be that long"
            )
        members.sort()
        for (p, a), (q, b) in zip(members, members[1:]):
            if p == q:
                raise TranscriptError(
                    f"{path}, lines {lines[a]} and {lines[b]}: dialogue {'/'.join(key)!r} has two utterances "
                    f"at {layout.position} {p}"
                )
        order.extend(i for _, i in members)
        lengths.append(len(members))
        ids.append("_".join((*id_prefix, *key)))
    return np.array(order, dtype=np.int64), ids, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def _csv_rows(path: Path, layout: Layout, optional: tuple[str, ...] = ()) -> Iterator[tuple[int, dict]]:
    """The rows of the UTF-8 CSV file ``path`` with their line numbers, checked for ``layout``'s columns
    (but those in ``optional``)."""
    reader = csv.DictReader(io.StringIO(_utf8_text(path), newline=""))
    try:
        wanted = (layout.text, layout.speaker, layout.label, *layout.dialogue, layout.position)
        missing = [c for c in wanted if c not in (reader.fieldnames or ()) and c not in optional]
        if missing:
            raise TranscriptError(f"{path}: no column {missing[0]!r} (the file has {reader.fieldnames})")
        for row in reader:
            yield reader.line_num, row
    except csv.Error as error:
        advice = "; raise --max-field-chars if it is meant to be that long" if "field limit" in str(error) else ""
        raise TranscriptError(f"{path}, line {reader.reader.line_num}: {error}{advice}") from None


def read_columns(path: Path, layout: Layout, columns: tuple[str, ...], *, optional: tuple[str, ...] = (),
                 max_field_chars: int = MAX_FIELD_CHARS) -> dict[str, list[str]]:
    """Each of ``columns``' values in every row of ``path``, stripped, in file order (the layout's
    columns but those in ``optional`` must be there too)."""
    values: dict[str, list[str]] = {c: [] for c in columns}
    with _csv_field_limit(max_field_chars):
        for _, row in _csv_rows(path, layout, optional):
            for column in columns:
                if column not in row:
                    raise TranscriptError(f"{path}: no column {column!r} (the file has {list(row)})")
                values[column].append((row[column] or "").strip())
    return values


def _utf8_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise TranscriptError(
            f"{path}, line {line}: not UTF-8 (byte 0x{raw[error.start]:02x}); re-save the file as UTF-8"
        ) from None


@contextlib.contextmanager
def _csv_field_limit(chars: int):
    """csv's field limit, which is process-wide, set to ``chars`` for the block and restored afterwards."""
    previous = csv.field_size_limit(chars)
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def check_labels(rows: SplitRows, layout: Layout, class_index: dict[str, int]) -> None:
    for i, label in enumerate(rows.labels):
        if label not in class_index:
            raise TranscriptError(
                f"{rows.path}, line {rows.lines[i]}: unknown label {label!r} in column {layout.label!r}; "
                f"expected one of {', '.join(class_index)}"
            )


def text_features(rows: dict[str, SplitRows], embeddings: str | PathLike | None, text_dim: int,
                  seed: int) -> tuple[dict[str, np.ndarray], TfidfSvdText | OwnEmbeddingsText]:
    """Each split's text features (one row per CSV row) and the featuriser's text part: the user's
    embeddings (``embeddings``/{split}.npy), or TF-IDF→SVD fitted on train."""
    if embeddings is not None:
        features = read_embeddings(Path(embeddings), rows)
        return features, OwnEmbeddingsText(str(Path(embeddings).resolve()), features["train"].shape[1])
    fitted = fit_tfidf_svd(rows["train"].texts, text_dim, seed)
    features = {split: fitted.train if split == "train" else fitted.transform(r.texts, f"TF-IDF -> SVD, {split}")
                for split, r in rows.items()}
    return features, fitted.featuriser()


def _feature_dim(embeddings: str | PathLike | None, text_dim: int) -> int:
    """The features' width: ``text_dim`` for TF-IDF, else the train embeddings' (read from the .npy header)."""
    if embeddings is None:
        return text_dim
    try:
        shape = np.load(Path(embeddings) / "train.npy", mmap_mode="r", allow_pickle=False).shape
    except (OSError, ValueError):
        return text_dim  # read_embeddings names the file that cannot be read
    return shape[-1] if shape else text_dim


def read_embeddings(directory: Path, rows: dict[str, SplitRows]) -> dict[str, np.ndarray]:
    out = {}
    for split, r in rows.items():
        path = directory / f"{split}.npy"
        try:
            x = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise TranscriptError(f"{path}: cannot read the {split} embeddings ({error})") from None
        if x.ndim != 2 or len(x) != len(r.texts) or x.dtype.kind not in "fiu":
            raise TranscriptError(
                f"{path}: expected a numeric [rows, dim] array with one row per row of {r.path} "
                f"({len(r.texts)}), got {x.dtype}{list(x.shape)}"
            )
        if split != "train" and x.shape[1] != out["train"].shape[1]:
            raise TranscriptError(f"{path}: dim {x.shape[1]}, the train embeddings have {out['train'].shape[1]}")
        finite = np.isfinite(x).all(axis=1)
        if not finite.all():
            raise TranscriptError(f"{path}: row {int(np.flatnonzero(~finite)[0])} is not finite")
        out[split] = x.astype(np.float32)
    return out


_GENERIC_HELP = {
    "files": "file name pattern of the splits in --csv-dir; {split} becomes train, dev or test",
    "text": "column holding the utterance's text",
    "speaker": "column holding the speaker's name",
    "label": "column holding the emotion label",
    "position": "column holding the utterance's position (an integer) in its dialogue",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ada2i_fast.data.transcripts",
        description="Build a text-only corpus from transcript CSVs; train on it with --data OUT.",
    )
    parser.add_argument("--csv-dir", required=True, help="folder holding the train, dev and test CSV files (required)")
    parser.add_argument("--out", required=True, help="the corpus folder to write (required)")
    parser.add_argument("--layout", choices=tuple(LAYOUTS), default="meld",
                        help="meld: MELD's {split}_sent_emo.csv; emorynlp: EmoryNLP's emorynlp_{split}_final.csv; "
                        "generic: files and columns named by the flags below (default: meld)")
    parser.add_argument("--text-dim", type=int, default=TEXT_DIM,
                        help=f"TruncatedSVD components of the TF-IDF features (default: {TEXT_DIM})")
    parser.add_argument("--embeddings", metavar="DIR",
                        help="your own features instead of TF-IDF: DIR/{train,dev,test}.npy, one row per CSV row")
    parser.add_argument("--seed", type=int, default=0, help="TruncatedSVD's random state (default: 0)")
    for split in SPLITS:
        parser.add_argument(f"--{split}-file", metavar="NAME",
                            help=f"the {split} split's file in --csv-dir, instead of the layout's file pattern")
    parser.add_argument("--max-field-chars", type=int, default=MAX_FIELD_CHARS, metavar="N",
                        help=f"refuse a CSV field longer than N characters (default: {MAX_FIELD_CHARS})")
    parser.add_argument("--max-dialogue-length", type=int, default=MAX_DIALOGUE_LENGTH, metavar="N",
                        help=f"refuse a dialogue of more than N utterances (default: {MAX_DIALOGUE_LENGTH})")
    generic = parser.add_argument_group("generic layout")
    for name, help_text in _GENERIC_HELP.items():
        default = getattr(LAYOUTS["generic"], name)
        generic.add_argument(f"--{name}-column" if name != "files" else "--files", default=default, dest=name,
                             help=f"{help_text} (default: {default})")
    generic.add_argument("--dialogue-columns", default="dialogue",
                         help="comma-separated columns whose values together name a dialogue (default: dialogue)")
    generic.add_argument("--classes", help="comma-separated class names in index order (default: the training "
                         "labels, sorted)")
    return parser


def layout_from_args(args: argparse.Namespace) -> Layout:
    named = {split: getattr(args, f"{split}_file") for split in SPLITS if getattr(args, f"{split}_file")}
    if args.layout != "generic":
        return replace(LAYOUTS[args.layout], split_files=named)
    return replace(
        LAYOUTS["generic"],
        files=args.files, text=args.text, speaker=args.speaker, label=args.label, position=args.position,
        dialogue=tuple(c.strip() for c in args.dialogue_columns.split(",")),
        classes=tuple(c.strip() for c in args.classes.split(",")) if args.classes else None,
        split_files=named,
    )


@user_errors_as_one_line
def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    layout = layout_from_args(args)
    out = Path(args.out)
    check_replaceable(out)
    built = build_transcripts(
        args.csv_dir, layout, text_dim=args.text_dim, embeddings=args.embeddings, seed=args.seed,
        max_field_chars=args.max_field_chars, max_dialogue_length=args.max_dialogue_length,
    )
    corpus = built.corpus
    source = {
        "kind": "transcripts",
        "layout": layout.name,
        "modalities": corpus.modalities,  # text only: transcripts carry no audio or visual features
        "features": "embeddings" if args.embeddings else f"tfidf-svd-{corpus.dims['t']}",
        "files": {split: file_record(path) for split, path in split_paths(Path(args.csv_dir), layout).items()},
    }
    write_cache(corpus, args.out, source=source, featuriser=built.featuriser)
    sizes = ", ".join(f"{name} {s.num_dialogues}/{s.num_utterances}" for name, s in corpus.splits.items())
    print(f"wrote {args.out}: {sizes} (dialogues/utterances), text dim {corpus.dims['t']}, "
          f"classes {', '.join(corpus.classes)}; train with --data {args.out}")


if __name__ == "__main__":
    main()
