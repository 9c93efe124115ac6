"""The summary of one ``benchmarks/gpu_check.sh`` run: OUT/summary.md and OUT/summary.json.

    python benchmarks/gpu_summary.py OUT --mode gpu|dry

Exits 1 when a step failed or a kernel test did not pass, so the run's status is the script's."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import torch

from roofline import machine_name

DRY_SKIPS = (
    "compiled Triton kernels (no CUDA device: the kernel tests ran under Triton's interpreter)",
    "bf16 training on a GPU (the two-epoch run used the CPU in fp32 at size 0.05)",
    "timings (benchmarks at smoke shapes, one round each: they exercise the path, they measure nothing)",
)


def read_steps(out: Path) -> list[dict]:
    rows = [line.split("\t") for line in (out / "steps.tsv").read_text().splitlines() if line]
    return [dict(step=name, exit_code=int(rc), seconds=int(ms) / 1000) for name, rc, ms in rows]


def read_kernel_tests(path: Path) -> dict | None:
    if not path.is_file():
        return None
    suite = ElementTree.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    failed = [f"{case.get('classname')}::{case.get('name')}" for case in suite.iter("testcase")
              if case.find("failure") is not None or case.find("error") is not None]
    return dict(counts, passed=counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
                failed=failed)


def read_training(folder: Path) -> dict | None:
    path = folder / "summary.json"
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    return dict(test_weighted_f1=summary["test"]["weighted_f1"], best_epoch=summary["best_epoch"],
                seconds=summary["timing"]["seconds"], device=summary["train_config"]["device"],
                precision=summary["train_config"]["precision"])


def environment() -> dict:
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return dict(device=machine_name(), torch=torch.__version__, triton=triton_version, python=platform.python_version(),
                cuda=torch.version.cuda)


def summarise(out: Path, mode: str) -> dict:
    return dict(mode=mode, environment=environment(), steps=read_steps(out),
                kernel_tests=read_kernel_tests(out / "kernels.xml"), training=read_training(out / "train"),
                skipped=list(DRY_SKIPS) if mode == "dry" else [])


def markdown(summary: dict, benchmarks: str) -> str:
    env, kernels, training = summary["environment"], summary["kernel_tests"], summary["training"]
    lines = [f"# GPU acceptance run ({summary['mode']} mode)", "",
             f"{env['device']} · torch {env['torch']} · triton {env['triton']} · CUDA {env['cuda']} · "
             f"Python {env['python']}", "", "| step | exit code | seconds |", "|---|---|---|"]
    lines += [f"| {s['step']} | {s['exit_code']} | {s['seconds']:.1f} |" for s in summary["steps"]]
    lines.append("")
    if kernels:
        lines.append(f"Kernel tests: {kernels['passed']} passed, {kernels['failures'] + kernels['errors']} failed, "
                     f"{kernels['skipped']} skipped of {kernels['tests']}.")
        lines += [f"- failed: `{name}`" for name in kernels["failed"]]
    else:
        lines.append("Kernel tests: no result (see kernels.log).")
    if training:
        lines.append(f"\nTwo-epoch training ({training['device']}, {training['precision']}): test weighted F1 "
                     f"{training['test_weighted_f1']:.3f} (best epoch {training['best_epoch']}), "
                     f"{training['seconds']:.1f} s of training.")
    else:
        lines.append("\nTwo-epoch training: no result (see train.log).")
    if summary["skipped"]:
        lines += ["", "Skipped in dry mode:"] + [f"- {item}" for item in summary["skipped"]]
    if benchmarks:
        lines += ["", "## Benchmarks", "", benchmarks]
    return "\n".join(lines) + "\n"


def passed(summary: dict) -> bool:
    kernels = summary["kernel_tests"]
    return (all(s["exit_code"] == 0 for s in summary["steps"]) and kernels is not None
            and kernels["failures"] + kernels["errors"] == 0 and summary["training"] is not None)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the OUT_DIR of gpu_check.sh")
    parser.add_argument("--mode", choices=("gpu", "dry"), required=True)
    args = parser.parse_args(argv)
    summary = summarise(args.out, args.mode)
    summary["passed"] = passed(summary)
    report = args.out / "benchmarks.md"
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (args.out / "summary.md").write_text(markdown(summary, report.read_text() if report.is_file() else ""))
    print(f"{'passed' if summary['passed'] else 'FAILED'}: wrote {args.out / 'summary.md'} and summary.json")
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
