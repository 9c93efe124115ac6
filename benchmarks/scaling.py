"""How a training step's time and memory grow with dialogue length T, batch size B and rank R: ours
(fp32 and bf16) against the authors' way (``authors_way.py``) at the iemocap preset.

    python benchmarks/scaling.py --out benchmarks/results/scaling-cpu      # OUT.md, OUT.json, OUT.png

Each point runs in a fresh process: the model and optimizer are built, one step warms up (Adam's
state, the allocator), then three steps are timed (median and spread) and one more is measured for
memory: the peak of the bytes torch holds during the step above what it held at the step's start
(weights, gradients and optimizer state), i.e. what a step needs beyond them. On CUDA that is
``max_memory_allocated``; on the CPU the running sum of torch's allocations and frees over the step
(``torch.profiler`` with ``profile_memory``), because the process's peak RSS depends on how much
freed memory the C allocator kept from the steps before (it showed the authors' step needing 610 MiB
where its saved activations alone hold 1,375 MiB). Every dialogue in the batch has length T, so
the authors' padded grid and our packed rows hold the same utterances. Run it alone on the machine:
the timings are only comparable within one run; memory does not depend on load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

AXES = {  # axis -> (values, the fixed (T, B, R) the others keep)
    "T": (8, 16, 32, 64, 128, 256, 512),
    "B": (1, 2, 4, 8, 16, 32, 64),
    "R": (6, 8, 16, 32, 64),
}
BASE = {"T": 64, "B": 10, "R": 6}  # R = the iemocap preset's rank (checked in measure_point)
WAYS = ("authors", "ours fp32", "ours bf16")
SMOKE_AXES = {"T": (4, 8), "B": (1, 2), "R": (3, 4)}
SMOKE_BASE = {"T": 4, "B": 2, "R": 3}


def measure_point(way: str, T: int, B: int, R: int, smoke: bool) -> dict:
    """One point, in this process: median/min/max step seconds and the step's peak memory in bytes."""
    import torch

    from ada2i_fast import Ada2I, Ada2IConfig, Batch, TrainConfig
    from ada2i_fast.training.step import make_optimizer, train_step
    from authors_way import authors_model, authors_optimizer, authors_train_step

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    small = dict(hidden=16, ffn_dim=16, encoder_nlayers=1) if smoke else {}
    config = Ada2IConfig.preset("iemocap", rank=R, **small)
    torch.manual_seed(0)
    features = {m: torch.randn(B, T, d) for m, d in config.input_dims.items()}
    batch = Batch.build(features, lengths=[T] * B, labels=torch.randint(0, config.num_classes, (B, T))).to(device)
    ours = way != "authors"
    recipe = TrainConfig.preset("iemocap", precision=way.split()[-1] if ours else "fp32")
    model = (Ada2I(config) if ours else authors_model(config)).to(device)
    if ours:
        optimizer, generator = make_optimizer(model, recipe), torch.Generator(device).manual_seed(0)

        def step():
            train_step(model, batch, optimizer, recipe, modulate=True, generator=generator)
    else:
        optimizer = authors_optimizer(model, recipe)

        def step():
            authors_train_step(model, batch, optimizer, recipe, modulate=True)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    step()
    sync()
    seconds = []
    for _ in range(3):
        start = time.perf_counter()
        step()
        sync()
        seconds.append(time.perf_counter() - start)
    return dict(way=way, T=T, B=B, R=R, seconds=statistics.median(seconds), seconds_min=min(seconds),
                seconds_max=max(seconds), step_bytes=step_memory(step, sync, device, list(model.parameters())),
                utterances=B * T)


def step_memory(step, sync, device, parameters) -> int:
    """The peak of the bytes torch holds while ``step`` runs above weights, gradients and optimizer
    state. The gradients are dropped first (the profiler sees no free of a tensor made before it
    started), so the step's peak above its start includes them once; their size is taken off."""
    import torch

    gradients = sum(p.numel() * p.element_size() for p in parameters)
    for p in parameters:
        p.grad = None
    if device.type == "cuda":
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        sync()
        return torch.cuda.max_memory_allocated() - before - gradients
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        step()
    held = peak = 0
    for event in sorted(profiler.events(), key=lambda e: e.time_range.start):
        held += event.self_cpu_memory_usage
        peak = max(peak, held)
    return peak - gradients


def points(smoke: bool, chosen=tuple(AXES)) -> list[tuple[str, dict]]:
    axes, base = (SMOKE_AXES, SMOKE_BASE) if smoke else (AXES, BASE)
    return [(axis, {**base, axis: value}) for axis, values in axes.items() if axis in chosen for value in values]


def run(ways, smoke: bool, timeout: int, axes=tuple(AXES)) -> list[dict]:
    from tqdm import tqdm

    todo = [(axis, shape, way) for axis, shape in points(smoke, axes) for way in ways]
    results = []
    for axis, shape, way in tqdm(todo, desc="scaling", unit="point"):
        args = [sys.executable, __file__, "--point", way, str(shape["T"]), str(shape["B"]), str(shape["R"])]
        env = dict(os.environ, ADA2I_BENCH_SMOKE="1" if smoke else "0")
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env,
                                  cwd=Path(__file__).parent)
        except subprocess.TimeoutExpired:
            results.append(dict(axis=axis, way=way, **shape, error=f"over {timeout} s"))
            continue
        if done.returncode != 0:
            results.append(dict(axis=axis, way=way, **shape, error=done.stderr.strip().splitlines()[-1]))
            continue
        results.append(dict(axis=axis, **json.loads(done.stdout.splitlines()[-1])))
    return results


def markdown(results: list[dict], machine: str) -> str:
    lines = [f"# Training-step scaling, iemocap preset — {machine}", "",
             "Median of 3 steps (min–max) and the step's peak memory above weights, gradients and optimizer "
             "state; every dialogue of length T. Speed-up: the authors' median over ours.", ""]
    for axis in AXES:
        rows = [r for r in results if r["axis"] == axis]
        if not rows:
            continue
        fixed = ", ".join(f"{k}={v}" for k, v in rows[0].items() if k in BASE and k != axis)
        lines += [f"## {axis} ({fixed})", "", f"| {axis} | way | step s (min–max) | MiB | speed-up |", "|---|---|---|---|---|"]
        authors = {r[axis]: r for r in rows if r["way"] == "authors" and "error" not in r}
        for r in rows:
            if "error" in r:
                lines.append(f"| {r[axis]} | {r['way']} | {r['error']} | | |")
                continue
            base = authors.get(r[axis])
            speed = f"{base['seconds'] / r['seconds']:.2f}x" if base else ""
            lines.append(f"| {r[axis]} | {r['way']} | {r['seconds']:.3f} ({r['seconds_min']:.3f}–{r['seconds_max']:.3f}) "
                         f"| {r['step_bytes'] / 2**20:.0f} | {speed} |")
        lines.append("")
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(2, len(AXES), figsize=(12, 6.5), constrained_layout=True)
    for col, axis in enumerate(AXES):
        for way in WAYS:
            rows = sorted((r for r in results if r["axis"] == axis and r["way"] == way and "error" not in r),
                          key=lambda r: r[axis])
            if not rows:
                continue
            xs = [r[axis] for r in rows]
            axes[0, col].plot(xs, [r["seconds"] for r in rows], marker="o", label=way)
            axes[1, col].plot(xs, [r["step_bytes"] / 2**20 for r in rows], marker="o", label=way)
        for row, label in enumerate(("step seconds", "step memory (MiB)")):
            axes[row, col].set(xscale="log", yscale="log", xlabel=axis, ylabel=label)
            axes[row, col].set_xticks(AXES[axis], [str(v) for v in AXES[axis]], minor=False)
            axes[row, col].xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    axes[0, 0].legend()
    fig.suptitle("Training step, iemocap preset: ours vs the authors' way")
    fig.savefig(path, dpi=150)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="writes OUT.md, OUT.json and OUT.png")
    parser.add_argument("--ways", nargs="+", choices=WAYS, default=list(WAYS))
    parser.add_argument("--axes", nargs="+", choices=tuple(AXES), default=list(AXES), help="which axes to sweep")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes and model (checks the script)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds one point may take")
    parser.add_argument("--point", nargs=4, metavar=("WAY", "T", "B", "R"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.point:
        way, T, B, R = args.point
        print(json.dumps(measure_point(way, int(T), int(B), int(R), os.environ.get("ADA2I_BENCH_SMOKE") == "1")))
        return
    if args.out is None:
        parser.error("--out is required")
    from roofline import machine_name

    machine = machine_name()
    results = run(args.ways, args.smoke, args.timeout, args.axes)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(dict(machine=machine, results=results), indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(results, machine))
    plot(results, args.out.with_suffix(".png"))
    print(markdown(results, machine))


if __name__ == "__main__":
    main()
