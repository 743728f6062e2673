#!/usr/bin/env bash
# Experiment 6: speed. Env steps per second of the vector envs, and of MAML/FOMAML training
# iterations with the FOMAML/MAML time ratio for N = 1, 3, 5. Run it on a quiet machine.
# --quick: shorter timing runs (noisier figures).
#   bash benchmark/exp6_speed.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p docs/results
if [[ "${1:-}" == "--quick" ]]; then
  python benchmark/env_speed.py --repeats 2 --min-seconds 0.1 | tee docs/results/env_speed_quick.txt
  python benchmark/maml_speed.py --iterations 5 --repeats 1 | tee docs/results/maml_speed_quick.md
else
  python benchmark/env_speed.py | tee docs/results/env_speed.txt
  python benchmark/maml_speed.py | tee docs/results/maml_speed.md
fi
