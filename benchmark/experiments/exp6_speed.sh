#!/usr/bin/env bash
# Experiment 6: speed. Env steps per second of the vector envs, and of MAML/FOMAML training
# iterations with the FOMAML/MAML time ratio for N = 1, 3, 5. Run it on a quiet machine.
# --quick: shorter timing runs (noisier figures).
#   bash benchmark/experiments/exp6_speed.sh [--quick]
# Writes docs/results/env_speed.txt and docs/results/maml_speed.md (--quick: *_quick).
set -euo pipefail
cd "$(dirname "$0")/../.."  # the repository root: python -m finds the benchmark package there
mkdir -p docs/results
if [[ "${1:-}" == "--quick" ]]; then
  python -m benchmark.env_speed --repeats 2 --min-seconds 0.1 | tee docs/results/env_speed_quick.txt
  python -m benchmark.maml_speed --iterations 5 --repeats 1 | tee docs/results/maml_speed_quick.md
else
  python -m benchmark.env_speed | tee docs/results/env_speed.txt
  python -m benchmark.maml_speed | tee docs/results/maml_speed.md
fi
