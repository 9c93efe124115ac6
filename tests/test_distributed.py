"""Distributed training (torch.distributed, gloo on the CPU, 127.0.0.1 only): processes launched as
torchrun would launch them end where one process ends on the same global batches."""

import dataclasses
import json
import os
import signal
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ada2i_fast import train
from ada2i_fast.data import make_synthetic
from ada2i_fast.data.batching import batch_order, iterate_shards, shard_dialogues
from ada2i_fast.data.corpus import dialogue_rows
from ada2i_fast.training import run_setup, trainer
from ada2i_fast.training.step import train_step

DIMS = {"a": 12, "t": 20, "v": 10}  # conftest.tiny_config's
# The meld recipe on a tiny model, modulation with gradient noise in both epochs, no dropout. Batches
# of 3 dialogues: 31 train dialogues make 11 steps an epoch, one of them a global batch of a single
# dialogue (one process's shard is empty); the 8 test dialogues make 3 batches, 2 on rank 0.
FLAGS = ["--dataset", "meld", "--hidden", "16", "--rank", "3", "--ffn-dim", "24", "--drop-rate", "0",
         "--batch-size", "3", "--epochs", "2", "--start-mod", "1", "--grad-noise", "--lr", "2e-3", "--quiet",
         "--device", "cpu", "--keep-last"]


def small_corpus():
    """The synthetic MELD corpus at 0.03 of its size, its features cut to tiny dims."""
    corpus = make_synthetic("meld", seed=0, size=0.03)
    cut = lambda split: {m: np.ascontiguousarray(x[:, : DIMS[m]]) for m, x in split.features.items()}  # noqa: E731
    splits = {name: dataclasses.replace(split, features=cut(split)) for name, split in corpus.splits.items()}
    return dataclasses.replace(corpus, splits=splits)


def _open_small_corpus(*args, **kwargs):
    return small_corpus()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world_size, port, argv, logs, interrupt):
    """One process of a torchrun-like launch: its environment, then the CLI; stdout and stderr to
    ``logs/rank{rank}.txt``, the exit code to ``logs/rank{rank}.code``."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world_size),
                      RANK=str(rank), LOCAL_RANK=str(rank))
    if "lo" in {name for _, name in socket.if_nameindex()}:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    log = open(Path(logs) / f"rank{rank}.txt", "w")
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    sys.stdout, sys.stderr = log, log
    run_setup.open_corpus = _open_small_corpus
    if interrupt is not None and rank == interrupt["rank"]:
        calls = {"n": 0}

        def step(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == interrupt["step"]:
                os.kill(os.getpid(), signal.SIGINT)  # recorded by the handler; the step still runs whole
            return train_step(*args, **kwargs)

        trainer.train_step = step
    try:
        train.main(argv)
        code = 0
    except SystemExit as stopped:
        code = stopped.code
    log.flush()
    (Path(logs) / f"rank{rank}.code").write_text(str(code))


def launch(world_size, argv, logs: Path, interrupt=None) -> list[str]:
    """Run ``train.main(argv)`` in ``world_size`` processes; each one's exit code (as text)."""
    logs.mkdir(parents=True, exist_ok=True)
    mp.spawn(_worker, args=(world_size, _free_port(), argv, str(logs), interrupt), nprocs=world_size, join=True)
    return [(logs / f"rank{rank}.code").read_text() for rank in range(world_size)]


def _last_state(out: Path) -> dict:
    return torch.load(out / "last.pt", weights_only=False)


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same run in one process and in two."""
    root = tmp_path_factory.mktemp("distributed")
    mp_patch = pytest.MonkeyPatch()
    mp_patch.setattr(run_setup, "open_corpus", _open_small_corpus)
    try:
        single = train.main([*FLAGS, "--out", str(root / "one")])
    finally:
        mp_patch.undo()
    assert not dist.is_initialized()  # a plain launch never joins a process group
    codes = launch(2, [*FLAGS, "--tensorboard", "--out", str(root / "two")], root / "logs-two")
    assert codes == ["0", "0"], [(root / "logs-two" / f"rank{r}.txt").read_text() for r in range(2)]
    return root, single


def test_two_processes_train_as_one(runs):
    root, single = runs
    splits = small_corpus().splits  # what FLAGS' comment says of the batches
    assert (splits["train"].num_dialogues % 3, splits["test"].num_dialogues) == (1, 8)
    one, two = _last_state(root / "one"), _last_state(root / "two")
    assert two["world_size"] == 2 and len(two["rng"]) == 2
    for name, want in one["model"].items():
        torch.testing.assert_close(two["model"][name], want, rtol=1e-4, atol=1e-6, msg=name)
    metrics_one, metrics_two = _metrics(root / "one"), _metrics(root / "two")
    assert len(metrics_one) == len(metrics_two) == 2
    for a, b in zip(metrics_one, metrics_two):
        assert b["ratio"] == pytest.approx(a["ratio"], rel=1e-5)
        assert b["coefficient"] == pytest.approx(a["coefficient"], rel=1e-5)
        assert b["train"] == pytest.approx(a["train"], rel=1e-5)
        assert b["unimodal_loss"] == pytest.approx(a["unimodal_loss"], rel=1e-5)
        assert b["dev"]["loss"] == pytest.approx(a["dev"]["loss"], rel=1e-5)
        assert b["dev"]["weighted_f1"] == a["dev"]["weighted_f1"]
    summary = json.loads((root / "two" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["best_epoch"] == single["best_epoch"]
    assert summary["test"]["confusion_matrix"] == single["test"]["confusion_matrix"]
    assert summary["test"]["loss"] == pytest.approx(single["test"]["loss"], rel=1e-5)
    # Rank 0 prints; rank 1 says nothing at all.
    assert "epoch   2" in (root / "logs-two" / "rank0.txt").read_text()
    assert (root / "logs-two" / "rank1.txt").read_text() == ""
    assert len(list((root / "two" / "tensorboard").glob("events.out.tfevents.*"))) == 1  # rank 0's only


def test_interrupted_two_process_run_resumes_with_two_processes_only(runs, tmp_path):
    root, _ = runs
    out = tmp_path / "run"
    # SIGINT reaches rank 1 alone during step 13 (epoch 2's second): its next step carries the
    # request to every process, and all stop after the step after that, mid-epoch 2.
    codes = launch(2, [*FLAGS, "--out", str(out)], tmp_path / "logs-stop", interrupt={"rank": 1, "step": 13})
    assert codes == [str(128 + signal.SIGTERM), str(128 + signal.SIGINT)]
    said = (tmp_path / "logs-stop" / "rank0.txt").read_text()
    assert "stopped in epoch 2 after step 4" in said and "--resume" in said
    assert (tmp_path / "logs-stop" / "rank1.txt").read_text() == ""
    assert not (out / "summary.json").exists()

    with pytest.raises(SystemExit, match=r"trained by 2 process\(es\) and resumes only with as many"):
        train.main(["--resume", str(out), "--quiet"])

    codes = launch(2, ["--resume", str(out), "--quiet", "--device", "cpu"], tmp_path / "logs-resume")
    assert codes == ["0", "0"], (tmp_path / "logs-resume" / "rank0.txt").read_text()
    resumed, uninterrupted = _last_state(out), _last_state(root / "two")
    for name, want in uninterrupted["model"].items():
        assert torch.equal(resumed["model"][name], want), name
    timing = ("seconds", "utterances_per_second")
    strip = lambda records: [{k: v for k, v in r.items() if k not in timing} for r in records]  # noqa: E731
    assert strip(_metrics(out)) == strip(_metrics(root / "two"))


def test_an_error_on_rank_0_ends_every_process(runs, tmp_path):
    root, _ = runs
    codes = launch(2, [*FLAGS, "--out", str(root / "two")], tmp_path / "logs")  # rank 0 refuses the folder
    assert codes[0].startswith(f"error: {root / 'two'} already holds a run") and codes[1] == "1"
    assert (tmp_path / "logs" / "rank1.txt").read_text() == ""


@pytest.mark.parametrize("world_size", [2, 3, 4, 16])
def test_shards_of_a_global_batch_are_disjoint_and_cover_it(world_size):
    split = small_corpus().splits["train"]
    for seed in range(3):
        for dialogues in batch_order(split, 10, shuffle=True, seed=seed, bucket=True):
            shards = [shard_dialogues(dialogues, rank, world_size) for rank in range(world_size)]
            together = np.concatenate(shards)
            assert len(together) == len(dialogues) and set(together) == set(dialogues)
            assert all(len(s) in (len(dialogues) // world_size, -(-len(dialogues) // world_size)) for s in shards)
        order = dict(shuffle=True, seed=seed, bucket=True)
        per_rank = [list(iterate_shards(split, "atv", 10, rank=rank, world_size=world_size, **order))
                    for rank in range(world_size)]
        for dialogues, shards in zip(batch_order(split, 10, **order), zip(*per_rank)):
            total = int(split.lengths[dialogues].sum())
            assert sum(s.share for s in shards) == pytest.approx(1.0)
            for rank, s in enumerate(shards):
                mine = shard_dialogues(dialogues, rank, world_size)
                if len(mine):  # its own dialogues, in order, weighted by their utterances
                    labels = s.batch.labels.reshape(-1)[s.batch.mask.reshape(-1)]
                    assert labels.tolist() == split.labels[dialogue_rows(split.offsets, mine)].tolist()
                    assert s.share == pytest.approx(split.lengths[mine].sum() / total) and not s.empty
                else:  # the global batch's first dialogue, weighted 0
                    assert s.empty and s.batch.lengths.tolist() == [int(split.lengths[dialogues[0]])]
            assert sum(not s.empty for s in shards) == min(world_size, len(dialogues))
