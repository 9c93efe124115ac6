"""From parsed trainer flags to a run ready to train: the data, the configs, the output folder and,
for ``--resume``, the saved state. ``python -m ada2i_fast.train`` and the studies (sweep, tune)
set up their runs here, and both run them with :meth:`RunSetup.run`."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..cli import add_config_flags, add_data_flag, add_recipe_flags, changed_flags
from ..config import Ada2IConfig, TrainConfig
from ..data import Corpus, load_corpus
from ..data.synthetic import FAMILIES
from ..datasets import DATASETS
from ..devices import default_device
from ..kernels import use_backend
from .distributed import SINGLE, Context
from .run_folder import (
    RunLock, data_identity, fresh_run_dir, prepare_out, read_run_identity, remove_torn_writes, write_run_identity,
)
from .run_state import RunState, load_state
from .trainer import Trainer


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``python -m ada2i_fast.train``, which the studies parse a trial's flags with too."""
    parser = argparse.ArgumentParser(
        prog="python -m ada2i_fast.train",
        description="Train and evaluate Ada2I. Hyperparameters default to the dataset's preset.",
    )
    parser.add_argument("--dataset", choices=tuple(DATASETS), default="meld",
                        help="picks the preset and the data layout (default: meld)")
    add_data_flag(parser, "legacy pickle, columnar cache or transcript corpus; without one, a synthetic corpus "
                  "of the dataset's shape")
    parser.add_argument("--size", type=float, default=1.0,
                        help="synthetic corpus size as a fraction of the real one (default: 1)")
    parser.add_argument("--synthetic", choices=FAMILIES, default="redundant",
                        help="the synthetic corpus's family: every modality carries the whole label (redundant), or "
                        "text merges classes that only audio or visual tell apart (complementary) (default: redundant)")
    parser.add_argument("--task", choices=("7class", "2class"), default="7class", help="MOSEI label set (default: 7class)")
    parser.add_argument("--out", default=None, help="output folder (default: a new runs/<dataset>/<date-time>); one "
                        "that holds a run is refused, naming what works for that run: --resume DIR for a stopped one, "
                        "--resume DIR --epochs N for a finished one that kept its last.pt, --overwrite or another --out")
    parser.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    parser.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last.pt (its own settings; "
                        "no --config)")
    add_recipe_flags(parser, "the flags")
    ablation = parser.add_argument_group("ablations (the paper's; each recorded in summary.json)")
    ablation.add_argument("--no-afw", action="store_true", help="encoders straight to the head (--mmt-nlayers 0)")
    ablation.add_argument("--no-amw", action="store_true", help="the concat head instead of the cosine one (--no-mmcosine)")
    add_config_flags(parser, Ada2IConfig, "model", "model hyperparameters (default: the dataset's preset)")
    add_config_flags(parser, TrainConfig, "recipe", "training recipe (default: the dataset's preset)")
    execution = add_config_flags(parser, TrainConfig, "execution", "execution (--resume may change --device, "
                                 "--backend, --log-every and the progress bars)")
    execution.add_argument("--quiet", dest="progress", action="store_false", default=None, help="no progress bars")
    return parser


@dataclass
class RunSetup:
    corpus: Corpus
    model_config: Ada2IConfig
    train_config: TrainConfig
    out: Path
    run_info: dict
    state: RunState | None = None  # what --resume continues from
    lock: RunLock | None = None  # held on the process that writes the folder

    def run(self, on_epoch_end: Callable[[dict], None] | None = None) -> dict:
        """Train (or continue) the run; returns its summary. The folder stays locked until it ends."""
        try:
            with use_backend(self.train_config.backend):
                trainer = Trainer(self.corpus, self.model_config, self.train_config, self.out, self.run_info,
                                  on_epoch_end=on_epoch_end)
                return trainer.run(resume=self.state)
        finally:
            if self.lock is not None:
                self.lock.release()


def open_corpus(dataset: str, data: str | None, *, seed: int, size: float, task: str, synthetic: str = "redundant",
                announce: bool = True) -> Corpus:
    """The corpus of ``data``, or the synthetic corpus of ``dataset`` (family ``synthetic``) when
    ``data`` is None (said on stderr when ``announce``)."""
    if data and not Path(data).exists():
        raise ValueError(f"--data {data}: no such file or folder")
    if data and synthetic != "redundant":
        raise ValueError(f"--synthetic {synthetic} chooses the corpus made without --data; drop one of them")
    if not data and announce:
        print(f"no data file given (--data or ADA2I_DATA); training on the synthetic {dataset} corpus "
              f"({synthetic})", file=sys.stderr)
    corpus = load_corpus(dataset, data, seed=seed, synthetic_size=size, task=task, synthetic=synthetic)
    return corpus.validate(num_classes=len(corpus.classes))


def recipe_from_args(args: argparse.Namespace) -> TrainConfig:
    """The recipe and execution options: the preset of ``--dataset`` with the flags given."""
    chosen = {k: v for k, v in vars(args).items() if v is not None and k in TrainConfig.field_names()}
    with _naming_flags(args):
        return TrainConfig.preset(args.dataset, **chosen)


def model_settings(args: argparse.Namespace) -> dict:
    """The model fields the flags give, with --no-afw and --no-amw as the fields they set."""
    chosen = {k: v for k, v in vars(args).items() if v is not None and k in Ada2IConfig.field_names("model")}
    if args.no_afw:
        if chosen.get("mmt_nlayers", 0):
            raise ValueError(f"{flag_name(args, 'no_afw')} and {flag_name(args, 'mmt_nlayers')} contradict each other")
        chosen["mmt_nlayers"] = 0
    if args.no_amw:
        if chosen.get("mmcosine"):
            raise ValueError(f"{flag_name(args, 'no_amw')} and {flag_name(args, 'mmcosine')} contradict each other")
        chosen["mmcosine"] = False
    return chosen


def configs_from_args(args: argparse.Namespace, corpus: Corpus) -> tuple[Ada2IConfig, TrainConfig]:
    """The preset of ``--dataset`` with the flags given, and the corpus's dims and classes; a bad
    value is a ``ValueError`` naming its flag (or its recipe file and key)."""
    chosen = model_settings(args)
    if "modalities" not in chosen:  # the preset's modalities that the data has (transcripts: "t")
        preset = Ada2IConfig.preset(args.dataset).modalities
        chosen["modalities"] = "".join(m for m in preset if m in corpus.dims) or preset
    with _naming_flags(args):
        model_config = Ada2IConfig.preset(args.dataset, **chosen)
    missing = [m for m in model_config.modalities if m not in corpus.dims]
    if missing:
        raise ValueError(f"the data has no modality {missing[0]!r} (it has {corpus.modalities!r})")
    model_config = model_config.replace(
        input_dims={m: corpus.dims[m] for m in model_config.modalities}, num_classes=len(corpus.classes),
        class_names=tuple(corpus.classes),
    )
    return model_config, recipe_from_args(args)


def resolved_flags(args: argparse.Namespace) -> dict:
    """Every trainer flag of a new run of ``args`` by destination, the dataset's preset filling in
    those not given: what ``--print-config`` writes. Left None (the default): ``modalities`` and
    ``device``, which the data and the machine decide, and the settings whose default is None."""
    chosen = model_settings(args)
    with _naming_flags(args):
        model_config = Ada2IConfig.preset(args.dataset, **chosen)
    values = {name: getattr(args, name) for name in ("dataset", "data", "size", "synthetic", "task", "out", "overwrite")}
    values.update({name: getattr(model_config, name) for name in Ada2IConfig.field_names("model")})
    values.update(recipe_from_args(args).to_dict())
    values.update(modalities=chosen.get("modalities"), device=args.device)
    return values


def flag_name(args: argparse.Namespace, dest: str) -> str:
    """How a message names the setting ``dest``: its recipe file and key where the file gave it, else its flag."""
    return getattr(args, "from_file", {}).get(dest) or "--" + dest.replace("_", "-")


@contextlib.contextmanager
def _naming_flags(args: argparse.Namespace):
    """A config's ``ValueError("field must ...")`` as ``ValueError("--field must ...")`` (or naming
    the recipe file and key that gave the field)."""
    try:
        yield
    except ValueError as error:
        field, _, rest = str(error).partition(" ")
        if field in (*Ada2IConfig.field_names(), *TrainConfig.field_names()):
            raise ValueError(f"{flag_name(args, field)} {rest}") from None
        raise


def new_run(args: argparse.Namespace, context: Context = SINGLE, corpora: dict | None = None) -> RunSetup:
    """The data, configs and fresh output folder of a new run (the folder made by rank 0).
    ``corpora``: a cache of the corpora already opened by this process (a study's worker)."""
    seed = recipe_from_args(args).seed  # a bad flag fails here, before any data is read
    key = (args.dataset, args.data, seed, args.size, args.task, args.synthetic)

    def load():
        if corpora is not None and key in corpora:
            corpus = corpora[key]
        else:
            corpus = open_corpus(args.dataset, args.data, seed=seed, size=args.size, task=args.task,
                                 synthetic=args.synthetic, announce=context.is_main)
        if corpora is not None:
            corpora[key] = corpus
        return (corpus, *configs_from_args(args, corpus), data_identity(corpus))

    corpus, model_config, train_config, identity = context.on_every_rank(load)
    context.agree(identity, "loaded other data than rank 0 (their fingerprints differ); every process needs the "
                  "same --data")
    synthetic = {} if args.data else dict(size=args.size, synthetic=args.synthetic)  # what made the corpus
    run_info = dict(dataset=args.dataset, data=corpus.source, **synthetic, task=args.task,
                    classes=list(corpus.classes), data_identity=identity, run_id=uuid.uuid4().hex)
    locks = []

    def make_out() -> tuple[str, str]:
        out = Path(args.out) if args.out else fresh_run_dir(Path("runs") / args.dataset)
        locks.append(prepare_out(out, overwrite=args.overwrite))
        write_run_identity(out, dict(run_id=run_info["run_id"], started=time.strftime("%Y-%m-%d %H:%M:%S"),
                                     **{k: v for k, v in run_info.items() if k != "run_id"},
                                     model_config=model_config.to_dict(), train_config=train_config.to_dict()))
        return str(out), run_info["run_id"]

    out, run_info["run_id"] = context.on_main(make_out)  # every rank records rank 0's run id
    return RunSetup(corpus, model_config, train_config, Path(out), run_info, lock=locks[0] if locks else None)


def resumed_run(args: argparse.Namespace, parser: argparse.ArgumentParser, context: Context = SINGLE) -> RunSetup:
    """The configs, data and state of the run in ``--resume DIR``, refusing flags that would change
    what it computes (the resumable execution fields may change). In a process group rank 0 reads
    the state and gives it to every process; each opens the data."""
    resumable = TrainConfig.resumable_fields()
    changed = changed_flags(args, parser, allowed={"resume", *resumable})
    if changed:
        raise ValueError(f"--resume continues a run with its own settings; drop {', '.join(changed)}")
    out = Path(args.resume)
    if not args.resume or not out.is_dir():
        raise ValueError(f"--resume {args.resume!r}: no such run folder")
    locks = []

    def read_state() -> RunState:
        locks.append(RunLock(out))
        remove_torn_writes(out)
        if not (out / "last.pt").is_file() and (out / "summary.json").is_file():
            raise ValueError(f"--resume {out}: the run has finished and its last.pt was removed; a run to be extended "
                             f"later needs --keep-last; train a new run there with --out {out} --overwrite, or "
                             "in another --out")
        state = load_state(out)
        state.check_world_size(context.world_size, out)
        check_belongs(state, out)
        return state

    state = context.on_main(read_state)
    run_info = state.run_info
    # Not given: the run's own value, but the device, which is this machine's.
    given = {name: getattr(args, name) for name in resumable if getattr(args, name) is not None}
    train_config = TrainConfig.from_dict({**state.train_config, "device": default_device(), **given},
                                         f"{out / 'last.pt'}")
    model_config = Ada2IConfig.from_dict(state.model_config, f"{out / 'last.pt'}")
    if args.epochs is not None:
        context.on_main(lambda: record_extension(out, state, train_config))
    data = None if run_info["data"].startswith("synthetic") else run_info["data"]

    def load() -> Corpus:
        corpus = open_corpus(run_info["dataset"], data, seed=train_config.seed, size=run_info.get("size", 1.0),
                             task=run_info["task"], synthetic=run_info.get("synthetic", "redundant"),
                             announce=context.is_main)
        if data_identity(corpus) != run_info["data_identity"]:
            raise ValueError(f"--resume {out}: the data at {run_info['data']} changed since the run started")
        return corpus

    corpus = context.on_every_rank(load)
    return RunSetup(corpus, model_config, train_config, out, run_info, state, lock=locks[0] if locks else None)


def record_extension(out: Path, state: RunState, train_config: TrainConfig) -> None:
    """Check that ``--epochs`` extends the run, and add the extension to the launches in ``run.json``."""
    if train_config.epochs <= state.finished_epochs:
        raise ValueError(f"--epochs {train_config.epochs}: the run in {out} has already trained "
                         f"{state.finished_epochs} epoch(s); give more to extend it")
    if state.epoch - state.best_epoch > train_config.patience:
        raise ValueError(f"--epochs: the run in {out} stopped early after epoch {state.finished_epochs} (no better dev "
                         f"F1 for {train_config.patience} epochs); more epochs would not continue it")
    identity = read_run_identity(out)
    if identity is not None:
        extension = dict(at=time.strftime("%Y-%m-%d %H:%M:%S"), after_epoch=state.finished_epochs,
                         epochs=train_config.epochs)
        write_run_identity(out, {**identity, "extensions": [*identity.get("extensions", []), extension]})


def check_belongs(state: RunState, out: Path) -> None:
    """Refuse a ``last.pt`` that another run wrote (copied in from elsewhere): its run id must be the
    folder's (``run.json``), and its weights finite."""
    identity = read_run_identity(out)
    theirs = state.run_info.get("run_id")
    if identity is not None and theirs != identity["run_id"]:
        raise ValueError(f"{out / 'last.pt'} belongs to another run ({theirs or 'one without a run id'}) than the one "
                         f"{out} holds ({identity['run_id']}, started {identity.get('started', '?')}); "
                         "refusing to mix two runs")
    bad = next((name for name, value in state.model.items()
                if getattr(value, "is_floating_point", lambda: False)() and not value.isfinite().all()), None)
    if bad is not None:
        raise ValueError(f"{out / 'last.pt'}: the weight {bad!r} holds NaN or inf; this state cannot be resumed")
