"""What a run saves after every epoch (and when it is interrupted) to continue bit-identically: the
schema of ``last.pt``. Adding a resumable value is one field here; saving and loading follow the
fields."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ..checkpointing.torch_file import read_checkpoint, write_checkpoint
from .run_folder import remove_torn_writes

FORMAT = "ada2i_fast/run-state"


@dataclass
class RunState:
    VERSION: ClassVar[int] = 2

    model_config: dict  # Ada2IConfig.to_dict()
    train_config: dict  # TrainConfig.to_dict()
    run_info: dict  # dataset, data source, size, task, synthetic family, classes, data identity
    model: dict  # state dicts ...
    optimizer: dict
    scheduler: dict
    epoch: int  # the epoch in progress, or the next one after an epoch's end (1-based)
    finished_epochs: int  # epochs with a line in metrics.jsonl
    progress: dict  # trainer.EpochProgress.state_dict() of the epoch in progress
    best_f1: float  # the best dev weighted F1 so far (-1 before any)
    best_epoch: int  # its epoch (0: none yet)
    rng: list[dict]  # per rank: the torch, noise-generator and CUDA random states
    world_size: int = 1  # the processes that trained the run

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": self.VERSION,
                **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}}

    @classmethod
    def from_dict(cls, values, path: Path) -> "RunState":
        """The state in ``values`` (a loaded ``last.pt``), or a ``ValueError`` naming ``path`` and what is wrong."""
        if not isinstance(values, dict) or values.get("format") not in (FORMAT, _FORMAT_1):
            raise ValueError(f"{path}: not a run state of this package (expected format {FORMAT!r})")
        if values["format"] == _FORMAT_1:
            values = _from_version_1(values)
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        missing = sorted(required - set(values))
        if missing:
            raise ValueError(f"{path}: the run state lacks {', '.join(missing)}")
        state = cls(**{k: v for k, v in values.items() if k in names})
        state.validate(path)
        return state

    def validate(self, path: Path) -> None:
        """Every field of the type its annotation names, counts in range and one random state per
        process; a ``ValueError`` naming ``path`` and the field otherwise."""
        for f in dataclasses.fields(self):
            value, kind = getattr(self, f.name), _type_of(f.type)
            if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
                raise ValueError(f"{path}: run state field {f.name!r} should be {str(f.type)}, found {value!r:.60}")
        for name, low in (("epoch", 1), ("finished_epochs", 0), ("best_epoch", 0), ("world_size", 1)):
            if getattr(self, name) < low:
                raise ValueError(f"{path}: run state field {name!r} is {getattr(self, name)}, below {low}")
        if len(self.rng) != self.world_size or not all(isinstance(r, dict) for r in self.rng):
            raise ValueError(f"{path}: run state field 'rng' should hold one random state per process "
                             f"({self.world_size})")

    def check_world_size(self, world_size: int, out: Path) -> None:
        """A run resumes with the number of processes it was trained with (its batches' shards and
        each process's random state depend on it)."""
        if self.world_size != world_size:
            raise ValueError(
                f"--resume {out}: the run was trained by {self.world_size} process(es) and resumes only with as "
                f"many (this launch has {world_size}); launch it the way it was launched"
            )


_FORMAT_1 = "ada2i_fast/run-state/1"
_TYPES = {"dict": dict, "list": list, "int": int, "float": (int, float), "str": str, "bool": bool}


def _type_of(annotation) -> type | tuple[type, ...]:
    """The class an annotation names (``"list[dict]"`` -> list; ``float`` accepts ints too)."""
    name = annotation.split("[")[0] if isinstance(annotation, str) else getattr(annotation, "__origin__", annotation).__name__
    return _TYPES[name]


def _from_version_1(values: dict) -> dict:
    """A state written before :class:`RunState` (one ``rng`` of rank 0 beside ``rng_per_rank``)."""
    values = dict(values)
    values["rng"] = values.pop("rng_per_rank", [values.get("rng")])
    return values


def save_state(path: Path, state: RunState) -> None:
    """Write ``state`` atomically, with checksums."""
    write_checkpoint(path, state.to_dict())


def load_state(run_dir: Path, schema: type[RunState] = RunState) -> RunState:
    """The state saved in ``run_dir/last.pt``; names what is missing or wrong."""
    path = run_dir / "last.pt"
    if run_dir.is_dir():
        remove_torn_writes(run_dir)
    if not path.is_file():
        raise ValueError(f"--resume {run_dir}: no last.pt there (a run writes it after each epoch)")
    return schema.from_dict(read_checkpoint(path), path)
