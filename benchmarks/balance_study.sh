#!/usr/bin/env bash
# The balance study (README, "Does the balancing help?"), fixed before any of it ran:
# the meld preset's recipe (early stopping after 20 epochs without a better dev F1, modulation from
# epoch 4) for at most 30 epochs, seeds 12 13 14, every modality subset and every ablation, on
#   complementary  synthetic MELD, complementary family, 0.3 of MELD's size, steps traced
#   redundant      synthetic MELD, redundant family (the default), 0.3 of MELD's size, steps traced
#   meld-text      the real MELD transcripts, text only (no audio or visual exists there)
# then every analysis of python -m ada2i_fast.analyze on each. Two workers share each study (one
# core each). The first launch, with the recipe's 50 epochs, ran 13 s per modulated epoch of the full
# model (about 6 hours in all on 2 cores); it was stopped at epoch 12 of its first two runs, before
# any ablation had run, and the cap set to 30 epochs. --keep-weights keeps each run's best.pt for the
# robustness analysis (the complementary sweep ran before the flag existed, when runs kept it anyway).
# The redundant study was cut to the full model, text alone and the three ablations the README's
# 6-epoch table had questioned (15 cells instead of 36) after its first 4 cells (atv x3, at seed 12),
# for the session's time budget alone: no other result of it had been seen.
# A rerun trains only the cells that are missing. Usage: bash benchmarks/balance_study.sh [OUT] [RESULTS]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/balance-study}
RESULTS=${2:-benchmarks/results}
SEEDS=(12 13 14)
MELD_CSV=${MELD_CSV:-../shared/data/meld}

declare -A CELLS=([complementary]="--ablations" [redundant]="--variants atv t no-afw no-amw no-modulation")
for family in complementary redundant; do
    # shellcheck disable=SC2086  # CELLS holds several flags
    python -m ada2i_fast.sweep --out "$OUT/$family" --seeds "${SEEDS[@]}" --workers 2 ${CELLS[$family]} --keep-weights \
        --report "$RESULTS/balance/$family/sweep" --name "synthetic MELD, $family" \
        -- --dataset meld --synthetic "$family" --size 0.3 --epochs 30 --trace
done

if [ ! -d "$OUT/corpora/meld-text" ]; then
    python -m ada2i_fast.data.transcripts --csv-dir "$MELD_CSV" --layout meld --out "$OUT/corpora/meld-text"
fi
python -m ada2i_fast.sweep --out "$OUT/meld-text" --seeds "${SEEDS[@]}" --workers 2 --modalities t --keep-weights \
    --variants t no-afw no-amw no-modulation reference --report "$RESULTS/balance/meld-text/sweep" \
    --name "MELD transcripts, text only" -- --dataset meld --data "$OUT/corpora/meld-text" --epochs 30

declare -A NAME=([complementary]="synthetic MELD, complementary" [redundant]="synthetic MELD, redundant"
                 [meld-text]="MELD transcripts, text only")
for study in complementary redundant meld-text; do
    python -m ada2i_fast.analyze all "$OUT/$study/modality-sweep" --out "$RESULTS/balance/$study" --name "${NAME[$study]}"
done
