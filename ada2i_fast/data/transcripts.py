"""Corpora from conversation transcripts (CSV files, one per split): text-only, features from scikit-learn.

    python -m ada2i_fast.data.transcripts --csv-dir DIR --layout meld --out PATH
    python -m ada2i_fast.train --dataset meld --data PATH

Layouts: ``meld`` (MELD's ``{train,dev,test}_sent_emo.csv``), ``emorynlp`` (EmoryNLP's
``emorynlp_{split}_final.csv``, a dialogue is a scene of an episode of a season) and ``generic``
(every column name and the file pattern are flags). Utterances are grouped into dialogues in the
order the file first names them and ordered by their utterance id; speakers become int ids.

Text features are TF-IDF (word 1–2-grams, sublinear tf) followed by TruncatedSVD to ``text_dim``
columns, both fitted on the training split only, or the user's own embeddings (``{split}.npy``,
one row per CSV row in file order). The result is a columnar cache (``cache.write_cache``) that
records its layout, class names, source files and that audio and visual are absent.
"""

from __future__ import annotations

import argparse
import csv
import io
from dataclasses import dataclass, replace
from os import PathLike
from pathlib import Path

import numpy as np

from ..datasets import DATASETS, SPLITS, TEXT_DIM
from .cache import MANIFEST, file_record, write_cache
from .corpus import Corpus, Split


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
class _SplitRows:
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
) -> Corpus:
    """The train/dev/test corpus of the transcripts in ``csv_dir`` (modality ``t`` only), validated."""
    layout = LAYOUTS[layout] if isinstance(layout, str) else layout
    csv_dir = Path(csv_dir)
    rows = {split: _read_split(csv_dir / layout.files.format(split=split), layout, split) for split in SPLITS}
    classes = layout.classes or tuple(sorted(set(rows["train"].labels)))
    class_index = {name: i for i, name in enumerate(classes)}
    for split in SPLITS:
        _check_labels(rows[split], layout, class_index)
    if embeddings is None:
        features = _tfidf_svd({split: r.texts for split, r in rows.items()}, text_dim, seed)
    else:
        features = _read_embeddings(Path(embeddings), rows)
    speaker_ids: dict[str, int] = {}
    splits = {}
    for split, r in rows.items():
        splits[split] = Split(
            features={"t": features[split][r.order]},
            labels=np.array([class_index[r.labels[i]] for i in r.order], dtype=np.int64),
            speakers=np.array([speaker_ids.setdefault(r.speakers[i], len(speaker_ids)) for i in r.order], dtype=np.int64),
            offsets=r.offsets,
            dialogue_ids=tuple(r.dialogue_ids),
        )
    return Corpus(layout.name, classes, splits, source=str(csv_dir)).validate()


def _read_split(path: Path, layout: Layout, split: str) -> _SplitRows:
    if not path.is_file():
        raise TranscriptError(f"missing split {split!r}: no file {path} (layout {layout.name!r} expects {layout.files!r})")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise TranscriptError(
            f"{path}, line {line}: not UTF-8 (byte 0x{raw[error.start]:02x}); re-save the file as UTF-8"
        ) from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    wanted = (layout.text, layout.speaker, layout.label, *layout.dialogue, layout.position)
    missing = [c for c in wanted if c not in (reader.fieldnames or ())]
    if missing:
        raise TranscriptError(f"{path}: no column {missing[0]!r} (the file has {reader.fieldnames})")
    texts, labels, speakers, lines = [], [], [], []
    dialogues: dict[tuple[str, ...], list[tuple[int, int]]] = {}
    for row in reader:
        where = f"{path}, line {reader.line_num}"
        utterance = (row[layout.text] or "").strip()
        if not utterance:
            raise TranscriptError(f"{where}: empty utterance")
        try:
            position = int(row[layout.position])
        except (TypeError, ValueError):
            raise TranscriptError(f"{where}: {layout.position} {row[layout.position]!r} is not an integer") from None
        members = dialogues.setdefault(tuple(row[c] for c in layout.dialogue), [])
        members.append((position, len(texts)))
        texts.append(utterance)
        labels.append((row[layout.label] or "").strip())
        speakers.append((row[layout.speaker] or "").strip())
        lines.append(reader.line_num)
    if not texts:
        raise TranscriptError(f"{path}: no utterances")
    order, lengths, ids = [], [], []
    for key, members in dialogues.items():
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
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return _SplitRows(path, texts, labels, speakers, lines, np.array(order, dtype=np.int64), ids, offsets)


def _check_labels(rows: _SplitRows, layout: Layout, class_index: dict[str, int]) -> None:
    for i, label in enumerate(rows.labels):
        if label not in class_index:
            raise TranscriptError(
                f"{rows.path}, line {rows.lines[i]}: unknown label {label!r} in column {layout.label!r}; "
                f"expected one of {', '.join(class_index)}"
            )


def _tfidf_svd(texts: dict[str, list[str]], text_dim: int, seed: int) -> dict[str, np.ndarray]:
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


def _read_embeddings(directory: Path, rows: dict[str, _SplitRows]) -> dict[str, np.ndarray]:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ada2i_fast.data.transcripts",
        description="Build a text-only corpus from transcript CSVs; train on it with --data OUT.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--csv-dir", required=True, help="folder holding the train, dev and test CSV files")
    parser.add_argument("--layout", choices=tuple(LAYOUTS), default="meld")
    parser.add_argument("--out", required=True, help="the corpus folder to write")
    parser.add_argument("--text-dim", type=int, default=TEXT_DIM, help="TruncatedSVD components")
    parser.add_argument("--embeddings", help="folder with {train,dev,test}.npy, rows aligned with the CSV rows")
    parser.add_argument("--seed", type=int, default=0, help="TruncatedSVD's random state")
    generic = parser.add_argument_group("generic layout (the defaults are its column names)")
    for field in ("files", "text", "speaker", "label", "position"):
        generic.add_argument(f"--{field}-column" if field != "files" else "--files",
                             default=getattr(LAYOUTS["generic"], field), dest=field)
    generic.add_argument("--dialogue-columns", default="dialogue", help="comma-separated")
    generic.add_argument("--classes", help="comma-separated class names in index order (default: sorted train labels)")
    return parser


def layout_from_args(args: argparse.Namespace) -> Layout:
    if args.layout != "generic":
        return LAYOUTS[args.layout]
    return replace(
        LAYOUTS["generic"],
        files=args.files, text=args.text, speaker=args.speaker, label=args.label, position=args.position,
        dialogue=tuple(c.strip() for c in args.dialogue_columns.split(",")),
        classes=tuple(c.strip() for c in args.classes.split(",")) if args.classes else None,
    )


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    layout = layout_from_args(args)
    out = Path(args.out)
    if out.exists() and not (out / MANIFEST).is_file():
        raise SystemExit(f"error: --out {out} exists and is not a corpus folder; name a new folder")
    try:
        corpus = build_transcript_corpus(
            args.csv_dir, layout, text_dim=args.text_dim, embeddings=args.embeddings, seed=args.seed
        )
    except ValueError as error:
        raise SystemExit(f"error: {error}") from error
    csv_dir = Path(args.csv_dir)
    source = {
        "kind": "transcripts",
        "layout": layout.name,
        "modalities": corpus.modalities,  # text only: transcripts carry no audio or visual features
        "features": "embeddings" if args.embeddings else f"tfidf-svd-{corpus.dims['t']}",
        "files": {split: file_record(csv_dir / layout.files.format(split=split)) for split in SPLITS},
    }
    write_cache(corpus, args.out, source=source)
    sizes = ", ".join(f"{name} {s.num_dialogues}/{s.num_utterances}" for name, s in corpus.splits.items())
    print(f"wrote {args.out}: {sizes} (dialogues/utterances), text dim {corpus.dims['t']}, "
          f"classes {', '.join(corpus.classes)}; train with --data {args.out}")


if __name__ == "__main__":
    main()
