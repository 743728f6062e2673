#!/usr/bin/env bash
# Experiment 4 (Alchemy paper, Figure 1c,d): how well does each initialisation adapt? Held-out adaptation
# curves (0..K inner steps, inner lr 1.0 for all) from three initialisations, on nav and on Alchemy:
#   meta-learned:  MAML (maml_vpg.py --no-see-goal / alchemy_maml.py), saved with --save-model;
#   pretrained:    multi-task policy gradient on the same tasks and budget. It is run as FOMAML with a
#                  vanishing inner step (--inner-lr 1e-9): the adapted parameters are then the
#                  initialisation itself, so the update is the plain policy gradient summed over tasks;
#   random:        the scripts' own initialisation for seed 1 (--num-iterations 0).
# Full: nav 500 meta-iterations, Alchemy 100,000 episodes, K = 5, seed 1. --quick: tiny budgets, K = 2.
#   bash benchmark/experiments/exp4_initialisations.sh [--quick]
# Writes docs/initialisations_nav.png, docs/initialisations_alchemy.png and their tables
# docs/results/initialisations_nav.md, initialisations_alchemy.md (--quick: initialisations_quick_*).
set -euo pipefail
cd "$(dirname "$0")/../.."  # the repository root: python -m finds the benchmark package there
ROOT=$PWD
if [[ "${1:-}" == "--quick" ]]; then Q=_quick; NAV_ITERS=5; ALCHEMY_EPISODES=800; K=2
else Q=; NAV_ITERS=500; ALCHEMY_EPISODES=100000; K=5; fi
ALCHEMY_ITERS=$(( (ALCHEMY_EPISODES + 399) / 400 ))  # an iteration: 20 chemistries x 10 episodes x (1 + 1)
OUT=benchmark/sweeps/initialisations$Q
PRETRAIN=1e-9

# Train the two learned initialisations of each environment, two single-threaded runs at a time.
train() {  # train FOLDER SCRIPT FLAGS...: one run of SCRIPT with its runs/ under $OUT/FOLDER
  local folder=$OUT/$1 script=$2; shift 2
  if compgen -G "$folder/runs/*/summary.json" > /dev/null; then echo "skip $folder (done)"; return; fi
  mkdir -p "$folder" && (cd "$folder" && OMP_NUM_THREADS=1 python "$ROOT/$script" --seed 1 --save-model "$@" > stdout.log)
  echo "trained $folder"
}
train nav_meta maml_vpg.py --no-see-goal --num-iterations $NAV_ITERS & a=$!
train nav_pretrained fomaml_vpg.py --no-see-goal --num-iterations $NAV_ITERS --inner-lr $PRETRAIN & b=$!
wait $a; wait $b
train alchemy_meta alchemy_maml.py --num-iterations $ALCHEMY_ITERS & a=$!
train alchemy_pretrained alchemy_maml.py --first-order --num-iterations $ALCHEMY_ITERS --inner-lr $PRETRAIN & b=$!
wait $a; wait $b

# Evaluate every initialisation after 0..K inner steps on the scripts' held-out tasks (same for all).
model() { ls "$OUT/$1"/runs/*/*.cleanrl_model | tail -n 1; }
evaluate() {  # evaluate FOLDER SCRIPT FLAGS...: with no training iteration, the nav scripts' --inner-steps K are the evaluation's
  local folder=$OUT/$1 script=$2 steps=--eval-inner-steps; shift 2
  [[ $script == alchemy_maml.py ]] || steps=--inner-steps
  rm -rf "$folder" && mkdir -p "$folder"
  (cd "$folder" && python "$ROOT/$script" --seed 1 --num-iterations 0 $steps $K --inner-lr 1.0 "$@" > stdout.log)
}
evaluate nav_eval_meta maml_vpg.py --no-see-goal --load-model "$ROOT/$(model nav_meta)"
evaluate nav_eval_pretrained maml_vpg.py --no-see-goal --load-model "$ROOT/$(model nav_pretrained)"
evaluate nav_eval_random maml_vpg.py --no-see-goal
evaluate alchemy_eval_meta alchemy_maml.py --load-model "$ROOT/$(model alchemy_meta)"
evaluate alchemy_eval_pretrained alchemy_maml.py --load-model "$ROOT/$(model alchemy_pretrained)"
evaluate alchemy_eval_random alchemy_maml.py

python -m benchmark.tools.adaptation_curves --measure distance --out docs/initialisations${Q}_nav.png \
  --table-out docs/results/initialisations${Q}_nav.md \
  meta-learned=$OUT/nav_eval_meta pretrained=$OUT/nav_eval_pretrained random=$OUT/nav_eval_random
python -m benchmark.tools.adaptation_curves --measure score --out docs/initialisations${Q}_alchemy.png \
  --table-out docs/results/initialisations${Q}_alchemy.md \
  meta-learned=$OUT/alchemy_eval_meta pretrained=$OUT/alchemy_eval_pretrained random=$OUT/alchemy_eval_random
