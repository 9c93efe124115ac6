"""Where a training step's time goes: torch.profiler over a few steps of ``train_step`` at a preset,
the top ops by self time with their share, and the share of the GEMMs.

    python benchmarks/profile_step.py --dataset iemocap --precision bf16

The batch is the benchmarks' (``test_bench_training.py``): B = 10 dialogues of the synthetic corpus
drawn without bucketing. Run it alone on the machine; shares hold under load better than times do.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).parent))
from ada2i_fast import Ada2I, Ada2IConfig, TrainConfig  # noqa: E402
from ada2i_fast.data import iterate_batches, make_synthetic  # noqa: E402
from ada2i_fast.training.step import make_optimizer, train_step  # noqa: E402

GEMMS = ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="iemocap", choices=("iemocap", "meld"))
    parser.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    config = Ada2IConfig.preset(args.dataset)
    split = make_synthetic(args.dataset, seed=0, size=0.25).splits["train"]
    batch = next(iterate_batches(split, config.modalities, 10, shuffle=True, seed=0))
    torch.manual_seed(0)
    model = Ada2I(config)
    recipe = TrainConfig.preset(args.dataset, precision=args.precision)
    optimizer, generator = make_optimizer(model, recipe), torch.Generator().manual_seed(0)
    for _ in range(2):
        train_step(model, batch, optimizer, recipe, modulate=True, generator=generator)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            train_step(model, batch, optimizer, recipe, modulate=True, generator=generator)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    print(f"{args.dataset} preset, {args.precision}, B=10 T={batch.max_len} N={batch.num_utterances}: "
          f"{total / args.steps / 1e3:.1f} ms of op time per step on {torch.get_num_threads()} threads")
    gemm = sum(e.self_cpu_time_total for e in events if e.key in GEMMS)
    print(f"GEMMs ({', '.join(GEMMS)}): {100 * gemm / total:.0f}%")
    print(f"{'op':45s} {'share':>6s} {'ms/step':>8s} {'calls/step':>10s}")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[: args.top]:
        print(f"{e.key[:45]:45s} {100 * e.self_cpu_time_total / total:5.1f}% "
              f"{e.self_cpu_time_total / args.steps / 1e3:8.2f} {e.count / args.steps:10.0f}")


if __name__ == "__main__":
    main()
