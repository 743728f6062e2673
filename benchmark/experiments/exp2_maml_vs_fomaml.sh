#!/usr/bin/env bash
# Experiment 2 (Duan & Wang, Figure 3 and the 40-56% time claim): MAML vs FOMAML, N = 1 and 3, in two
# settings: our defaults (nav_env collision="block"), and the papers' exact setting (docs/maml_vpg.md's paper
# command: their hyperparameters on their own environment, collision="original"; FOMAML with Adam, MAML with SGD).
# Full: 3 seeds x 500 meta-iterations each; time per meta-iteration and held-out performance, and
# trajectories of both on two test goals before and after adaptation (default setting).
# --quick: 1 seed x 30 iterations.
#   bash benchmark/experiments/exp2_maml_vs_fomaml.sh [--quick]      (WORKERS=2 by default)
# Writes docs/maml_vs_fomaml_iteration_time.png, docs/maml_vs_fomaml_trajectories.png,
# docs/results/maml_vs_fomaml.md (default setting) and docs/results/maml_vs_fomaml_paper.md (the papers' setting);
# --quick: maml_vs_fomaml_quick*.
set -euo pipefail
cd "$(dirname "$0")/../.."  # the repository root: python -m finds the benchmark package there
WORKERS=${WORKERS:-2}
if [[ "${1:-}" == "--quick" ]]; then Q=_quick; SEEDS=1; ITERS=30; else Q=; SEEDS=3; ITERS=500; fi
COLUMNS_SHOWN="post_adaptation_distance post_adaptation_return adaptation_gain median_iteration_time_s"
for algo in maml fomaml; do
  python -m benchmark.tools.run ${algo}_vpg.py --name ${algo}$Q --grid inner-steps=1,3 \
    --set num-iterations=$ITERS --set save-model --seeds $SEEDS --workers $WORKERS
done
# Timing runs share the machine with another worker: for clean timings see python -m benchmark.maml_speed.
python -m benchmark.tools.plots bars benchmark/sweeps/maml$Q benchmark/sweeps/fomaml$Q --column median_iteration_time_s \
  --out docs/maml_vs_fomaml${Q}_iteration_time.png
python -m benchmark.tools.plots table benchmark/sweeps/maml$Q benchmark/sweeps/fomaml$Q --columns $COLUMNS_SHOWN \
  --out docs/results/maml_vs_fomaml$Q.md
python -m benchmark.tools.trajectories --out docs/maml_vs_fomaml${Q}_trajectories.png \
  benchmark/sweeps/maml$Q/inner-steps=1/seed=1 benchmark/sweeps/fomaml$Q/inner-steps=1/seed=1
# The papers' setting.
for algo in maml fomaml; do
  optimizer=$([[ $algo == maml ]] && echo sgd || echo adam)
  python -m benchmark.tools.run ${algo}_vpg.py --name ${algo}_paper$Q --grid inner-steps=1,3 \
    --set inner-lr=3e-4 --set outer-lr=5e-4 --set outer-optimizer=$optimizer --set hidden-size=128 \
    --set collision=original --set num-iterations=$ITERS --seeds $SEEDS --workers $WORKERS
done
python -m benchmark.tools.plots table benchmark/sweeps/maml_paper$Q benchmark/sweeps/fomaml_paper$Q --columns $COLUMNS_SHOWN \
  --out docs/results/maml_vs_fomaml_paper$Q.md
