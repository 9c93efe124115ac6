"""Synthetic corpora shaped like the real ones (SPEC §1), for tests, benchmarks and studies.

Both families share the shape of a dataset (split sizes, dialogue lengths, class priors, dims),
the labels and the speakers: labels follow a sticky Markov chain (keep the previous emotion with
probability ``stay``, else redraw from the class prior, which leaves the prior stationary) and each
speaker tints its utterances toward some classes, so a dialogue's context is informative. They
differ in what each modality's features say about the label. Per utterance and modality m::

    x = noise + (SNR[m] * onehot(view_m(label)) + SPEAKER_TINT * z) @ U_m

with ``noise ~ N(0, I)``, ``z ~ N(0, I_C)`` drawn once per (dialogue, speaker), ``U_m`` one random
unit direction per row, and ``SNR`` falling from text (2.0) to audio (1.2) to visual (0.7), so text
is learned first.

- ``redundant`` (the default): ``view_m`` is the identity for every modality. Every modality carries
  the whole label, only more weakly than text: text alone holds everything there is to learn.
- ``complementary``: ``view_m`` maps each class to its group in :data:`VIEWS`, so a modality sees
  only which group a class belongs to. Text tells valence and topic but merges pairs of classes;
  audio (arousal) and visual (facial expression) are weaker and coarser, but each separates a pair
  that text merges, and only the three together tell every class apart. MELD: text sees neutral |
  joy, surprise | anger, sadness | disgust, fear; audio sees high arousal (surprise, fear, joy,
  anger) | low (neutral, sadness, disgust); visual sees smile (joy) | wide eyes (surprise, fear) |
  the rest. Anger vs sadness needs audio, joy vs surprise needs visual, disgust vs fear either.

The same seed gives both families the same dialogues, labels, speakers and noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..datasets import DATASETS, dataset_spec
from .corpus import Corpus, Split
from ..memory import check_fits_in_memory, corpus_bytes

MIN_DIALOGUES = 3


@dataclass(frozen=True)
class CorpusShape:
    """What a synthetic corpus imitates. ``splits``: name -> (dialogues, utterances, longest dialogue)."""

    splits: dict[str, tuple[int, int, int]]
    class_counts: tuple[int, ...]
    length_gamma_shape: float  # dialogue lengths ~ Gamma(k, mean/k), rounded and clipped
    speaker_pool: int  # distinct speaker ids
    extra_speakers: float  # speakers per dialogue = 1 + Poisson(extra_speakers), at most its length
    stay: float  # probability that an utterance keeps the previous utterance's emotion


SNR = {"t": 2.0, "a": 1.2, "v": 0.7}
SPEAKER_TINT = 0.5
FAMILIES = ("redundant", "complementary")

# The complementary family: per dataset and modality, the groups of classes a modality cannot tell
# apart. Fixed before any ablation ran on it (README, "Does the balancing help?").
VIEWS = {
    "meld": {
        "t": (("neutral",), ("joy", "surprise"), ("anger", "sadness"), ("disgust", "fear")),
        "a": (("surprise", "fear", "joy", "anger"), ("neutral", "sadness", "disgust")),
        "v": (("joy",), ("surprise", "fear"), ("neutral", "sadness", "disgust", "anger")),
    },
    "iemocap": {
        "t": (("happy", "excited"), ("angry", "frustrated"), ("sad",), ("neutral",)),
        "a": (("excited", "angry", "frustrated"), ("happy", "sad", "neutral")),
        "v": (("happy", "excited"), ("angry",), ("sad", "neutral", "frustrated")),
    },
    "mosei": {
        "t": (("strong negative", "negative"), ("weak negative", "neutral"), ("weak positive",),
              ("positive", "strong positive")),
        "a": (("strong negative", "strong positive"),
              ("negative", "weak negative", "neutral", "weak positive", "positive")),
        "v": (("neutral",), ("strong negative", "negative", "weak negative", "weak positive", "positive",
                             "strong positive")),
    },
}

SHAPES = {
    # SPEC §1: train 1,038 / 9,989; dev 114 / 1,109; test 280 / 2,610; longest 24 (33 in test);
    # 2.7 speakers per dialogue, 260 distinct in train. Class counts: MELD train.
    "meld": CorpusShape(
        splits={"train": (1038, 9989, 24), "dev": (114, 1109, 23), "test": (280, 2610, 33)},
        class_counts=(4710, 1205, 268, 683, 1743, 271, 1109),
        length_gamma_shape=4.0,
        speaker_pool=260,
        extra_speakers=2.2,
        stay=0.5,
    ),
    # SPEC §1: train+dev 120 / 5,810 (split 108 / 12 as the dev rule does), test 31 / 1,623;
    # dyadic sessions, longest ~110. Class counts: the whole corpus.
    "iemocap": CorpusShape(
        splits={"train": (108, 5229, 110), "dev": (12, 581, 110), "test": (31, 1623, 110)},
        class_counts=(648, 1084, 1708, 1103, 1041, 1849),
        length_gamma_shape=7.0,
        speaker_pool=2,
        extra_speakers=10.0,  # capped by speaker_pool: (almost) always both speakers
        stay=0.75,
    ),
    # Not in SPEC: the commonly cited CMU-MOSEI split, 2,249 / 300 / 679 videos with
    # 16,326 / 1,871 / 4,659 segments; one speaker per video; the longest video (60) and the
    # 7-class sentiment counts (skewed positive) are assumptions. "2class" is label >= 3.
    "mosei": CorpusShape(
        splits={"train": (2249, 16326, 60), "dev": (300, 1871, 60), "test": (679, 4659, 60)},
        class_counts=(3, 10, 15, 22, 28, 17, 5),
        length_gamma_shape=2.0,
        speaker_pool=1,
        extra_speakers=0.0,
        stay=0.6,
    ),
}


def make_synthetic(
    dataset: str, *, seed: int, size: float = 1.0, task: str = "7class", family: str = "redundant"
) -> Corpus:
    """A corpus of ``family`` (see the module's docstring) shaped like ``dataset`` (see
    :data:`SHAPES`), deterministic in ``seed``.

    Train / dev / test at ``size=1``, dialogues (utterances):
    meld 1,038 / 114 / 280 (9,989 / 1,109 / 2,610), as SPEC §1;
    iemocap 108 / 12 / 31 (5,229 / 581 / 1,623): SPEC's train+dev 120 (5,810) cut as its dev rule does;
    mosei 2,249 / 300 / 679 (16,326 / 1,871 / 4,659): the commonly cited CMU-MOSEI split, an
    assumption (SPEC defers to the file). ``size`` scales the dialogue counts (at least
    :data:`MIN_DIALOGUES` per split) and the utterance totals with them. mosei ``task="2class"``
    maps the 7-class labels to negative (< 3) / positive (>= 3); features keep the 7-class signal.
    """
    spec = dataset_spec(dataset)
    classes = spec.class_names(task)
    if not size > 0:
        raise ValueError(f"size must be positive, got {size}")
    if family not in FAMILIES:
        raise ValueError(f"unknown synthetic family {family!r}; expected one of {', '.join(FAMILIES)}")
    check_fits_in_memory(_synthetic_bytes(dataset, size), f"synthetic size {size}", "choose a smaller --size")
    shape = SHAPES[dataset]
    rng = np.random.default_rng([seed, list(DATASETS).index(dataset)])
    num_classes = len(shape.class_counts)
    directions = {}
    for m, d in spec.dims.items():
        u = rng.standard_normal((num_classes, d), dtype=np.float32)
        directions[m] = u / np.linalg.norm(u, axis=1, keepdims=True)
    views = view_maps(dataset) if family == "complementary" else dict.fromkeys(directions, np.arange(num_classes))
    splits = {}
    for name, (dialogues, utterances, longest) in shape.splits.items():
        n = max(MIN_DIALOGUES, round(dialogues * size))
        total = min(n * longest, max(n, round(utterances * n / dialogues)))
        lengths = _dialogue_lengths(rng, n, total, longest, shape.length_gamma_shape)
        labels, speakers, tint = _labels_and_speakers(rng, lengths, shape)
        onehot = np.eye(num_classes, dtype=np.float32)
        features = {}
        for m, u in directions.items():
            x = rng.standard_normal((len(labels), u.shape[1]), dtype=np.float32)
            x += (SNR[m] * onehot[views[m][labels]] + SPEAKER_TINT * tint) @ u
            features[m] = x
        if task == "2class":
            labels = (labels >= 3).astype(np.int64)
        splits[name] = Split(
            features=features,
            labels=labels,
            speakers=speakers,
            offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            dialogue_ids=tuple(f"{dataset}-{name}-{i}" for i in range(n)),
        )
    kind = dataset if family == "redundant" else f"{dataset} {family}"
    source = f"synthetic {kind} (seed {seed}, size {size}" + (f", task {task})" if dataset == "mosei" else ")")
    return Corpus(dataset, classes, splits, source)


def _synthetic_bytes(dataset: str, size: float) -> float:
    """About what :func:`make_synthetic` allocates for ``dataset`` at ``size`` (at least
    :data:`MIN_DIALOGUES` per split, the mean dialogue length kept)."""
    utterances = sum(u * max(size, MIN_DIALOGUES / d) for d, u, _ in SHAPES[dataset].splits.values())
    return corpus_bytes(utterances, sum(dataset_spec(dataset).dims.values()))


def view_maps(dataset: str) -> dict[str, np.ndarray]:
    """Per modality, each class's group index in :data:`VIEWS` (class index -> group index)."""
    classes = dataset_spec(dataset).classes
    maps = {}
    for m, groups in VIEWS[dataset].items():
        group_of = {name: g for g, group in enumerate(groups) for name in group}
        maps[m] = np.array([group_of[name] for name in classes], dtype=np.int64)
    return maps


def _dialogue_lengths(rng: np.random.Generator, n: int, total: int, longest: int, k: float) -> np.ndarray:
    """``n`` lengths in [1, longest] summing to ``total``, Gamma-shaped around ``total / n``."""
    lengths = np.clip(np.rint(rng.gamma(k, total / n / k, size=n)), 1, longest).astype(np.int64)
    while (gap := total - int(lengths.sum())) != 0:
        step = 1 if gap > 0 else -1
        room = np.flatnonzero(lengths < longest if step > 0 else lengths > 1)
        pick = rng.choice(room, size=min(abs(gap), len(room)), replace=False)
        lengths[pick] += step
    return lengths


def _labels_and_speakers(rng: np.random.Generator, lengths: np.ndarray, shape: CorpusShape):
    """Sticky Markov labels [N], global speaker ids [N] and each utterance's speaker tint [N, C]."""
    n, total = len(lengths), int(lengths.sum())
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    dialogue = np.repeat(np.arange(n), lengths)
    prior = np.asarray(shape.class_counts, dtype=np.float64)
    fresh = rng.random(total) >= shape.stay
    fresh[starts] = True
    draws = rng.choice(len(prior), size=total, p=prior / prior.sum())
    labels = draws[np.maximum.accumulate(np.where(fresh, np.arange(total), 0))]

    per_dialogue = np.minimum(np.minimum(lengths, 1 + rng.poisson(shape.extra_speakers, size=n)), shape.speaker_pool)
    slot = (rng.random(total) * per_dialogue[dialogue]).astype(np.int64)
    first_id = rng.integers(shape.speaker_pool, size=n)
    speakers = (first_id[dialogue] + slot) % shape.speaker_pool
    tint = rng.standard_normal((n, int(per_dialogue.max()), len(prior)), dtype=np.float32)[dialogue, slot]
    return labels.astype(np.int64), speakers.astype(np.int64), tint
