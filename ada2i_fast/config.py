"""Configuration: the model (:class:`Ada2IConfig`, what the weights mean), the recipe
(:class:`TrainConfig`, how they are trained), the published presets of both, and
:class:`Semantics`, ``compat`` resolved once into the flags the modules read (SPEC §5).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .modalities import ORDER

ENCODERS = ("transformer", "lstm")
COMPAT_MODES = ("method", "reference")
PRECISIONS = ("fp32", "bf16", "auto")  # auto: bf16 where the device computes it natively (devices.py)

# The cosine head's scale s (SPEC §2). Chosen on dev splits: see README "The cosine head's scale".
DEFAULT_AMW_SCALE = 10.0

DATASET_DIMS = {
    "iemocap": {"a": 512, "t": 768, "v": 1024},
    "meld": {"a": 300, "t": 768, "v": 342},
    "mosei": {"a": 512, "t": 768, "v": 1024},
}
DATASET_CLASSES = {
    "iemocap": ("hap", "sad", "neu", "ang", "exc", "fru"),
    "meld": ("neu", "sup", "fea", "sad", "joy", "dis", "ang"),
    "mosei": (
        "strong negative",
        "negative",
        "weak negative",
        "neutral",
        "weak positive",
        "positive",
        "strong positive",
    ),
}
_MODEL_PRESETS = {
    "iemocap": dict(hidden=300, beta=0.012, rank=11),
    "meld": dict(hidden=200, beta=0.55, rank=6),
    "mosei": dict(hidden=200, beta=0.7, rank=8),
}
_TRAIN_PRESETS = {
    "iemocap": dict(lr=1.7e-4, alpha=0.037, start_mod=4),
    "meld": dict(lr=1.3e-4, alpha=0.42, start_mod=4),
    "mosei": dict(lr=2e-4, alpha=0.5, start_mod=1),
}
DATASETS = tuple(_MODEL_PRESETS)


def check_dataset(dataset: str) -> None:
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")


@dataclass(frozen=True)
class Semantics:
    """What ``compat`` means for each module (SPEC §5), resolved once by :attr:`Ada2IConfig.semantics`."""

    mask_padding: bool  # the encoders' self-attention ignores padded utterances
    mean_over_padding: bool  # the AFW mean M_m runs over all T rows, padding included
    feature_target: str  # L_feature compares FC_m(H_m) with "attention" (A_m) or "output" (Y_m)
    feature_rows: str  # L_feature averages over "real" utterances or "all" rows of the padded grid
    head_normalisation: str  # the AMW head normalises each "class" vector, each "feature" row, or "none"
    cosine_scale: float  # s, multiplying the head's cosines

    @classmethod
    def of(cls, compat: str, mmcosine: bool, amw_scale: float | None) -> "Semantics":
        method = compat == "method"
        if amw_scale is None:
            amw_scale = DEFAULT_AMW_SCALE if method else 1.0  # the public code has no scale
        return cls(
            mask_padding=method,
            mean_over_padding=not method,
            feature_target="attention" if method else "output",
            feature_rows="real" if method else "all",
            head_normalisation=("class" if method else "feature") if mmcosine else "none",
            cosine_scale=float(amw_scale),
        )


class _Config:
    """Shared by both configs: presets, copies with changes, and (de)serialisation."""

    _PRESETS: dict = {}

    @classmethod
    def preset(cls, dataset: str, **overrides):
        """The published settings of ``dataset`` (SPEC §4), with keyword overrides."""
        check_dataset(dataset)
        return cls(**{**cls._preset_values(dataset), **overrides})

    @classmethod
    def _preset_values(cls, dataset: str) -> dict:
        return dict(cls._PRESETS[dataset])

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))


@dataclass
class Ada2IConfig(_Config):
    """The model's hyperparameters (SPEC §2): what a checkpoint's weights mean.
    ``Ada2IConfig.preset("meld")`` gives the published ones."""

    _PRESETS = _MODEL_PRESETS

    modalities: str = ORDER
    input_dims: dict[str, int] = field(default_factory=lambda: dict(DATASET_DIMS["iemocap"]))
    num_classes: int = 6
    hidden: int = 300
    rank: int = 11
    beta: float = 0.012
    encoder: str = "transformer"
    encoder_nlayers: int = 2
    ffn_dim: int = 2048
    mmt_nlayers: int = 2
    drop_rate: float = 0.5
    mmcosine: bool = True
    amw_scale: float | None = None  # s of the cosine head; None: DEFAULT_AMW_SCALE (method), 1 (reference)
    lambda_modal: float = 0.0
    compat: str = "method"

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def _preset_values(cls, dataset: str) -> dict:
        return dict(_MODEL_PRESETS[dataset], input_dims=dict(DATASET_DIMS[dataset]),
                    num_classes=len(DATASET_CLASSES[dataset]))

    @classmethod
    def from_dict(cls, values: dict) -> "Ada2IConfig":
        """The config of a saved ``to_dict``; training fields stored by checkpoints written before the
        recipe moved to :class:`TrainConfig` are dropped."""
        values = {k: v for k, v in values.items() if k not in TrainConfig.field_names()}
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"unknown Ada2IConfig field(s): {', '.join(unknown)}")
        return cls(**values)

    def validate(self) -> None:
        bad = [m for m in self.modalities if m not in ORDER]
        if not self.modalities or bad:
            raise ValueError(f"modalities must be a non-empty subset of {ORDER!r}, got {self.modalities!r}")
        if len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"modalities must not repeat, got {self.modalities!r}")
        for m in self.modalities:
            dim = self.input_dims.get(m)
            if not isinstance(dim, int) or dim < 1:
                raise ValueError(f"input_dims[{m!r}] must be a positive int, got {dim!r}")
        _check_int("num_classes", self.num_classes, 2)
        _check_int("hidden", self.hidden, 1)
        _check_int("rank", self.rank, 1)
        _check_int("encoder_nlayers", self.encoder_nlayers, 1)
        _check_int("ffn_dim", self.ffn_dim, 1)
        _check_int("mmt_nlayers", self.mmt_nlayers, 0)
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {self.encoder!r}")
        if self.encoder == "lstm" and self.hidden % 2:
            raise ValueError(f"the bidirectional LSTM encoder needs an even hidden size, got {self.hidden}")
        if self.compat not in COMPAT_MODES:
            raise ValueError(f"compat must be one of {COMPAT_MODES}, got {self.compat!r}")
        if not 0.0 <= self.drop_rate < 1.0:
            raise ValueError(f"drop_rate must lie in [0, 1), got {self.drop_rate}")
        if self.amw_scale is not None and not self.amw_scale > 0:
            raise ValueError(f"amw_scale must be positive (or None for the mode's default), got {self.amw_scale}")
        if self.lambda_modal < 0:
            raise ValueError(f"lambda_modal must be non-negative, got {self.lambda_modal}")

    @property
    def n_modalities(self) -> int:
        return len(self.modalities)

    @property
    def semantics(self) -> Semantics:
        return Semantics.of(self.compat, self.mmcosine, self.amw_scale)

    @property
    def cosine_scale(self) -> float:
        """The s that multiplies the AMW head's cosines (see :class:`Semantics`)."""
        return self.semantics.cosine_scale


@dataclass
class TrainConfig(_Config):
    """The training recipe (SPEC §3, §4) and how a run executes. ``TrainConfig.preset("meld")``."""

    _PRESETS = _TRAIN_PRESETS

    # balancing (SPEC §3)
    alpha: float = 0.037
    modulation: bool = True
    grad_noise: bool = True
    start_mod: int = 4
    end_mod: int = 50
    # recipe (SPEC §4)
    lr: float = 1.7e-4
    weight_decay: float = 1e-8
    batch_size: int = 10
    epochs: int = 50
    patience: int = 20
    max_grad_norm: float = 2.0
    seed: int = 12
    max_skipped_steps: int = 20  # stop after this many consecutive steps with a non-finite loss or gradient
    # execution
    device: str = "cpu"
    precision: str = "fp32"  # "bf16": bfloat16 autocast of the forward pass
    bucket: bool = True  # length-bucketed batches
    compile: bool = False  # torch.compile the encoders
    log_every: int = 0  # read the running loss every N steps (0: once per epoch)
    progress: bool = True  # tqdm bars
    trace: bool = False  # per-step balance diagnostics in steps.jsonl

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        _check_int("batch_size", self.batch_size, 1)
        _check_int("epochs", self.epochs, 1)
        _check_int("patience", self.patience, 1)
        _check_int("log_every", self.log_every, 0)
        _check_int("max_skipped_steps", self.max_skipped_steps, 1)
        for name in ("lr", "max_grad_norm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("weight_decay", "alpha"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)}")
        if self.start_mod > self.end_mod:
            raise ValueError(f"start_mod ({self.start_mod}) must not exceed end_mod ({self.end_mod})")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")

    def modulates(self, epoch: int) -> bool:
        """Whether gradient modulation runs in ``epoch`` (1-based)."""
        return self.modulation and self.start_mod <= epoch <= self.end_mod


def _check_int(name: str, value, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
