#!/usr/bin/env bash
# Experiment 7 (the papers' suggestion C): does a difficulty-aware task distribution get MAML and FOMAML
# round the obstacles? Medium obstacles, uniform targets; held-out success (episodes that end within the
# goal radius) overall and per quadrant on the goals the exact optimal policy reaches, and the return gap
# to each goal's exact optimum R* (benchmark/nav_optimal.py), on 64 held-out goals.
#   1. MAML (N = 1) with --task-sampler uniform, plr and cvar, FOMAML --inner-steps 3 with uniform and plr, each
#      run by benchmark/curriculum.py around the script's own functions (--script);
#   2. the papers' Figure 3a failure case, goals behind the cross, before and after adaptation, per sampler;
#   3. the difficulty map the samplers learned (return gap per goal bin);
#   4. experiment 3's grid (3 target distributions x 4 obstacle levels, FOMAML N = 3) per sampler.
#   5. how much precision the goals need: the exact optimal policy with a share of random actions;
#   6. the frontier sampler (goals of intermediate success) against uniform and plr, MAML and FOMAML N = 3, in
#      sweeps of their own; the three samplers trained 5x longer (2,500 meta-iterations); --frontier-grow, with
#      the band's low end at 0.1 and at 0.02.
# Full: 500 meta-iterations; 5 seeds of the default sampler (uniform) and 3 of the others (1, 2), 3 seeds
# (4, 6). --quick: 1 seed x 20 iterations (a few minutes).
#   bash benchmark/experiments/exp7_curriculum.sh [--quick]      (WORKERS=2 by default)
# Writes docs/results/curriculum_maml_success.md, curriculum_fomaml3_success.md,
# curriculum_difficulty_success.md, noisy_optimum.md, docs/curriculum_{maml,fomaml3}_difficulty_map.png,
# docs/curriculum_{maml,fomaml3}_behind_the_cross.png, and (6) docs/results/frontier_{maml,fomaml3}{,_long}_success.md,
# frontier_{grow,low}_{maml,fomaml3}_success.md, frontier_{maml,fomaml3}_sampled_share_q{1,3}.md,
# frontier_{maml,fomaml3}_long_windows.md and per learner docs/frontier_{maml,fomaml3}_success_map.png,
# _long_success_map.png, _behind_the_cross.png, _held_out_success.png, _long_windows.png, _sampled_share_q{1,3}.png
# (--quick: *_quick*, noisy_optimum_quick.md).
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

# 6. The frontier sampler: the three samplers side by side on 3 seeds; then 5x longer (held out every 250 iterations),
# seed 1 of each, and seeds 2 and 3 of uniform and frontier for MAML; then the frontier grown outward (--frontier-grow),
# also from a band's low end of 0.02
for learner in maml fomaml3; do
  if [[ $learner == maml ]]; then FLAGS=(--set script=maml_vpg.py); else FLAGS=(--set script=fomaml_vpg.py --set inner-steps=3); fi
  python -m benchmark.tools.run benchmark/curriculum.py --name frontier_$learner$Q "${FLAGS[@]}" \
    --grid task-sampler=uniform,plr,frontier --seeds $CMP_SEEDS "${COMMON[@]}"
  LONG=(--set num-iterations=$((5 * ITERS)) --set eval-every=$((ITERS / 2)) --set num-test-tasks=64 --set save-model)
  python -m benchmark.tools.run benchmark/curriculum.py --name frontier_${learner}_long$Q "${FLAGS[@]}" \
    --grid task-sampler=uniform,plr,frontier --seeds 1 "${LONG[@]}" --workers "$WORKERS"
  if [[ $learner == maml ]]; then
    python -m benchmark.tools.run benchmark/curriculum.py --name frontier_${learner}_long$Q "${FLAGS[@]}" \
      --grid task-sampler=uniform,frontier --seeds $CMP_SEEDS "${LONG[@]}" --workers "$WORKERS"
  fi
  python -m benchmark.tools.run benchmark/curriculum.py --name frontier_grow_$learner$Q "${FLAGS[@]}" \
    --grid task-sampler=frontier --set frontier-grow --seeds $CMP_SEEDS --set num-iterations=$ITERS \
    --set num-test-tasks=64 --set save-model --workers "$WORKERS"
  python -m benchmark.tools.run benchmark/curriculum.py --name frontier_low_$learner$Q "${FLAGS[@]}" \
    --grid task-sampler=frontier --set frontier-grow --set "frontier-band=0.02 0.9" --seeds $CMP_SEEDS \
    --set num-iterations=$ITERS --set num-test-tasks=64 --set save-model --workers "$WORKERS"
  for sweep in frontier_$learner$Q frontier_${learner}_long$Q frontier_grow_$learner$Q frontier_low_$learner$Q; do
    python -m benchmark.tools.plots table benchmark/sweeps/$sweep --columns "${COLUMNS[@]}" \
      "sampled_share_by_quadrant[0]" "sampled_share_by_quadrant[1]" "sampled_share_by_quadrant[2]" \
      "sampled_share_by_quadrant[3]" --out docs/results/${sweep}_success.md \
      --title "$sweep: held-out success on the goals the optimal policy reaches (overall, Q1..Q4), return gap" \
      --labels "success (reachable goals)" Q1 Q2 Q3 Q4 "success before adaptation" "return gap R* - return" \
      "adaptation gain" "trained on Q1" "trained on Q2" "trained on Q3" "trained on Q4"
  done
  for q in 1 3; do  # the share of training tasks in the quadrant of the start (Q1) and behind the cross (Q3)
    python -m benchmark.tools.plots windows benchmark/sweeps/frontier_$learner$Q --tag charts/sampled_share_q$q \
      --window $((ITERS / 5)) --num-windows 5 --xlabel iteration --ylabel "share of training tasks in Q$q" \
      --title "frontier_$learner$Q: the share of training tasks in Q$q over training" \
      --out docs/frontier_${learner}${Q}_sampled_share_q$q.png \
      --table-out docs/results/frontier_${learner}${Q}_sampled_share_q$q.md
  done
  python -m benchmark.tools.plots map benchmark/sweeps/frontier_$learner$Q --where task-sampler=plr,frontier \
    --column success_map --ylabel "success rate of its training tasks" --out docs/frontier_${learner}${Q}_success_map.png \
    --title "frontier_$learner$Q: post-adaptation success rate per goal bin as each sampler learned it"
  python -m benchmark.tools.plots map benchmark/sweeps/frontier_${learner}_long$Q --where task-sampler=plr,frontier \
    --column success_map --ylabel "success rate of its training tasks" --out docs/frontier_${learner}${Q}_long_success_map.png \
    --title "frontier_${learner}_long$Q: post-adaptation success rate per goal bin after $((5 * ITERS)) meta-iterations"
  python -m benchmark.tools.plots curves benchmark/sweeps/frontier_${learner}_long$Q \
    --tag eval/post_adaptation_success_rate_on_reachable --xlabel meta-iteration \
    --ylabel "held-out success (reachable goals)" --out docs/frontier_${learner}${Q}_held_out_success.png \
    --title "frontier_${learner}_long$Q: held-out success after adaptation, 64 goals"
  python -m benchmark.tools.plots windows benchmark/sweeps/frontier_${learner}_long$Q \
    --tag eval/post_adaptation_success_rate_on_reachable --window $((5 * ITERS / 2)) --num-windows 2 --first-step 1 \
    --xlabel iteration --ylabel "held-out success (reachable goals)" --out docs/frontier_${learner}${Q}_long_windows.png \
    --table-out docs/results/frontier_${learner}${Q}_long_windows.md \
    --title "frontier_${learner}_long$Q: held-out success, the mean of the evaluations in each half of training"
  python -m benchmark.tools.trajectories --goals 4.5,1.0 2.0,3.5 --out docs/frontier_${learner}${Q}_behind_the_cross.png \
    benchmark/sweeps/frontier_$learner$Q/task-sampler={uniform,plr,frontier}/seed=1
done
