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
columns, both fitted on the training split only, or the user's own embeddings (``{split}.npy``,
one row per CSV row in file order). The result is a columnar cache (``cache.write_cache``) that
records its layout, class names, source files and that audio and visual are absent.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from os import PathLike
from pathlib import Path

import numpy as np

from ..cli import user_errors_as_one_line
from ..datasets import DATASETS, SPLITS, TEXT_DIM
from .cache import check_replaceable, file_record, write_cache
from .corpus import Corpus, Split
from .memory import check_fits_in_memory, corpus_bytes

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
    """One split's rows, in file order; ``order[i]`` is the row of the corpus's utterance i."""

    path: Path
    texts: list[str]
    labels: list[str]
    speakers: list[str]
    lines: list[int]  # each row's line in the file, for error messages
    order: np.ndarray
    dialogue_ids: list[str]
    offsets: np.ndarray


def build_transcript_corpus(
    csv_dir: str | PathLike,
    layout: Layout | str = "meld",
    *,
    text_dim: int = TEXT_DIM,
    embeddings: str | PathLike | None = None,
    seed: int = 0,
    max_field_chars: int = MAX_FIELD_CHARS,
    max_dialogue_length: int = MAX_DIALOGUE_LENGTH,
) -> Corpus:
    """The train/dev/test corpus of the transcripts in ``csv_dir`` (modality ``t`` only), validated.
    A field longer than ``max_field_chars``, a dialogue of more than ``max_dialogue_length``
    utterances and a corpus whose features would not fit in memory are refused."""
    layout = LAYOUTS[layout] if isinstance(layout, str) else layout
    csv_dir = Path(csv_dir)
    rows, classes = read_transcripts(csv_dir, layout, max_field_chars=max_field_chars,
                                     max_dialogue_length=max_dialogue_length)
    utterances = sum(len(r.texts) for r in rows.values())
    check_fits_in_memory(corpus_bytes(utterances, _feature_dim(embeddings, text_dim)),
                         f"a corpus of the {utterances} utterances in {csv_dir}",
                         "choose a smaller --text-dim or fewer transcripts")
    if embeddings is None:
        features = tfidf_svd({split: r.texts for split, r in rows.items()}, text_dim, seed)
    else:
        features = read_embeddings(Path(embeddings), rows)
    return assemble_corpus(layout, classes, rows, {split: {"t": x} for split, x in features.items()}, csv_dir)


def read_transcripts(csv_dir: Path, layout: Layout, *, max_field_chars: int = MAX_FIELD_CHARS,
                     max_dialogue_length: int = MAX_DIALOGUE_LENGTH) -> tuple[dict[str, SplitRows], tuple[str, ...]]:
    """Each split's checked rows and the class names (the layout's, else the training labels, sorted)."""
    limits = dict(max_field_chars=max_field_chars, max_dialogue_length=max_dialogue_length)
    rows = {split: _read_split(path, layout, split, **limits) for split, path in split_paths(csv_dir, layout).items()}
    classes = layout.classes or tuple(sorted(set(rows["train"].labels)))
    class_index = {name: i for i, name in enumerate(classes)}
    for split in SPLITS:
        _check_labels(rows[split], layout, class_index)
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
    texts, labels, speakers, lines = [], [], [], []
    dialogues: dict[tuple[str, ...], list[tuple[int, int]]] = {}  # dialogue -> (position, row) of its utterances
    with _csv_field_limit(max_field_chars):
        for line, row in _csv_rows(path, layout):
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
            labels.append((row[layout.label] or "").strip())
            speakers.append((row[layout.speaker] or "").strip())
            lines.append(line)
    if not texts:
        raise TranscriptError(f"{path}: no utterances")
    order, ids, offsets = _dialogue_order(path, layout, split, dialogues, lines, max_dialogue_length)
    return SplitRows(path, texts, labels, speakers, lines, order, ids, offsets)


def _dialogue_order(path: Path, layout: Layout, split: str, dialogues: dict, lines: list[int],
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
        ids.append("_".join((split, *key)))
    return np.array(order, dtype=np.int64), ids, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def _csv_rows(path: Path, layout: Layout) -> Iterator[tuple[int, dict]]:
    """The rows of the UTF-8 CSV file ``path`` with their line numbers, checked for ``layout``'s columns."""
    reader = csv.DictReader(io.StringIO(_utf8_text(path), newline=""))
    try:
        wanted = (layout.text, layout.speaker, layout.label, *layout.dialogue, layout.position)
        missing = [c for c in wanted if c not in (reader.fieldnames or ())]
        if missing:
            raise TranscriptError(f"{path}: no column {missing[0]!r} (the file has {reader.fieldnames})")
        for row in reader:
            yield reader.line_num, row
    except csv.Error as error:
        advice = "; raise --max-field-chars if it is meant to be that long" if "field limit" in str(error) else ""
        raise TranscriptError(f"{path}, line {reader.reader.line_num}: {error}{advice}") from None


def read_columns(path: Path, layout: Layout, columns: tuple[str, ...], *,
                 max_field_chars: int = MAX_FIELD_CHARS) -> dict[str, list[str]]:
    """Each of ``columns``' values in every row of ``path``, stripped, in file order."""
    values: dict[str, list[str]] = {c: [] for c in columns}
    with _csv_field_limit(max_field_chars):
        for _, row in _csv_rows(path, layout):
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


def _check_labels(rows: SplitRows, layout: Layout, class_index: dict[str, int]) -> None:
    for i, label in enumerate(rows.labels):
        if label not in class_index:
            raise TranscriptError(
                f"{rows.path}, line {rows.lines[i]}: unknown label {label!r} in column {layout.label!r}; "
                f"expected one of {', '.join(class_index)}"
            )


def tfidf_svd(texts: dict[str, list[str]], text_dim: int, seed: int) -> dict[str, np.ndarray]:
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    train = vectorizer.fit_transform(texts["train"])
    components = min(text_dim, train.shape[1] - 1, train.shape[0] - 1)
    if components < 1:
        raise TranscriptError(f"the training transcripts give {train.shape[1]} distinct terms; too few for features")
    svd = TruncatedSVD(n_components=components, random_state=seed)
    out = {"train": svd.fit_transform(train)}
    for split in texts.keys() - {"train"}:
        out[split] = svd.transform(vectorizer.transform(texts[split]))
    return {split: x.astype(np.float32) for split, x in out.items()}


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
    corpus = build_transcript_corpus(
        args.csv_dir, layout, text_dim=args.text_dim, embeddings=args.embeddings, seed=args.seed,
        max_field_chars=args.max_field_chars, max_dialogue_length=args.max_dialogue_length,
    )
    source = {
        "kind": "transcripts",
        "layout": layout.name,
        "modalities": corpus.modalities,  # text only: transcripts carry no audio or visual features
        "features": "embeddings" if args.embeddings else f"tfidf-svd-{corpus.dims['t']}",
        "files": {split: file_record(path) for split, path in split_paths(Path(args.csv_dir), layout).items()},
    }
    write_cache(corpus, args.out, source=source)
    sizes = ", ".join(f"{name} {s.num_dialogues}/{s.num_utterances}" for name, s in corpus.splits.items())
    print(f"wrote {args.out}: {sizes} (dialogues/utterances), text dim {corpus.dims['t']}, "
          f"classes {', '.join(corpus.classes)}; train with --data {args.out}")


if __name__ == "__main__":
    main()
