"""Configuration: the model (:class:`Ada2IConfig`, what the weights mean), the recipe
(:class:`TrainConfig`, how they are trained), the published presets of both, and
:class:`Semantics`, ``compat`` resolved once into the flags the modules read (SPEC §5).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from .datasets import DatasetSpec, dataset_spec
from .devices import PRECISIONS, default_device
from .kernels import BACKENDS
from .modalities import ORDER

ENCODERS = ("transformer", "lstm")
CURVES = ("method", "continuous")  # modules.balance.modulation_coefficients
TARGETS = ("gradient", "update")  # what k scales: the encoder's gradient (the method) or its optimizer update
OPTIMIZERS = ("adam", "sgd")  # training.optim
COMPAT_MODES = ("method", "reference")
ROLES = ("model", "data", "recipe", "execution")

MAX_LAYERS = 1000  # encoder_nlayers and mmt_nlayers: the method stacks 2; more than this is a damaged config
MAX_SCALE = 1e6  # beta, amw_scale and lambda_modal: multipliers of float32 activations (the method's are at most 10)

# The cosine head's scale s (SPEC §2). Chosen on dev splits: see README "The cosine head's scale".
DEFAULT_AMW_SCALE = 10.0


def setting(default=dataclasses.MISSING, *, role: str, help: str, choices=None, resumable: bool = False,
            default_factory=dataclasses.MISSING):
    """A config field that declares, once, what it is: its ``role`` (``model``: what the weights
    mean; ``data``: read from the corpus, never a flag; ``recipe``: how they are trained;
    ``execution``: how a run executes), its flag's help and choices, and whether ``--resume`` may
    change it (``resumable``: it changes neither the numbers nor the files of a run)."""
    assert role in ROLES, role
    metadata = dict(role=role, help=help, choices=choices, resumable=resumable)
    return field(default=default, default_factory=default_factory, metadata=metadata)


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
    """Shared by both configs: presets, copies with changes, (de)serialisation and field roles."""

    @classmethod
    def preset(cls, dataset: str, **overrides):
        """The published settings of ``dataset`` (SPEC §4), with keyword overrides."""
        return cls(**{**cls._preset_values(dataset_spec(dataset)), **overrides})

    @classmethod
    def _preset_values(cls, spec: DatasetSpec) -> dict:
        raise NotImplementedError

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict, where: str | None = None):
        """The config of a saved ``to_dict``; an unknown field or a bad value is a ``ValueError``
        (prefixed with ``where``, the file it came from)."""
        try:
            unknown = sorted(set(values) - set(cls.field_names()))
            if unknown:
                raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(map(str, unknown))}")
            return cls(**values)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where}: {error}" if where else str(error)) from None

    def check_switches(self) -> None:
        """Every bool field is a bool (``"no"`` from a hand-edited JSON file is not false)."""
        for f in dataclasses.fields(self):
            if f.type == "bool" and not isinstance(getattr(self, f.name), bool):
                raise ValueError(f"{f.name} must be true or false, got {getattr(self, f.name)!r:.80}")

    @classmethod
    def field_names(cls, *roles: str) -> tuple[str, ...]:
        """Every field's name, or those of the given roles."""
        return tuple(f.name for f in dataclasses.fields(cls) if not roles or f.metadata["role"] in roles)

    @classmethod
    def resumable_fields(cls) -> tuple[str, ...]:
        """The fields ``--resume`` may change (they change neither a run's numbers nor its files)."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.metadata["resumable"])


@dataclass
class Ada2IConfig(_Config):
    """The model's hyperparameters (SPEC §2): what a checkpoint's weights mean. The defaults are the
    iemocap preset; ``Ada2IConfig.preset("meld")`` gives another dataset's."""

    modalities: str = setting(ORDER, role="model", help="which modalities the model uses, e.g. at (default: those "
                              "of atv the data has). The order is kept and is the order of the AFW chain products "
                              "(SPEC §2): with three modalities another order (avt) is another model; with two, ta "
                              "is at with another random initialisation. Defaults, hints and sweeps use atv's order")
    input_dims: dict[str, int] = setting(role="data", help="feature dim per modality",
                                         default_factory=lambda: dict(dataset_spec("iemocap").dims))
    num_classes: int = setting(6, role="data", help="number of classes")
    class_names: tuple[str, ...] | None = setting(None, role="data", help="the classes' names in index order (the "
                                                  "corpus's; config.json's id2label); None: unnamed")
    hidden: int = setting(300, role="model", help="hidden size h shared by the encoders' outputs, AFW and the head")
    rank: int = setting(11, role="model", help="tensor rank R of the AFW tensor ring")
    beta: float = setting(0.012, role="model", help="AFW residual weight: Y = A*H + beta*H")
    encoder: str = setting("transformer", role="model", choices=ENCODERS, help="per-modality context encoder")
    encoder_nlayers: int = setting(2, role="model", help="layers of each encoder")
    ffn_dim: int = setting(2048, role="model", help="feed-forward width of the transformer encoders")
    mmt_nlayers: int = setting(2, role="model", help="stacked AFW layers (0: no AFW, as --no-afw)")
    drop_rate: float = setting(0.5, role="model", help="dropout in the encoders and after each AFW layer")
    mmcosine: bool = setting(True, role="model", help="the AMW cosine head (--no-mmcosine: the concat head, as --no-amw)")
    amw_scale: float | None = setting(None, role="model", help="the cosine head's s (default: 10 in method mode, 1 "
                                      "with --compat reference)")
    lambda_modal: float = setting(0.0, role="model", help="weight of the auxiliary loss sum_m CE(unimodal logits "
                                  "of m), which the public code never adds")
    compat: str = setting("method", role="model", choices=COMPAT_MODES,
                          help="method: the paper's semantics; reference: the authors' public code's (SPEC §5)")

    def __post_init__(self) -> None:
        if isinstance(self.class_names, list):  # as JSON gives them back
            self.class_names = tuple(self.class_names)
        self.validate()

    @classmethod
    def _preset_values(cls, spec: DatasetSpec) -> dict:
        return dict(spec.model_preset, input_dims=dict(spec.dims), num_classes=len(spec.classes))

    @property
    def id2label(self) -> dict[int, str]:
        """Class index -> name, as Hugging Face configs have it (empty when the classes are unnamed)."""
        return dict(enumerate(self.class_names or ()))

    @property
    def label2id(self) -> dict[str, int]:
        """Class name -> index, the inverse of ``id2label`` (as in Hugging Face configs)."""
        return {name: i for i, name in self.id2label.items()}

    @classmethod
    def from_dict(cls, values: dict, where: str | None = None) -> "Ada2IConfig":
        """As :meth:`_Config.from_dict`; training fields stored by checkpoints written before the
        recipe moved to :class:`TrainConfig` are dropped."""
        return super().from_dict({k: v for k, v in values.items() if k not in TrainConfig.field_names()}, where)

    def validate(self) -> None:
        """Every field's type, range and finiteness, before anything is built from the config (a model's
        size against this machine's memory is :func:`memory.check_model_fits`'s)."""
        if not isinstance(self.modalities, str) or not self.modalities or any(m not in ORDER for m in self.modalities):
            raise ValueError(f"modalities must be a non-empty string of letters from {ORDER!r}, got {self.modalities!r}")
        if len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"modalities must not repeat, got {self.modalities!r}")
        if not isinstance(self.input_dims, dict):
            raise ValueError(f"input_dims must map each modality to its feature dim, got {self.input_dims!r:.80}")
        for m in self.modalities:
            _check_int(f"input_dims[{m!r}]", self.input_dims.get(m), 1)
        _check_int("num_classes", self.num_classes, 2)
        names = self.class_names
        if names is not None and (not isinstance(names, tuple) or len(names) != self.num_classes or len(set(names))
                                  != len(names) or not all(isinstance(n, str) and n for n in names)):
            raise ValueError(f"class_names must be {self.num_classes} distinct non-empty strings (one per class), "
                             f"got {names!r:.200}")
        _check_int("hidden", self.hidden, 1)
        _check_int("rank", self.rank, 1)
        _check_int("encoder_nlayers", self.encoder_nlayers, 1, MAX_LAYERS)
        _check_int("ffn_dim", self.ffn_dim, 1)
        _check_int("mmt_nlayers", self.mmt_nlayers, 0, MAX_LAYERS)
        _check_choice("encoder", self.encoder, ENCODERS)
        if self.encoder == "lstm" and self.hidden % 2:
            raise ValueError(f"the bidirectional LSTM encoder needs an even hidden size, got {self.hidden}")
        _check_choice("compat", self.compat, COMPAT_MODES)
        self.check_switches()
        _check_real("beta", self.beta, -MAX_SCALE, MAX_SCALE)
        if abs(self.beta) > 1 and self.mmt_nlayers * math.log(abs(self.beta)) > 2 * math.log(MAX_SCALE):
            # Y = A*H + beta*H, once per AFW layer
            raise ValueError(f"beta {self.beta} over {self.mmt_nlayers} AFW layers scales the features by |beta|^"
                             f"{self.mmt_nlayers} > {MAX_SCALE**2:g}, past what float32 activations hold")
        _check_real("drop_rate", self.drop_rate, 0.0, 1.0, below_high=True)
        if self.amw_scale is not None:
            _check_real("amw_scale", self.amw_scale, 0.0, MAX_SCALE, above_low=True)
        _check_real("lambda_modal", self.lambda_modal, 0.0, MAX_SCALE)

    @property
    def n_modalities(self) -> int:
        """M, the number of modalities the model uses."""
        return len(self.modalities)

    @property
    def semantics(self) -> Semantics:
        """``compat`` resolved into the flags the modules read (:class:`Semantics`)."""
        return Semantics.of(self.compat, self.mmcosine, self.amw_scale)

    @property
    def cosine_scale(self) -> float:
        """The s that multiplies the AMW head's cosines (see :class:`Semantics`)."""
        return self.semantics.cosine_scale


@dataclass
class TrainConfig(_Config):
    """The training recipe (SPEC §3, §4) and how a run executes. The defaults are the iemocap
    preset; ``TrainConfig.preset("meld")`` gives another dataset's."""

    # balancing (SPEC §3)
    alpha: float = setting(0.037, role="recipe", help="modulation strength: k_m = 1 - tanh(alpha * rho_m) where "
                           "rho_m > 1")
    modulation: bool = setting(True, role="recipe", help="gradient modulation of the encoders by k_m (SPEC §3)")
    modulation_curve: str = setting("method", role="recipe", choices=CURVES,
                                    help="method: k = 1 - tanh(alpha*rho) for rho > 1 (SPEC §3); continuous: "
                                    "k = 1 - tanh(alpha*(rho - 1)), not the method (README, balance study)")
    modulation_target: str = setting("gradient", role="recipe", choices=TARGETS,
                                     help="gradient: scale each encoder's gradient by k (the method, SPEC §3); "
                                     "update: scale each encoder's optimizer update by k instead, what scaling the "
                                     "gradient does under SGD (Adam normalises a lasting gradient scale away; README, "
                                     "balance study)")
    grad_noise: bool = setting(True, role="recipe", help="with modulation, add N(0, std(g)^2) to each encoder "
                               "gradient (the public code's --normalize)")
    start_mod: int = setting(4, role="recipe", help="first epoch with modulation (1-based; a run of fewer --epochs "
                             "never modulates, and its start line says so)")
    end_mod: int = setting(50, role="recipe", help="last epoch with modulation")
    # recipe (SPEC §4)
    optimizer: str = setting("adam", role="recipe", choices=OPTIMIZERS,
                             help="adam: the recipe's (SPEC §4); sgd: SGD with momentum 0.9 and the recipe's weight "
                             "decay, the optimizer OGM-GE's gradient modulation was designed for (a control; its --lr "
                             "must be chosen for it)")
    lr: float = setting(1.7e-4, role="recipe", help="the optimizer's learning rate")
    weight_decay: float = setting(1e-8, role="recipe", help="the optimizer's weight decay")
    batch_size: int = setting(10, role="recipe", help="dialogues per batch")
    epochs: int = setting(50, role="recipe", resumable=True,
                          help="most epochs to train; with --resume, a larger number extends a stopped or finished run")
    patience: int = setting(20, role="recipe", help="stop after this many epochs without a better dev weighted F1")
    max_grad_norm: float = setting(2.0, role="recipe", help="global gradient-norm clip")
    seed: int = setting(12, role="recipe", help="seeds the weights, dropout, batch order, noise and a synthetic corpus")
    max_skipped_steps: int = setting(20, role="recipe", help="stop after this many consecutive steps with a "
                                     "non-finite loss or gradient")
    # execution
    device: str = setting(role="execution", resumable=True, default_factory=default_device,
                          help="where to train, e.g. cpu, cuda, cuda:1 (default: cuda where there is one, else cpu)")
    backend: str = setting("auto", role="execution", resumable=True, choices=BACKENDS,
                           help="the fused ops' implementation: auto is Triton on CUDA and torch on the CPU")
    precision: str = setting("fp32", role="execution", choices=PRECISIONS,
                             help="bf16: bfloat16 autocast of the forward pass; auto: bf16 where the device computes "
                             "it natively")
    bucket: bool = setting(True, role="execution", help="length-bucketed batches (less padding)")
    compile: bool = setting(False, role="execution", help="torch.compile the encoders")
    log_every: int = setting(0, role="execution", resumable=True,
                             help="show the running loss every N steps (0: once per epoch)")
    progress: bool = setting(True, role="execution", resumable=True, help="progress bars (--quiet: none)")
    keep_last: bool = setting(False, role="execution", resumable=True,
                              help="keep last.pt and best.pt (the state to continue from) when the run ends, to "
                              "extend it later with --resume DIR --epochs N; model/ holds the best-dev model anyway")
    tensorboard: bool = setting(False, role="execution", resumable=True,
                                help="also write TensorBoard event files into OUT/tensorboard (per step: loss, each "
                                "modality's rho and k; per epoch: losses, dev and unimodal F1, lr, throughput, the dev "
                                "confusion matrix; at the run's last epoch: the best-dev model's test scores); needs "
                                'pip install "ada2i-fast[tensorboard]"')
    trace: bool = setting(False, role="execution", help="write steps.jsonl: per step, each modality's score, rho, "
                          "k, encoder gradient norm before and after modulation and weight update norm")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise a ``ValueError`` naming the first field whose value the recipe cannot take."""
        self.check_switches()
        _check_int("batch_size", self.batch_size, 1)
        _check_int("epochs", self.epochs, 1)
        _check_int("patience", self.patience, 1)
        _check_int("log_every", self.log_every, 0)
        _check_int("max_skipped_steps", self.max_skipped_steps, 1)
        _check_int("seed", self.seed, 0)
        _check_int("start_mod", self.start_mod, 1)
        _check_int("end_mod", self.end_mod, 1)
        for name in ("lr", "max_grad_norm"):
            _check_real(name, getattr(self, name), 0.0, math.inf, above_low=True)
        for name in ("weight_decay", "alpha"):
            _check_real(name, getattr(self, name), 0.0, math.inf)
        if self.start_mod > self.end_mod:
            raise ValueError(f"start_mod ({self.start_mod}) must not exceed end_mod ({self.end_mod})")
        for name, choices in (("modulation_curve", CURVES), ("modulation_target", TARGETS), ("optimizer", OPTIMIZERS),
                              ("precision", PRECISIONS)):
            _check_choice(name, getattr(self, name), choices)

    def modulates(self, epoch: int) -> bool:
        """Whether gradient modulation runs in ``epoch`` (1-based)."""
        return self.modulation and self.start_mod <= epoch <= self.end_mod

    def unmodulated_note(self) -> str | None:
        """Why gradient modulation, switched on, never runs in a run of this recipe (its first epoch
        comes after the last); None when it runs or is switched off."""
        if self.modulation and self.start_mod > self.epochs:
            return (f"gradient modulation never runs: it starts at epoch {self.start_mod} (--start-mod), after the "
                    f"run's last (--epochs {self.epochs})")
        return None

    @classmethod
    def _preset_values(cls, spec: DatasetSpec) -> dict:
        return dict(spec.train_preset)


def _check_int(name: str, value, minimum: int, maximum: int | None = None) -> None:
    if (not isinstance(value, int) or isinstance(value, bool) or value < minimum
            or (maximum is not None and value > maximum)):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be an int {bound}, got {value!r:.80}")


def _check_real(name: str, value, low: float, high: float, *, above_low: bool = False,
                below_high: bool = False) -> None:
    """``value``: an int or float (not a bool) in [low, high], the ends excluded where asked."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if (not number or value < low or value > high or (above_low and value == low)
            or (below_high and value == high)):
        interval = f"{'(' if above_low else '['}{low:g}, {high:g}{')' if below_high or math.isinf(high) else ']'}"
        raise ValueError(f"{name} must be a finite number in {interval}, got {value!r:.80}")


def _check_choice(name: str, value, choices: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r:.80}")
