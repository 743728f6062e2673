"""Steps per second of SymbolicAlchemyVectorEnv (standard level) with uniformly random actions.

Actions are drawn before the clock starts, so the figure is the env alone; one env step of a batch of
n envs counts as n steps. `alchemy_speed` is also called by benchmark.env_speed. Run it on a quiet
machine; each printed figure is the median of --repeats timed runs after one warm-up run:

    python -m benchmark.alchemy_speed [--steps 1000] [--repeats 5] [--seed 0]
"""

import argparse
import statistics
import time

import numpy as np

import alchemy_env
from benchmark.tools.run import OneLineErrorParser  # errors in one line, as every tool here


def alchemy_speed(num_envs: int, steps: int, seed: int) -> float:
    """Env steps per second of SymbolicAlchemyVectorEnv(num_envs) over `steps` vector steps."""
    envs = alchemy_env.SymbolicAlchemyVectorEnv(num_envs)
    envs.reset(seed=seed)
    actions = np.random.default_rng(seed).integers(0, alchemy_env.NUM_ACTIONS, (steps, num_envs))
    start = time.perf_counter()
    for step_actions in actions:  # crosses trial ends and, past 200 steps, NEXT_STEP autoresets
        envs.step(step_actions)
    return steps * num_envs / (time.perf_counter() - start)


def main() -> None:
    parser = OneLineErrorParser(
        prog="python -m benchmark.alchemy_speed", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=1000, help="vector steps per timed run (fewer for big batches)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per figure (the median is printed)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the env and of the random actions")
    args = parser.parse_args()
    if args.steps < 1 or args.repeats < 1:
        parser.error(f"--steps and --repeats must be >= 1, got {args.steps} and {args.repeats}")

    print(f"{'envs':>6}{'steps/s (median)':>20}{'min':>14}{'max':>14}")
    for num_envs in (1, 64, 1024, 4096):
        steps = max(200, args.steps // max(1, num_envs // 256))  # keep the big batches' runs short
        alchemy_speed(num_envs, steps, args.seed)  # warm-up: caches, allocator
        speeds = [alchemy_speed(num_envs, steps, args.seed) for _ in range(args.repeats)]
        print(f"{num_envs:>6}{statistics.median(speeds):>20,.0f}{min(speeds):>14,.0f}{max(speeds):>14,.0f}")


if __name__ == "__main__":
    main()
