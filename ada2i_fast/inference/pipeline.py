"""Emotions of new conversations in one call: a trained model with the featuriser of its corpus.

    from ada2i_fast import ConversationPipeline

    pipeline = ConversationPipeline.from_pretrained("runs/meld/DATE")    # a run folder, model folder or best.pt
    pipeline([["I got the job!", "No way! Congratulations!"], ["Where were you?"]])   # dialogues of texts
    pipeline.predict_csv("new_episode.csv")      # a transcript CSV in the corpus's layout

The featuriser (``data.featuriser``) computes the features the corpus holds for the same utterances
(TF-IDF→SVD to float32 rounding, or the sentence model, for the text; openSMILE and the train split's
standardisation for the audio). It comes
from the model folder (a finished run's ``model/`` carries a copy), else from the corpus the model
records; a model without one (a legacy pickle's, a synthetic corpus's, the user's own embeddings, an
authors' checkpoint) is refused in one line saying why. Every utterance gives one record, as
``python -m ada2i_fast.predict`` writes them (see :func:`prediction_records`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..checkpointing.pretrained import FEATURISER, is_pretrained_folder
from ..data import Split, iterate_batches, load_corpus
from ..data.batching import batch_order
from ..data.conversations import audio_paths
from ..data.featuriser import Featuriser, FeaturiserError, SentenceEncoderText, corpus_featuriser
from ..data.transcripts import Layout, SplitRows, check_labels, read_columns, read_rows
from ..modules.model import Ada2I
from ..training.checkpoint import load_any_checkpoint, saved_model_path
from ..training.run_folder import data_identity

COLUMNS = ("text", "label", "dialogue", "position")  # the layout fields a CSV may rename (speakers: unused)


@dataclass(frozen=True, eq=False)
class Conversations:
    """New conversations featurised for the model: a split (dialogues in the file's order, utterances
    by position) and whether its labels are gold ones (a CSV with a label column)."""

    split: Split
    gold: bool


class ConversationPipeline:
    """A model (in eval mode) and the featuriser of its corpus: from conversations to named predictions."""

    def __init__(self, model: Ada2I, featuriser: Featuriser, *, batch_size: int = 10, device=None,
                 precision: str = "fp32", feature_cache=None, workers: int | None = None) -> None:
        """``device``: where the model runs (default: where its weights are); ``feature_cache``: where
        extracted audio features are kept (default: a temporary folder per call); ``workers``: audio
        extraction processes (default: every core)."""
        _check_belongs(model, featuriser)
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model = model.eval().to(self.device)
        self.featuriser = featuriser
        self.batch_size, self.precision = batch_size, precision
        self.feature_cache, self.workers = feature_cache, workers

    @classmethod
    def from_pretrained(cls, path, *, text_model=None, **options) -> "ConversationPipeline":
        """The model of ``path`` (a model folder, a run folder, a run's best.pt or last.pt) and its
        featuriser: the model folder's copy, else its corpus's. ``text_model``: where the sentence-transformers
        model of the text features is on this machine, when not where the corpus was built."""
        model, metadata = load_any_checkpoint(path)
        featuriser = featuriser_of(Path(path), metadata)
        if text_model is not None:
            featuriser = _with_text_model(featuriser, Path(text_model))
        options.setdefault("batch_size", metadata.get("train_config", {}).get("batch_size", 10))
        return cls(model, featuriser, **options)

    @property
    def classes(self) -> tuple[str, ...]:
        """The class names, in the model's order."""
        return self.featuriser.classes

    def save_pretrained(self, folder, metadata: dict | None = None) -> Path:
        """The model and a copy of its featuriser in ``folder`` (``Ada2I.save_pretrained``)."""
        return self.model.save_pretrained(folder, metadata, self.featuriser)

    def __call__(self, dialogues: Sequence[Sequence[str | Mapping]]) -> list[list[dict]]:
        """One list of records per dialogue, one record per utterance (dialogue ids "0", "1", ...). An
        utterance is its text, or ``{"text": ..., "audio": path, "visual": path}`` for a model that uses
        audio or visual features."""
        return _nested(list(self.predictions(self.featurise(dialogues))), [len(d) for d in dialogues])

    def predict_csv(self, path, **reading) -> list[dict]:
        """One record per utterance of the transcript CSV ``path``, dialogue after dialogue (see :meth:`read_csv`
        for ``reading``)."""
        return list(self.predictions(self.read_csv(path, **reading)))

    def predictions(self, conversations: Conversations) -> Iterator[dict]:
        """One record per utterance of ``conversations`` (:func:`prediction_records`), lazily."""
        return prediction_records(self.model, conversations.split, self.classes, batch_size=self.batch_size,
                                  device=self.device, precision=self.precision, gold=conversations.gold)

    def featurise(self, dialogues: Sequence[Sequence[str | Mapping]]) -> Conversations:
        """In-memory dialogues (see :meth:`__call__`) as the model's inputs."""
        if isinstance(dialogues, str) or not dialogues:
            raise ValueError("expected a list of dialogues, each a list of utterances")
        utterances = [_utterance(u, d, i, self.model.config.modalities) for d, dialogue in enumerate(dialogues)
                      for i, u in enumerate(_dialogue(dialogue, d))]
        columns = {key: [u[key] for u in utterances] for key in ("text", "audio", "visual")}
        features = self._features(columns["text"], columns["audio"], columns["visual"])
        lengths = [len(d) for d in dialogues]
        return self._conversations(features, np.arange(len(utterances)), lengths, [str(d) for d in range(len(lengths))])

    def read_csv(self, path, *, audio_column: str | None = None, audio_dir=None, visual_column: str | None = None,
                 columns: Mapping[str, str] | None = None) -> Conversations:
        """The conversations of a transcript CSV in the corpus's layout (``columns`` overrides its column names:
        text, label, dialogue (comma-separated), position). Dialogues are grouped by the dialogue
        columns in the order the file first names them and ordered by position; the label and speaker
        columns may be absent. Audio: ``audio_column`` (paths relative to the CSV's folder; default, the
        corpus's column) or, in MELD's layout, ``audio_dir`` (``DIR/dia{Dialogue_ID}_utt{Utterance_ID}.wav``);
        visual: ``visual_column`` (``.npy`` paths; default, the corpus's column)."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"--csv {path}: no such file")
        layout = self.layout(columns)
        rows = read_rows(path, layout, optional=(layout.speaker, layout.label))
        if rows.labels is not None:
            check_labels(rows, layout, {name: i for i, name in enumerate(self.classes)})
        audio = self._audio_files(rows, layout, audio_column, audio_dir)
        visual = self._visual_files(rows, layout, visual_column)
        features = self._features(rows.texts, audio, visual)
        labels = None if rows.labels is None else [self.classes.index(rows.labels[i]) for i in rows.order]
        return self._conversations(features, rows.order, np.diff(rows.offsets), rows.dialogue_ids, labels)

    def _conversations(self, features: dict[str, np.ndarray], order, lengths, dialogue_ids,
                       labels=None) -> Conversations:
        """``features`` (rows in input order) taken in ``order``, as dialogues of ``lengths``; zero labels
        (not gold) when there are none."""
        n = len(order)
        split = Split(
            features={m: x[order] for m, x in features.items()},
            labels=np.zeros(n, dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64),
            speakers=np.zeros(n, dtype=np.int64),
            offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            dialogue_ids=tuple(dialogue_ids),
        )
        split.validate("new conversations", len(self.classes))  # finite features, consistent offsets
        return Conversations(split, gold=labels is not None)

    def layout(self, columns: Mapping[str, str] | None = None) -> Layout:
        """The corpus's CSV layout, with ``columns`` renamed."""
        recorded = dict(self.featuriser.layout)
        layout = Layout(**{**recorded, "dialogue": tuple(recorded["dialogue"]), "classes": self.classes})
        changes = {k: v for k, v in (columns or {}).items() if v is not None}
        unknown = sorted(set(changes) - set(COLUMNS))
        if unknown:
            raise ValueError(f"unknown column field(s) {', '.join(unknown)}; expected some of {', '.join(COLUMNS)}")
        if "dialogue" in changes:
            changes["dialogue"] = tuple(c.strip() for c in changes["dialogue"].split(","))
        return replace(layout, **changes)

    def _features(self, texts, audio, visual) -> dict[str, np.ndarray]:
        with tempfile.TemporaryDirectory(prefix="ada2i-audio-") as scratch:
            cache = Path(self.feature_cache) if self.feature_cache is not None else Path(scratch)
            return self.featuriser.features(self.model.config.modalities, texts, audio, visual, cache_dir=cache,
                                            workers=self.workers)

    def _audio_files(self, rows: SplitRows, layout: Layout, column: str | None, clips) -> list[Path] | None:
        if "a" not in self.model.config.modalities:
            if column or clips:
                raise ValueError(f"this model does not use audio (its modalities are "
                                 f"{self.model.config.modalities!r}); drop --audio-column/--audio-dir")
            return None
        if column and clips:
            raise ValueError("--audio-column and --audio-dir both name the audio files; choose one")
        if clips and layout.name != "meld":
            raise ValueError(f"--audio-dir is MELD's clip naming (DIR/dia{{Dialogue_ID}}_utt{{Utterance_ID}}.wav); in "
                             f"the {layout.name!r} layout name each file with --audio-column NAME")
        column = column or (None if clips else self.featuriser.audio.files.get("column"))
        if not column and not clips:
            raise ValueError("this model uses audio: name each utterance's file with --audio-column NAME (a path "
                             "relative to the CSV's folder) or --audio-dir DIR (MELD's DIR/dia{Dialogue_ID}_utt"
                             "{Utterance_ID}.wav)")
        return audio_paths(rows, layout, column, Path(clips) if clips else None, base=rows.path.parent)

    def _visual_files(self, rows: SplitRows, layout: Layout, column: str | None) -> list[Path] | None:
        if "v" not in self.model.config.modalities:
            if column:
                raise ValueError(f"this model does not use visual features (its modalities are "
                                 f"{self.model.config.modalities!r}); drop --visual-column")
            return None
        column = column or self.featuriser.visual.column
        names = read_columns(rows.path, layout, (column,), optional=(layout.speaker, layout.label))[column]
        return [rows.path.parent / name for name in names]


def prediction_records(model: Ada2I, split: Split, classes, *, batch_size: int, device: torch.device,
                       precision: str = "fp32", gold: bool = True) -> Iterator[dict]:
    """One JSON-ready record per utterance of ``split``, in corpus order:

        {"dialogue_id": "d7", "utterance": 0, "gold": "neutral", "predicted": "joy",
         "probabilities": {"neutral": 0.61, ...},
         "contributions": {"a": {"neutral": 0.4, ...}, "t": {...}}, "bias": {"neutral": -0.02, ...}}

    ``utterance`` counts from 0 within the dialogue; ``gold`` only when ``gold``. Per class, the
    modalities' contributions plus the bias are the logits whose softmax is ``probabilities``."""
    classes = list(classes)
    modalities = model.config.modalities
    batches = iterate_batches(split, modalities, batch_size, shuffle=False)
    for dialogues, batch in zip(batch_order(split, batch_size, shuffle=False), batches):
        prediction = model.predict(batch.to(device), precision)
        bias = dict(zip(classes, prediction.bias.tolist()))
        rows = zip(prediction.labels.tolist(), prediction.probabilities.tolist(), prediction.contributions.tolist())
        for dialogue in dialogues.tolist():
            start = int(split.offsets[dialogue])
            for utterance in range(int(split.lengths[dialogue])):
                predicted, probabilities, contributions = next(rows)
                yield {
                    "dialogue_id": split.dialogue_ids[dialogue],
                    "utterance": utterance,
                    **({"gold": classes[int(split.labels[start + utterance])]} if gold else {}),
                    "predicted": classes[predicted],
                    "probabilities": dict(zip(classes, probabilities)),
                    "contributions": {m: dict(zip(classes, row)) for m, row in zip(modalities, contributions)},
                    "bias": bias,
                }


def featuriser_of(path: Path, metadata: dict) -> Featuriser:
    """The featuriser of the model saved at ``path``: its model folder's copy, else that of the corpus
    its metadata records (refused when that corpus changed since the model was trained on it)."""
    folder = saved_model_path(path)
    if is_pretrained_folder(folder) and (folder / FEATURISER).is_dir():
        return Featuriser.load(folder / FEATURISER)
    data = metadata.get("data")
    if data is None:
        raise FeaturiserError(f"{path} records no training corpus (an authors' checkpoint): nothing here can "
                              "featurise new conversations for it")
    featuriser = corpus_featuriser(data)
    recorded = metadata.get("data_identity")
    if recorded is not None:
        seed = metadata.get("train_config", {}).get("seed", 12)
        corpus = load_corpus(metadata["dataset"], data, seed=seed, task=metadata.get("task", "7class"))
        if data_identity(corpus) != recorded:
            raise FeaturiserError(f"the corpus {data} changed since {path} was trained on it: its featuriser is not "
                                  "the model's")
    return featuriser


def _check_belongs(model: Ada2I, featuriser: Featuriser) -> None:
    """Refuse a featuriser that does not make this model's inputs, or names other classes."""
    config = model.config
    for m in config.modalities:
        made = featuriser.dims.get(m)
        if made != config.input_dims[m]:
            raise FeaturiserError(f"the featuriser makes {featuriser.dims} (modality: dim), the model reads "
                                  f"{config.input_dims}: they do not belong together")
    if len(featuriser.classes) != config.num_classes or config.class_names not in (None, featuriser.classes):
        raise FeaturiserError(f"the featuriser's corpus has the classes {', '.join(featuriser.classes)}; the model "
                              f"predicts {', '.join(config.class_names or map(str, range(config.num_classes)))}")


def _with_text_model(featuriser: Featuriser, folder: Path) -> Featuriser:
    if not isinstance(featuriser.text, SentenceEncoderText):
        raise ValueError(f"--text-model: the corpus's text features are {featuriser.text.kind}, not a "
                         "sentence-transformers model's")
    text = replace(featuriser.text, model=str(folder.resolve()))
    return replace(featuriser, text=text, folder=None, checksum=None)  # saved anew, naming the new folder


def _dialogue(dialogue, index: int):
    if isinstance(dialogue, (str, Mapping)) or not isinstance(dialogue, Sequence) or not dialogue:
        raise ValueError(f"dialogue {index}: expected a non-empty list of utterances, got {dialogue!r:.60}")
    return dialogue


def _utterance(utterance, dialogue: int, index: int, modalities: str) -> dict:
    """``{"text", "audio", "visual"}`` of one utterance given as its text or as such a mapping, with the
    files the model's ``modalities`` need."""
    where = f"dialogue {dialogue}, utterance {index}"
    if isinstance(utterance, str):
        utterance = {"text": utterance}
    if not isinstance(utterance, Mapping) or not isinstance(utterance.get("text"), str):
        raise ValueError(f"{where}: expected its text, or a mapping with a 'text' (and 'audio', 'visual' paths), "
                         f"got {utterance!r:.60}")
    unknown = sorted(set(utterance) - {"text", "audio", "visual"})
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; expected text, audio, visual")
    if not utterance["text"].strip():
        raise ValueError(f"{where}: empty text")
    for key, modality in (("audio", "a"), ("visual", "v")):
        if modality in modalities and utterance.get(key) is None:
            raise ValueError(f"{where} has no {key!r}: this model uses {key}; give each utterance as "
                             f"{{'text': ..., '{key}': path}}")
    return {"text": utterance["text"].strip(), "audio": utterance.get("audio"), "visual": utterance.get("visual")}


def _nested(records: list[dict], lengths: list[int]) -> list[list[dict]]:
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    return [records[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
