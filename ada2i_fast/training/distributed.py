"""Data-parallel training on several processes (torch.distributed), launched by ``torchrun``.

torchrun sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` (and the rendezvous address);
``python -m ada2i_fast.train`` started that way joins the process group: NCCL when the device is
CUDA (each process then runs on ``cuda:LOCAL_RANK``), gloo on the CPU. Started without them it
stays one process and never touches ``torch.distributed``.

How a distributed step stays the single-process step on the whole global batch:

- every rank builds the same global batches (the epoch's seed) and takes the dialogues rank,
  rank + W, ... of each (``data.batching.iterate_shards``);
- the losses are means over real utterances (L_cls, L_feature's per-modality L1 in method mode,
  L_modal_aux), so each rank weights its loss by its share of the global batch's utterances: the
  sum over ranks of the weighted losses is the global loss and the SUM of the gradients is its
  gradient;
- one all-reduce per step (:func:`all_reduce_step`) carries the gradients, the weighted loss terms,
  the disparity scores (sums over utterances, so their sum is the global s_m) and a stop flag;
- clipping, ratios, coefficients, modulation and gradient noise (the same generator seed on every
  rank) then see identical inputs everywhere, and the parameters stay identical without being
  broadcast again;
- a rank whose shard is empty (a global batch with fewer dialogues than ranks) runs its step on the
  global batch's first dialogue with weight 0: it joins the all-reduce with zero gradients and zero
  contributions, and its gradients have the same layout as every other rank's.

An explicit all-reduce rather than DistributedDataParallel: the logged values and the stop flag
ride in the gradients' buffer (one collective per step), an empty shard needs no special case in
DDP's reducer, and the SUM of utterance-weighted gradients is the global gradient as it is (DDP
averages). What DDP would add, overlapping the reduction with the backward pass, is worth little
for a model of this size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

T = TypeVar("T")
_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


@dataclass(frozen=True)
class Context:
    """This process's place in its run: a torchrun process group (``joined``), or a process alone
    (:data:`SINGLE`), whose collectives return at once what a group of one would. Callers never
    ask which; every collective below is a method that does the right thing for both."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    joined: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that prints and writes the run's files."""
        return self.rank == 0

    def gather(self, obj: T) -> list[T]:
        """``obj`` of every rank, in rank order, on every rank."""
        return gather_objects(obj) if self.joined else [obj]

    def on_main(self, fn: Callable[[], T]) -> T:
        """``fn()`` run on rank 0 alone (a file it reads or writes), its result given to every rank; when
        it fails, every rank fails with its message (none waits for a collective that never comes)."""
        if not self.joined:
            return fn()
        if self.is_main:
            try:
                result = fn()
            except _ERRORS as error:
                broadcast_object((False, str(error)))
                raise
            return broadcast_object((True, result))[1]
        ok, value = broadcast_object(None)
        if not ok:
            raise ValueError(f"rank 0: {value}")
        return value

    def on_every_rank(self, fn: Callable[[], T]) -> T:
        """``fn()`` run on every rank; when it fails on any rank, every rank fails, naming the first one."""
        if not self.joined:
            return fn()
        try:
            result, error = fn(), None
        except _ERRORS as caught:
            result, error = None, caught
        messages = gather_objects(None if error is None else str(error))
        if error is not None:
            raise error if self.is_main else ValueError(f"rank {self.rank}: {error}")
        failed = [(rank, message) for rank, message in enumerate(messages) if message is not None]
        if failed:
            rank, message = failed[0]
            raise ValueError(f"rank {rank}: {message}")
        return result

    def share_parameters(self, module: torch.nn.Module, seed: int) -> None:
        """Rank 0's parameters and buffers on every rank; then each rank's own random stream (dropout),
        rank 0 keeping a single process's."""
        if not self.joined:
            return
        with torch.no_grad():
            for tensor in module.state_dict().values():
                dist.broadcast(tensor, src=0)
        if self.rank:
            torch.manual_seed(rank_seed(seed, self.rank))

    def all_reduce_step(self, params: list[torch.nn.Parameter], values: list[Tensor], stop: bool
                        ) -> tuple[list[Tensor], Tensor]:
        """See :func:`all_reduce_step`; alone, ``values`` as they are and the stop flag as a CPU tensor."""
        if not self.joined:
            return values, torch.tensor(float(stop))
        return all_reduce_step(params, values, stop)

    def stop_vote(self, asked: Callable[[], bool]) -> "StopVote":
        """How this run agrees to stop: alone after the step during which ``asked()`` became true, in a
        group after the same step on every process (the step after the one whose all-reduce carried it)."""
        return StopVote() if self.joined else _OwnStop(asked)

    def agree(self, value: T, disagreement: str) -> T:
        """``value`` when every rank has the same one, else ``ValueError("rank R " + disagreement)``
        naming the first rank whose value differs from rank 0's."""
        values = self.gather(value)
        other = next((rank for rank, found in enumerate(values) if found != values[0]), None)
        if other is not None:
            raise ValueError(f"rank {other} {disagreement}")
        return value


SINGLE = Context()


def launched_by_torchrun() -> bool:
    return all(name in os.environ for name in _ENV)


def init(device: str) -> tuple[Context, str]:
    """Join the process group of a torchrun launch; returns the context and this process's device
    (``cuda`` becomes ``cuda:LOCAL_RANK``)."""
    try:
        world_size, rank, local_rank = (int(os.environ[name]) for name in _ENV)
    except ValueError:
        raise ValueError("WORLD_SIZE, RANK and LOCAL_RANK must be integers (torchrun sets them)") from None
    if not 0 <= rank < world_size:
        raise ValueError(f"RANK {rank} outside [0, WORLD_SIZE={world_size})")
    target = torch.device(device)
    if target.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK {local_rank}, but this node has {torch.cuda.device_count()} CUDA devices")
        target = torch.device("cuda", local_rank)
        torch.cuda.set_device(target)
        dist.init_process_group("nccl", rank=rank, world_size=world_size, device_id=target)
    else:
        dist.init_process_group("gloo", rank=rank, world_size=world_size)
    return Context(rank, world_size, local_rank, joined=True), str(target)


def initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def current() -> Context:
    """The process group this process has joined, or :data:`SINGLE`. (A group of one, from
    ``torchrun --nproc_per_node=1``, runs its collectives over itself.)"""
    if not initialized():
        return SINGLE
    return Context(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), joined=True)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s own random stream (dropout), distinct per rank."""
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


def broadcast_object(obj: T, src: int = 0) -> T:
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: T) -> list[T]:
    """``obj`` of every rank, in rank order, on every rank."""
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


_ERRORS = (ValueError, FileNotFoundError)


def all_reduce_step(params: list[torch.nn.Parameter], values: list[Tensor], stop: bool) -> tuple[list[Tensor], Tensor]:
    """SUM over ranks, in one all-reduce, of every parameter's gradient (each ``p.grad`` becomes its
    slice of the reduced buffer), of ``values`` (any shapes) and of a stop flag.

    Returns the reduced ``values`` (their own shapes and dtypes) and the reduced flag (a device
    scalar: the number of ranks that asked to stop). Nothing here reads a device value."""
    with_grad = [p for p in params if p.grad is not None]
    if not with_grad:
        raise ValueError("all_reduce_step: no parameter has a gradient")
    like = with_grad[0].grad
    pieces = [p.grad.reshape(-1) for p in with_grad]
    pieces += [v.detach().reshape(-1).to(like.dtype) for v in values]
    pieces.append(torch.full((1,), float(stop), dtype=like.dtype, device=like.device))
    flat = torch.cat(pieces)
    dist.all_reduce(flat)
    parts = torch.split(flat, [piece.numel() for piece in pieces])
    for p, part in zip(with_grad, parts):
        p.grad = part.view_as(p)
    reduced = [part.view_as(v).to(v.dtype) for v, part in zip(values, parts[len(with_grad):])]
    return reduced, parts[-1].reshape(())


class StopVote:
    """All ranks stop after the same step, without stalling the device queue: step k's reduced stop
    flag is read once step k+1 has been queued (a copy to pinned memory on CUDA, awaited by event),
    so every rank stops after step k+1. :meth:`drain` reads the last flag at the epoch's end."""

    def __init__(self) -> None:
        self._pending: tuple[Tensor, torch.cuda.Event | None] | None = None

    def push(self, flag: Tensor) -> bool:
        """Record this step's reduced flag; True when the previous step's says stop."""
        previous, self._pending = self._pending, self._stage(flag)
        return previous is not None and self._read(previous)

    def drain(self) -> bool:
        previous, self._pending = self._pending, None
        return previous is not None and self._read(previous)

    @staticmethod
    def _stage(flag: Tensor) -> tuple[Tensor, torch.cuda.Event | None]:
        if flag.device.type != "cuda":
            return flag, None
        host = torch.empty((), dtype=flag.dtype, pin_memory=True)
        host.copy_(flag, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        return host, event

    @staticmethod
    def _read(staged: tuple[Tensor, torch.cuda.Event | None]) -> bool:
        value, event = staged
        if event is not None:
            event.synchronize()
        return bool(value > 0)


class _OwnStop(StopVote):
    """A process alone stops after the step during which it was asked to; no flag needs reducing."""

    def __init__(self, asked: Callable[[], bool]) -> None:
        super().__init__()
        self.asked = asked

    def push(self, flag: Tensor) -> bool:
        return self.asked()

    def drain(self) -> bool:
        return False
