"""Steps per second of the numpy-batched vector envs: the navigation env at 1, 64 and 1,024 envs in its
default collision mode ("block") and in the papers' float dynamics ("original"), with the ratio of the
two, and, when alchemy_env.py is present, the symbolic Alchemy env at 1, 64, 1,024 and 4,096 envs.

Random actions are drawn before the clock starts; each figure is the median of --repeats timed runs
after one warm-up run. The warm-up also calibrates the run length: each timed run has at least --steps
vector steps and lasts at least --min-seconds, so runs with thousands of envs are not 30 ms blips.
Run it on a quiet machine:

    python -m benchmark.env_speed [--steps 2000] [--min-seconds 0.3] [--repeats 5]
"""

import argparse
import importlib.util
import statistics
import time

import numpy as np

import nav_env
from benchmark.tools.run import OneLineErrorParser  # errors in one line, as every tool here


def nav_speed(num_envs: int, steps: int, seed: int, collision: str = "block") -> float:
    """Env steps per second of NavigationVectorEnv(num_envs) on medium obstacles, random actions."""
    envs = nav_env.NavigationVectorEnv(num_envs, obstacles="medium", collision=collision)
    envs.reset(seed=seed)
    actions = np.random.default_rng(seed).integers(0, 8, (steps, num_envs))
    start = time.perf_counter()
    for step_actions in actions:
        envs.step(step_actions)
    return steps * num_envs / (time.perf_counter() - start)


def single_env_speed(steps: int, seed: int) -> float:
    """Steps per second of the single gymnasium.Env, for comparison."""
    env = nav_env.NavigationEnv(obstacles="medium")
    env.reset(seed=seed)
    actions = np.random.default_rng(seed).integers(0, 8, steps).tolist()
    start = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


def median_speed(measure, num_envs: int, steps: int, min_seconds: float, repeats: int) -> float:
    """Median steps/s of measure(vector_steps) over `repeats` runs, after a warm-up that sets the length."""
    warmup_speed = measure(steps)  # also warms caches, lazy tables and the allocator
    steps = max(steps, int(min_seconds * warmup_speed / num_envs) + 1)
    return statistics.median(measure(steps) for _ in range(repeats))


def main() -> None:
    parser = OneLineErrorParser(
        prog="python -m benchmark.env_speed", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=2000, help="vector steps per timed run")
    parser.add_argument("--min-seconds", type=float, default=0.3, help="each timed run lasts at least this long")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per figure (the median is printed)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random actions")
    args = parser.parse_args()
    if args.steps < 1 or args.repeats < 1 or not args.min_seconds > 0:
        parser.error(f"--steps and --repeats must be >= 1 and --min-seconds > 0, got {args.steps}, "
                     f"{args.repeats} and {args.min_seconds}")
    timing = dict(steps=args.steps, min_seconds=args.min_seconds, repeats=args.repeats)

    print(f"{'environment':<34}{'envs':>6}{'steps/s (median)':>20}")
    row = "{:<34}{:>6}{:>20,.0f}"
    single = median_speed(lambda steps: single_env_speed(steps, args.seed), num_envs=1, **timing)
    print(row.format("NavigationEnv (gymnasium.Env)", 1, single))
    for num_envs in (1, 64, 1024):
        speeds = {}
        for collision in ("block", "original"):  # warm-up, and the run length for both modes
            warmup = nav_speed(num_envs, args.steps, args.seed, collision)
            speeds[collision] = [], max(args.steps, int(args.min_seconds * warmup / num_envs) + 1)
        for _ in range(args.repeats):  # the two modes alternate, so a machine's drift hits both alike
            for collision, (measured, steps) in speeds.items():
                measured.append(nav_speed(num_envs, steps, args.seed, collision))
        block, original = (speeds[collision][0] for collision in ("block", "original"))
        ratio = statistics.median(b / o for b, o in zip(block, original))
        print(row.format("NavigationVectorEnv", num_envs, statistics.median(block)))
        print(row.format('  collision="original"', num_envs, statistics.median(original))
              + f"   block / original: {ratio:.2f} (median of {args.repeats} alternating pairs)")
    if importlib.util.find_spec("alchemy_env"):  # nav_env.py alone (e.g. copied elsewhere) has no Alchemy rows
        from benchmark.alchemy_speed import alchemy_speed

        for num_envs in (1, 64, 1024, 4096):
            speed = median_speed(lambda steps: alchemy_speed(num_envs, steps, args.seed), num_envs=num_envs, **timing)
            print(row.format("SymbolicAlchemyVectorEnv", num_envs, speed))
    else:
        print("(alchemy_env.py not found: Alchemy rows skipped)")


if __name__ == "__main__":
    main()
