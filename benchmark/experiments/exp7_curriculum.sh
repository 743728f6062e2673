#!/usr/bin/env bash
# Experiment 7 (the papers' suggestion C): does a difficulty-aware task distribution get MAML and FOMAML
# round the obstacles? Medium obstacles, uniform targets; held-out success (episodes that end within the
# goal radius) overall and per quadrant on the goals the exact optimal policy reaches, and the return gap
# to each goal's exact optimum R* (nav_env.optimal_returns), on 64 held-out goals.
#   1. MAML (N = 1) with --task-sampler uniform, plr and cvar, FOMAML --inner-steps 3 with uniform and plr, each
#      run by benchmark/curriculum.py around the script's own functions (--script);
#   2. the papers' Figure 3a failure case, goals behind the cross, before and after adaptation, per sampler;
#   3. the difficulty map the samplers learned (return gap per goal bin);
#   4. experiment 3's grid (3 target distributions x 4 obstacle levels, FOMAML N = 3) per sampler.
#   5. how much precision the goals need: the exact optimal policy with a share of random actions.
# Full: 500 meta-iterations; 5 seeds of the default sampler (uniform) and 3 of the others (1, 2), 3 seeds
# (4). --quick: 1 seed x 20 iterations (a few minutes).
#   bash benchmark/experiments/exp7_curriculum.sh [--quick]      (WORKERS=2 by default)
# Writes docs/results/curriculum_maml_success.md, curriculum_fomaml3_success.md,
# curriculum_difficulty_success.md, noisy_optimum.md, and docs/curriculum_{maml,fomaml3}_difficulty_map.png,
# docs/curriculum_{maml,fomaml3}_behind_the_cross.png (--quick: curriculum_*_quick_*, noisy_optimum_quick.md).
set -euo pipefail
cd "$(dirname "$0")/../.."  # the repository root: python -m finds the benchmark package there
WORKERS=${WORKERS:-2}
if [[ "${1:-}" == "--quick" ]]; then Q=_quick; SEEDS=1; CMP_SEEDS=1; GRID_SEEDS=1; ITERS=20
else Q=; SEEDS=5; CMP_SEEDS=3; GRID_SEEDS=3; ITERS=500; fi
SAMPLERS=uniform,plr,cvar
COMMON=(--set num-iterations=$ITERS --set num-test-tasks=64 --set save-model --workers "$WORKERS")
COLUMNS=(post_adaptation_success_rate_on_reachable
         "post_adaptation_success_rate_on_reachable_by_quadrant[0]" "post_adaptation_success_rate_on_reachable_by_quadrant[1]"
         "post_adaptation_success_rate_on_reachable_by_quadrant[2]" "post_adaptation_success_rate_on_reachable_by_quadrant[3]"
         pre_adaptation_success_rate_on_reachable post_adaptation_return_gap adaptation_gain)

# the default (uniform) on $SEEDS seeds, the samplers beside it on the first $CMP_SEEDS
python -m benchmark.tools.run benchmark/curriculum.py --name curriculum_fomaml3$Q \
  --set script=fomaml_vpg.py --grid task-sampler=uniform --set inner-steps=3 \
  --seeds $SEEDS "${COMMON[@]}"
python -m benchmark.tools.run benchmark/curriculum.py --name curriculum_fomaml3$Q \
  --set script=fomaml_vpg.py --grid task-sampler=uniform,plr --set inner-steps=3 \
  --seeds $CMP_SEEDS "${COMMON[@]}"
python -m benchmark.tools.run benchmark/curriculum.py --name curriculum_maml$Q \
  --set script=maml_vpg.py --grid task-sampler=$SAMPLERS --seeds $CMP_SEEDS "${COMMON[@]}"
python -m benchmark.tools.run benchmark/curriculum.py --name curriculum_maml$Q \
  --set script=maml_vpg.py --grid task-sampler=uniform --seeds $SEEDS "${COMMON[@]}"
for sweep in curriculum_maml$Q curriculum_fomaml3$Q; do
  python -m benchmark.tools.plots table benchmark/sweeps/$sweep --columns "${COLUMNS[@]}" \
    --title "$sweep: held-out success on the goals the optimal policy reaches (overall, Q1..Q4), return gap" \
    --labels "success (reachable goals)" Q1 Q2 Q3 Q4 "success before adaptation" "return gap R* - return" "adaptation gain" \
    --out docs/results/${sweep}_success.md
  python -m benchmark.tools.plots map benchmark/sweeps/$sweep --where task-sampler=$([[ $sweep == curriculum_maml* ]] && echo plr,cvar || echo plr) \
    --title "$sweep: difficulty per goal bin as each sampler learned it, mean over seeds" \
    --ylabel "return gap R* - return after adaptation" --out docs/${sweep}_difficulty_map.png
done
# Figure 3a: goals behind the medium cross (lower left), before and after adaptation, seed 1 of each sampler
python -m benchmark.tools.trajectories --goals 4.5,1.0 2.0,3.5 --out docs/curriculum_maml${Q}_behind_the_cross.png \
  benchmark/sweeps/curriculum_maml$Q/task-sampler={uniform,plr,cvar}/seed=1
python -m benchmark.tools.trajectories --goals 4.5,1.0 2.0,3.5 --out docs/curriculum_fomaml3${Q}_behind_the_cross.png \
  benchmark/sweeps/curriculum_fomaml3$Q/task-sampler={uniform,plr}/seed=1
# Experiment 3's grid with each sampler
python -m benchmark.tools.run benchmark/curriculum.py --name curriculum_difficulty$Q \
  --set script=fomaml_vpg.py --grid task-sampler=uniform,plr \
  --grid targets=uniform,random,narrow --grid obstacles=none,easy,medium,hard --set inner-steps=3 \
  --set num-iterations=$ITERS --set num-test-tasks=64 --seeds $GRID_SEEDS --workers "$WORKERS"
python -m benchmark.tools.plots table benchmark/sweeps/curriculum_difficulty$Q \
  --columns post_adaptation_success_rate_on_reachable post_adaptation_return_gap post_adaptation_distance \
  --labels "success (reachable goals)" "return gap R* - return" "distance" \
  --title "Experiment 3 per task sampler: FOMAML N = 3, held-out success on reachable goals, return gap, distance" \
  --out docs/results/curriculum_difficulty${Q}_success.md
python -m benchmark.noisy_optimum --out docs/results/noisy_optimum$Q.md ${Q:+--repeats 4}
