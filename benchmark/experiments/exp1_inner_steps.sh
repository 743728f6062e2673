#!/usr/bin/env bash
# Experiment 1 (Duan & Wang, Figure 2): does MAML train more stably with more inner steps N?
# Full: N = 1..6, 5 seeds, the first 400 meta-iterations in 4 windows of 100 (mean and std over seeds
# of the post-adaptation distance), plus 3,000-iteration curves for N = 1, 3, 4, 5.
# --quick: N = 1, 3, 2 seeds, 40 iterations in 4 windows of 10 (a few minutes on 2 cores).
#   bash benchmark/experiments/exp1_inner_steps.sh [--quick]
#   (WORKERS=2 by default; LONG_SEEDS=1 runs one seed of the 3,000-iteration curves, about 54 minutes on 2
#   cores: docs/inner_steps_long_curves.png is that one seed)
# Writes docs/inner_steps_windows.png, docs/inner_steps_long_curves.png, docs/inner_steps_long_windows.png
# and docs/results/inner_steps_windows.md, inner_steps_long_windows.md, inner_steps_long.md (--quick:
# inner_steps_quick_*, inner_steps_long_quick*).
set -euo pipefail
cd "$(dirname "$0")/../.."  # the repository root: python -m finds the benchmark package there
WORKERS=${WORKERS:-2}
if [[ "${1:-}" == "--quick" ]]; then
  Q=_quick; STEPS=1,3; SEEDS=2; ITERS=40; WINDOW=10; LONG_STEPS=1,3; LONG_ITERS=80; SMOOTH=10; LONG_WINDOW=20; LONG_WINDOWS=4
else
  Q=; STEPS=1,2,3,4,5,6; SEEDS=5; ITERS=400; WINDOW=100; LONG_STEPS=1,3,4,5; LONG_ITERS=3000; SMOOTH=100; LONG_WINDOW=500; LONG_WINDOWS=6
fi
python -m benchmark.tools.run maml_vpg.py --name inner_steps$Q --grid inner-steps=$STEPS \
  --set num-iterations=$ITERS --seeds $SEEDS --workers $WORKERS
python -m benchmark.tools.plots windows benchmark/sweeps/inner_steps$Q --tag charts/post_adaptation_distance \
  --window $WINDOW --num-windows 4 --first-step 1 --xlabel iteration \
  --out docs/inner_steps${Q}_windows.png --table-out docs/results/inner_steps${Q}_windows.md
python -m benchmark.tools.run maml_vpg.py --name inner_steps_long$Q --grid inner-steps=$LONG_STEPS \
  --set num-iterations=$LONG_ITERS --seeds ${LONG_SEEDS:-$SEEDS} --workers $WORKERS
python -m benchmark.tools.plots curves benchmark/sweeps/inner_steps_long$Q --tag charts/post_adaptation_distance \
  --xlabel iteration --smooth $SMOOTH --out docs/inner_steps_long${Q}_curves.png
python -m benchmark.tools.plots windows benchmark/sweeps/inner_steps_long$Q --tag charts/post_adaptation_distance \
  --window $LONG_WINDOW --num-windows $LONG_WINDOWS --first-step 1 --xlabel iteration --spread pooled \
  --out docs/inner_steps_long${Q}_windows.png --table-out docs/results/inner_steps_long${Q}_windows.md
python -m benchmark.tools.plots table benchmark/sweeps/inner_steps_long$Q \
  --columns pre_adaptation_distance post_adaptation_distance adaptation_gain median_iteration_time_s \
  --out docs/results/inner_steps_long$Q.md
