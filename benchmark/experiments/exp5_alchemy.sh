#!/usr/bin/env bash
# Experiment 5 (Alchemy paper): MAML and FOMAML on symbolic Alchemy, scored on held-out chemistries
# against the reference table (random actions 17.5, random heuristic 147, V-MPO 155, ideal observer 284),
# and the training time of 100,000 episodes against the papers' 26 hours. --see-chemistry (the task
# visible to the policy) is the upper reference of the same learner.
# Full: the default budget (100,000 training episodes), 2 seeds. --quick: 4,000 episodes, 1 seed.
#   bash benchmark/experiments/exp5_alchemy.sh [--quick]      (WORKERS=2 by default)
# Writes docs/results/alchemy.md (--quick: alchemy_quick.md): MAML, FOMAML and MAML with --see-chemistry.
set -euo pipefail
cd "$(dirname "$0")/../.."  # the repository root: python -m finds the benchmark package there
WORKERS=${WORKERS:-2}
if [[ "${1:-}" == "--quick" ]]; then Q=_quick; SEEDS=1; EPISODES=4000; else Q=; SEEDS=2; EPISODES=100000; fi
ITERATIONS=$(( (EPISODES + 399) / 400 ))  # an iteration samples 20 chemistries x 10 episodes x (1 inner + 1 validation)
python -m benchmark.tools.run alchemy_maml.py --name alchemy$Q --grid first-order=false,true \
  --set num-iterations=$ITERATIONS --seeds $SEEDS --workers $WORKERS
python -m benchmark.tools.run alchemy_maml.py --name alchemy_see_chemistry$Q --set see-chemistry \
  --set num-iterations=$ITERATIONS --seeds 1 --workers $WORKERS
# Timings share the machine with another worker (single-threaded each): a lone run is faster.
python -m benchmark.tools.plots table benchmark/sweeps/alchemy$Q benchmark/sweeps/alchemy_see_chemistry$Q \
  --columns pre_adaptation_score post_adaptation_score heuristic_score post_minus_heuristic train_episodes train_time_s \
  --out docs/results/alchemy$Q.md
