import os

# Where the kernel_device tests put their tensors: the CPU (Triton's interpreter) unless
# ADA2I_KERNEL_DEVICE=cuda (compiled kernels; benchmarks/gpu_check.sh). The interpreter must be
# chosen before triton is first imported.
os.environ.setdefault("TRITON_INTERPRET", "0" if os.environ.get("ADA2I_KERNEL_DEVICE", "cpu") == "cuda" else "1")

import pytest
import torch

KERNEL_DEVICE = torch.device(os.environ.get("ADA2I_KERNEL_DEVICE", "cpu"))
from torch.overrides import TorchFunctionMode

from ada2i_fast import Ada2I, Ada2IConfig, Batch, TrainConfig
from ada2i_fast.training.step import make_optimizer

HOST_SYNC_METHODS = {"item", "__bool__", "__float__", "__int__", "__index__", "tolist", "cpu", "numpy", "nonzero"}


class HostSyncError(RuntimeError):
    pass


class RaiseOnHostSync(TorchFunctionMode):
    """Raises on every tensor method that would make the host wait for the device."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in HOST_SYNC_METHODS:
            raise HostSyncError(f"host sync: Tensor.{name}")
        if name == "__getitem__" and any(isinstance(a, torch.Tensor) and a.dtype == torch.bool for a in args[1:]):
            raise HostSyncError("host sync: boolean-mask indexing")
        return func(*args, **(kwargs or {}))


@pytest.fixture
def no_host_sync():
    return RaiseOnHostSync


def tiny_config(**overrides) -> Ada2IConfig:
    """A small model with the structure of the meld preset, fast enough for unit tests."""
    values = dict(
        input_dims={"a": 12, "t": 20, "v": 10},
        num_classes=5,
        hidden=16,
        rank=3,
        ffn_dim=24,
        beta=0.55,
    )
    values.update(overrides)
    return Ada2IConfig(**values)


def random_batch(config: Ada2IConfig, lengths, *, seed: int = 0, max_len: int | None = None) -> Batch:
    generator = torch.Generator().manual_seed(seed)
    t = max_len or max(lengths)
    features = {m: torch.randn(len(lengths), t, config.input_dims[m], generator=generator) for m in config.modalities}
    mask = torch.arange(t) < torch.tensor(lengths).unsqueeze(1)
    for x in features.values():
        x[~mask] = 0
    labels = torch.randint(0, config.num_classes, (len(lengths), t), generator=generator)
    return Batch.build(features, lengths, labels)


def tiny_step_inputs(device: str = "cpu"):
    """One training step's inputs on ``device``: a seeded tiny model, a recipe (alpha 0.42), its fused
    Adam and a batch of three dialogues."""
    torch.manual_seed(0)
    config = tiny_config()
    model = Ada2I(config).to(device)
    recipe = TrainConfig(alpha=0.42)
    return model, recipe, make_optimizer(model, recipe), random_batch(config, [5, 2, 1]).to(device)


def whole_epoch_ticks(fig) -> list[float]:
    """The x tick values inside the view of every axis of ``fig`` labelled "epoch" (none where there is none)."""
    ticks = []
    for ax in fig.axes:
        if ax.get_xlabel() == "epoch":
            low, high = sorted(ax.get_xlim())
            ticks += [t for t in ax.get_xticks() if low <= t <= high]
    return ticks
