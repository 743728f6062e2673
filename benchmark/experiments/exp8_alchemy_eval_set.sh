#!/usr/bin/env bash
# Experiment 8: Alchemy against DeepMind's published agents, on dm_alchemy's 1,000 evaluation episodes (needs the
# dm_alchemy package, docs/alchemy_env.md#dm_alchemy). Trains alchemy_maml.py with its default flags (MAML, and
# FOMAML with --first-order), seed 1, scores each with --eval-set dm_alchemy before and after adaptation,
# and writes the table in the Alchemy paper's shape (agent | score on the 1,000 episodes, mean ± s.e.)
# with DeepMind's agents, recomputed from dm_alchemy's agent_events on the same episodes.
# Then (stage 2, skipped by --quick) the adaptation measurements: the saved MAML model evaluated with
# more adaptation episodes per chemistry (--episodes-per-task), more inner steps and other inner lrs.
# One single-threaded run at a time.
# Full: 100,000 training episodes each, all 1,000 episodes, stage 2's settings (about 50 minutes on 2
# cores); --quick: 2,000 training episodes, 50 episodes, no stage 2 (under a minute).
#   bash benchmark/experiments/exp8_alchemy_eval_set.sh [--quick]
#   (PYTHON=... picks the interpreter; ADAPT="K,N,LR[,E] ..." replaces stage 2's settings)
# Tables: docs/results/alchemy_eval_set.md (alchemy_eval_set_quick.md with --quick) and
# docs/results/alchemy_adaptation.md. A finished run (its summary.json exists) is skipped on a rerun.
set -euo pipefail
cd "$(dirname "$0")/../.."  # the repository root: python -m finds the benchmark package there
ROOT=$PWD
PYTHON=${PYTHON:-python}
if [[ "${1:-}" == "--quick" ]]; then Q=_quick; EPISODES=2000; EVAL=50
else Q=; EPISODES=100000; EVAL=1000; fi
ITERATIONS=$(( (EPISODES + 399) / 400 ))  # an iteration samples 20 chemistries x 10 episodes x (1 inner + 1 validation)
OUT=benchmark/sweeps/alchemy_eval_set$Q

run() {  # run FOLDER FLAGS...: one alchemy_maml.py run with its runs/ under $OUT/FOLDER, skipped when done
  local folder=$OUT/$1; shift
  if compgen -G "$folder/runs/*/summary.json" > /dev/null; then echo "skip $folder (done)"; return; fi
  mkdir -p "$folder"
  local flags=(--seed 1 --eval-set dm_alchemy --eval-episodes $EVAL "$@")
  (cd "$folder" && echo "alchemy_maml.py ${flags[*]}" > command.txt &&
   OMP_NUM_THREADS=1 $PYTHON "$ROOT/alchemy_maml.py" "${flags[@]}" > stdout.log)
  echo "done $folder"
}
model() { ls "$ROOT/$OUT/$1"/runs/*/*.cleanrl_model | tail -n 1; }

# Stage 1: default flags, trained and scored on the evaluation episodes.
run maml --num-iterations $ITERATIONS --save-model
run fomaml --first-order --num-iterations $ITERATIONS --save-model

$PYTHON - "$OUT" "docs/results/alchemy_eval_set$Q.md" <<'EOF'
import glob, json, sys
out, table = sys.argv[1:]
command = lambda folder: open(f"{out}/{folder}/command.txt").read().strip()
def summary(folder):
    return json.load(open(sorted(glob.glob(f"{out}/{folder}/runs/*/summary.json"))[-1]))
maml, fomaml = summary("maml"), summary("fomaml")
n = maml["eval_episodes"]
names = {"search_oracle": "search oracle", "ideal_observer": "ideal observer",
         "ground_truth_predict": "V-MPO with ground-truth prediction (ground_truth_predict)",
         "belief_state_predict": "V-MPO with belief-state prediction (belief_state_predict)",
         "baseline": "V-MPO (baseline)", "random_heuristic": "random heuristic bot (alchemy_env's, played here)"}
pm = lambda pair: f"{pair[0]:+.2f} ± {pair[1]:.2f}"
rows = [f"| agent | score on dm_alchemy's {n:,} evaluation episodes (± s.e.) | minus V-MPO, paired (± s.e.) "
        "| after − before adaptation, paired (± s.e.) | training time |", "|---|---:|---:|---:|---:|"]
for agent in sorted(names, key=lambda a: -maml["reference_scores"][a]):
    score, sem = maml["reference_scores"][agent], maml["reference_score_sems"][agent]
    rows.append(f"| DeepMind: {names[agent]} | {score:.2f} ± {sem:.2f} | | | |"
                if agent != "random_heuristic" else f"| {names[agent]} | {score:.2f} ± {sem:.2f} | | | |")
for label, s in [("MAML (`alchemy_maml.py`)", maml), ("FOMAML (`alchemy_maml.py --first-order`)", fomaml)]:
    minutes = f"{s['train_time_s']:.0f} s ({s['train_episodes']:,} episodes)"
    rows.append(f"| {label}, before adaptation | {s['score_after_steps'][0]:.2f} ± {s['score_sem_after_steps'][0]:.2f} "
                f"| {pm(s['pre_minus_reference']['baseline'])} | | {minutes} |")
    k = s["args"]["inner_steps"]
    rows.append(f"| {label}, after {k} inner step{'s' if k > 1 else ''} | {s['post_adaptation_score']:.2f} ± "
                f"{s['score_sem_after_steps'][k]:.2f} | {pm(s['post_minus_reference']['baseline'])} "
                f"| {pm(s['post_minus_pre'])} | |")
header = [f"DeepMind's agents, recomputed from dm_alchemy's agent_events, and alchemy_maml.py with its default "
          f"flags (seed 1) on dm_alchemy's {n:,} evaluation episodes. From `bash benchmark/experiments/exp8_alchemy_eval_set.sh`, "
          f"which runs, each from its folder under {out}/ with OMP_NUM_THREADS=1:", "",
          f"    python {command('maml')}", f"    python {command('fomaml')}", "",
          "Each evaluation episode is played 10 times (--episodes-per-task) before adaptation and after the "
          "inner step, which adapts on 10 fresh episodes of its chemistry; the random-heuristic bot also plays "
          "each episode 10 times. Paired differences are per episode.", ""]
open(table, "w").write("\n".join(header + rows) + "\n")
print("\n".join(rows))
EOF
[[ -n "$Q" ]] && exit 0

# Stage 2: adaptation from the saved MAML model (no training): K = --episodes-per-task adaptation
# episodes per chemistry for each inner step (and K scored plays of each evaluation episode), N inner
# steps, inner lr. --inner-steps N makes the score after N steps the post-adaptation score of summary.json.
MAML=$(model maml)
adapt() {  # adapt K N LR [E]: E, the first E evaluation episodes only (default all)
  EVAL=${4:-$EVAL} run adapt_K=$1_N=$2_lr=$3${4:+_E=$4} --load-model "$MAML" --num-iterations 0 \
    --episodes-per-task $1 --inner-steps $2 --inner-lr $3
}
# K,N,LR[,E] settings (K = 10, N = 1, lr 1.0 is the training run's own evaluation, stage 1)
for setting in ${ADAPT:-10,1,3.0 10,1,10.0 10,3,1.0 40,1,1.0 40,1,3.0 100,1,1.0,200}; do
  IFS=, read -r K N LR E <<< "$setting"; adapt $K $N $LR $E
done

$PYTHON - "$OUT" docs/results/alchemy_adaptation.md "$ROOT/" <<'EOF'
import glob, json, os, sys
out, table, root = sys.argv[1:]
rows = ["| evaluation episodes | adaptation episodes per chemistry (K) | inner steps (N) | inner lr | score before (± s.e.) | score after 1 / … / N steps "
        "| after − before, paired (± s.e.) | V-MPO on the same episodes | after N steps − V-MPO, paired (± s.e.) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
found = []
paths = glob.glob(f"{out}/maml/runs/*/summary.json") + glob.glob(f"{out}/adapt_*/runs/*/summary.json")
for path in paths:
    s = json.load(open(path))
    a = s["args"]
    found.append((-s["eval_episodes"], a["episodes_per_task"], a["inner_steps"], a["inner_lr"], s))
for e, k, n, lr, s in sorted(found, key=lambda row: row[:4]):
    pm = lambda pair: f"{pair[0]:+.2f} ± {pair[1]:.2f}"
    steps = " / ".join(f"{x:.2f}" for x in s["score_after_steps"][1:])
    rows.append(f"| {-e:,} | {k} | {n} | {lr:g} | {s['pre_adaptation_score']:.2f} ± {s['score_sem_after_steps'][0]:.2f} "
                f"| {steps} | {pm(s['post_minus_pre'])} | {s['reference_scores']['baseline']:.2f} "
                f"| {pm(s['post_minus_reference']['baseline'])} |")
commands = sorted({open(os.path.join(os.path.dirname(p), "..", "..", "command.txt")).read().strip()
                   for p in paths}, key=lambda c: (len(c), c))
header = ["Adaptation of the saved MAML model (alchemy_maml.py, default flags, seed 1, 100,000 training episodes) "
          "on dm_alchemy's evaluation episodes. Each evaluation episode is played K times with its items before "
          "adaptation and after each inner step; each inner step adapts on K fresh episodes of its chemistry. "
          "Paired differences are per episode. From `bash benchmark/experiments/exp8_alchemy_eval_set.sh`, which runs, each from "
          f"its folder under {out}/ with OMP_NUM_THREADS=1 (MODEL: the MAML run's saved model):", ""]
header += ["    python " + c.replace(root, "") for c in commands]
header = [h if "--load-model" not in h else h.split("--load-model ")[0] + "--load-model MODEL "
          + h.split("--load-model ")[1].split(" ", 1)[1] for h in header] + [""]
open(table, "w").write("\n".join(header + rows) + "\n")
print("\n".join(rows))
EOF
