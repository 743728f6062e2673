#!/usr/bin/env bash
# Experiment 3 (Duan & Wang): do harder task distributions hurt? FOMAML with N = 3 on 3 target
# distributions x 4 obstacle levels; held-out post-adaptation distance and adaptation gain.
# Full: 3 seeds x 500 meta-iterations. --quick: 1 seed x 20 iterations.
#   bash benchmark/experiments/exp3_difficulty.sh [--quick]      (WORKERS=2 by default)
# Writes docs/results/difficulty.md (--quick: difficulty_quick.md).
set -euo pipefail
cd "$(dirname "$0")/../.."  # the repository root: python -m finds the benchmark package there
WORKERS=${WORKERS:-2}
if [[ "${1:-}" == "--quick" ]]; then Q=_quick; SEEDS=1; ITERS=20; else Q=; SEEDS=3; ITERS=500; fi
python -m benchmark.tools.run fomaml_vpg.py --name difficulty$Q --grid targets=uniform,random,narrow \
  --grid obstacles=none,easy,medium,hard --set inner-steps=3 --set num-iterations=$ITERS \
  --seeds $SEEDS --workers $WORKERS
python -m benchmark.tools.plots table benchmark/sweeps/difficulty$Q \
  --columns pre_adaptation_distance post_adaptation_distance adaptation_gain --out docs/results/difficulty$Q.md
