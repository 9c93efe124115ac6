"""Every hyperparameter of Ada2I (SPEC §2–§5) and the published presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

MODALITIES = "atv"
ENCODERS = ("transformer", "lstm")
COMPAT_MODES = ("method", "reference")

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
_PRESETS = {
    "iemocap": dict(hidden=300, lr=1.7e-4, alpha=0.037, beta=0.012, rank=11, start_mod=4),
    "meld": dict(hidden=200, lr=1.3e-4, alpha=0.42, beta=0.55, rank=6, start_mod=4),
    "mosei": dict(hidden=200, lr=2e-4, alpha=0.5, beta=0.7, rank=8, start_mod=1),
}
DATASETS = tuple(_PRESETS)


@dataclass
class Ada2IConfig:
    """Model and training hyperparameters. ``Ada2IConfig.preset("meld")`` gives the published ones."""

    # model (SPEC §2)
    modalities: str = "atv"
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
    # balancing (SPEC §3)
    alpha: float = 0.037
    modulation: bool = True
    grad_noise: bool = True
    start_mod: int = 4
    end_mod: int = 50
    # training recipe (SPEC §4)
    lr: float = 1.7e-4
    weight_decay: float = 1e-8
    batch_size: int = 10
    epochs: int = 50
    patience: int = 20
    max_grad_norm: float = 2.0
    seed: int = 12

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def preset(cls, dataset: str, **overrides) -> "Ada2IConfig":
        """The published settings of ``dataset`` (SPEC §4), with keyword overrides."""
        if dataset not in _PRESETS:
            raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
        base = dict(
            _PRESETS[dataset],
            input_dims=dict(DATASET_DIMS[dataset]),
            num_classes=len(DATASET_CLASSES[dataset]),
        )
        base.update(overrides)
        return cls(**base)

    def replace(self, **changes) -> "Ada2IConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "Ada2IConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown Ada2IConfig field(s): {', '.join(unknown)}")
        return cls(**values)

    def validate(self) -> None:
        bad = [m for m in self.modalities if m not in MODALITIES]
        if not self.modalities or bad:
            raise ValueError(f"modalities must be a non-empty subset of {MODALITIES!r}, got {self.modalities!r}")
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
        _check_int("batch_size", self.batch_size, 1)
        _check_int("epochs", self.epochs, 1)
        _check_int("patience", self.patience, 1)
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {self.encoder!r}")
        if self.encoder == "lstm" and self.hidden % 2:
            raise ValueError(f"the bidirectional LSTM encoder needs an even hidden size, got {self.hidden}")
        if self.compat not in COMPAT_MODES:
            raise ValueError(f"compat must be one of {COMPAT_MODES}, got {self.compat!r}")
        if not 0.0 <= self.drop_rate < 1.0:
            raise ValueError(f"drop_rate must lie in [0, 1), got {self.drop_rate}")
        for name in ("lr", "max_grad_norm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.amw_scale is not None and not self.amw_scale > 0:
            raise ValueError(f"amw_scale must be positive (or None for the mode's default), got {self.amw_scale}")
        for name in ("weight_decay", "lambda_modal", "alpha"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)}")
        if self.start_mod > self.end_mod:
            raise ValueError(f"start_mod ({self.start_mod}) must not exceed end_mod ({self.end_mod})")

    @property
    def n_modalities(self) -> int:
        return len(self.modalities)

    @property
    def cosine_scale(self) -> float:
        """The s that multiplies the AMW head's cosines: ``amw_scale``, else the mode's default
        (the public code has no scale, so ``compat="reference"`` uses 1)."""
        if self.amw_scale is not None:
            return float(self.amw_scale)
        return DEFAULT_AMW_SCALE if self.compat == "method" else 1.0


def _check_int(name: str, value, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
