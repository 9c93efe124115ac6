#!/usr/bin/env bash
# The GPU acceptance run: needs nothing but the machine (torch and triton installed, no internet).
#   bash benchmarks/gpu_check.sh OUT_DIR
# On CUDA: the Triton kernel tests compiled (every kernel against the literal oracle or the torch twin,
# values and gradients, fp32 and fp16/bf16), a two-epoch bf16 training run, and the benchmarks that
# matter (tensor ring, AFW layer, AMW head, modulation, train step, inference; each against the authors'
# way and torch.compile where it has one; the roofline against the measured limits and the datasheet).
# Without CUDA it runs in dry mode: the same steps on the CPU at smoke size (kernels under Triton's
# interpreter, benchmarks at smoke shapes, one round), and the summary names what it skipped. CI runs
# the dry mode. Writes OUT_DIR/summary.md and summary.json (benchmarks/README.md, "GPU acceptance run").
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: bash benchmarks/gpu_check.sh OUT_DIR}
mkdir -p "$OUT"
: > "$OUT/steps.tsv"

step() {  # step NAME TIMEOUT_S COMMAND...: run it, its output to OUT/NAME.log, its status and time to steps.tsv
    local name=$1 limit=$2 start rc
    shift 2
    start=$(date +%s%N)
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    printf '%s\t%s\t%s\n' "$name" "$rc" "$((($(date +%s%N) - start) / 1000000))" >> "$OUT/steps.tsv"
    echo "$name: exit $rc ($OUT/$name.log)"
}

step install 120 python -m pip install --no-deps --no-build-isolation -e .
MODE=$(python -c "import torch; print('gpu' if torch.cuda.is_available() else 'dry')")
echo "mode: $MODE"
KERNEL_TESTS=(tests/test_tensor_ring.py tests/test_amw_head.py tests/test_modulation.py)
BENCHMARKS="tensor_ring or afw_layer or amw_head or modulation or train_step or inference or gemm or bandwidth"
if [ "$MODE" = gpu ]; then
    DEVICE=cuda PRECISION=bf16 SIZE=0.3 BENCH_ENV=() BENCH_FLAGS=(--benchmark-max-time=0.5)
else
    DEVICE=cpu PRECISION=fp32 SIZE=0.05 BENCH_ENV=(ADA2I_BENCH_SMOKE=1)
    BENCH_FLAGS=(--benchmark-min-rounds=1 --benchmark-max-time=0.000001 --benchmark-warmup=off)
fi

step kernels 240 env ADA2I_KERNEL_DEVICE="$DEVICE" python -m pytest -q -p no:cacheprovider -m kernel_device \
    "${KERNEL_TESTS[@]}" --junitxml="$OUT/kernels.xml"
step train 180 python -m ada2i_fast.train --dataset meld --size "$SIZE" --epochs 2 --device "$DEVICE" \
    --precision "$PRECISION" --out "$OUT/train" --overwrite --no-progress
step benchmarks 300 env "${BENCH_ENV[@]}" python -m pytest -q -p no:cacheprovider benchmarks/ --benchmark-only \
    -k "$BENCHMARKS" "${BENCH_FLAGS[@]}" --benchmark-json="$OUT/benchmarks.json"
step report 60 python benchmarks/report.py "$OUT/benchmarks.json" --out "$OUT/benchmarks"
python benchmarks/gpu_summary.py "$OUT" --mode "$MODE"
