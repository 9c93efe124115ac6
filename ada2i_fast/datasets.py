"""The one table of datasets (SPEC §1, §4): feature dims, class names, the published presets and
the split names. Every module that needs to know a dataset reads its :class:`DatasetSpec` here.

Class names are the full ones everywhere (corpora, reports, plots, predictions); ``short`` names
are the field's abbreviations, for places where space forces them, and name the same classes: a
corpus or checkpoint that recorded the abbreviations reads as the full names
(:meth:`DatasetSpec.canonical`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

SPLITS = ("train", "dev", "test")
TEXT_DIM = 768  # the text dim of every dataset (SPEC §1): what a transcript corpus's features default to


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    dims: dict[str, int]  # per modality letter
    classes: tuple[str, ...]  # index order of the field's files
    short: tuple[str, ...]  # the same classes abbreviated
    model_preset: dict = field(default_factory=dict)  # Ada2IConfig values that differ from its defaults
    train_preset: dict = field(default_factory=dict)  # TrainConfig values that differ from its defaults
    tasks: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = field(default_factory=dict)  # other label sets

    def class_names(self, task: str = "7class") -> tuple[str, ...]:
        """The class names of ``task`` (only mosei has more than one label set)."""
        return self._label_set(task)[0]

    def short_names(self, task: str = "7class") -> tuple[str, ...]:
        return self._label_set(task)[1]

    def canonical(self, names, task: str = "7class") -> tuple[str, ...]:
        """``names`` with the abbreviations of this dataset's classes written out; other names unchanged."""
        full, short = self._label_set(task)
        return full if tuple(names) == short else tuple(names)

    def _label_set(self, task: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        if task == "7class" or not self.tasks:
            return self.classes, self.short
        if task not in self.tasks:
            raise ValueError(f"unknown {self.name} task {task!r}; expected one of 7class, {', '.join(self.tasks)}")
        return self.tasks[task]


# The dataclass defaults of Ada2IConfig and TrainConfig are the iemocap preset (SPEC §4).
DATASETS = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "iemocap", {"a": 512, "t": TEXT_DIM, "v": 1024},
            ("happy", "sad", "neutral", "angry", "excited", "frustrated"),
            ("hap", "sad", "neu", "ang", "exc", "fru"),
        ),
        DatasetSpec(
            "meld", {"a": 300, "t": TEXT_DIM, "v": 342},
            ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger"),
            ("neu", "sup", "fea", "sad", "joy", "dis", "ang"),
            model_preset=dict(hidden=200, beta=0.55, rank=6),
            train_preset=dict(lr=1.3e-4, alpha=0.42),
        ),
        DatasetSpec(
            "mosei", {"a": 512, "t": TEXT_DIM, "v": 1024},
            ("strong negative", "negative", "weak negative", "neutral", "weak positive", "positive",
             "strong positive"),
            ("s.neg", "neg", "w.neg", "neu", "w.pos", "pos", "s.pos"),
            model_preset=dict(hidden=200, beta=0.7, rank=8),
            train_preset=dict(lr=2e-4, alpha=0.5, start_mod=1),
            tasks={"2class": (("negative", "positive"), ("neg", "pos"))},
        ),
    )
}


def dataset_spec(name: str) -> DatasetSpec:
    """The row of ``name``, or a ``ValueError`` naming the known ones."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    return DATASETS[name]
