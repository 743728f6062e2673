"""Exact optimal return of navigation tasks: a command line over nav_env.optimal_returns / optimal_policy.

Backward induction over (cell, steps left) gives the optimal undiscounted return and an optimal policy
exactly. Use it as the ceiling for a learner and to check that a goal is worth reaching: with reward
-distance^2, parking next to an obstacle can beat a long detour (e.g. goal (4, 4) on medium obstacles),
while for (3.5, 3.5) the optimal policy goes round the cross and reaches the goal.

    python -m benchmark.nav_optimal --goal 3.5 3.5 --obstacles medium
    python -m benchmark.nav_optimal --speed 16 64     # seconds of optimal_returns for that many goals
"""

import argparse
import time

import numpy as np

import nav_env
from benchmark.tools.run import OneLineErrorParser  # errors in one line, as every tool here


def main(argv: list[str] | None = None) -> None:
    parser = OneLineErrorParser(
        prog="python -m benchmark.nav_optimal", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--goal", type=float, nargs=2, default=(3.5, 3.5), metavar=("X", "Y"), help="the task's goal")
    parser.add_argument("--obstacles", default="medium", help=f"obstacle level: {', '.join(nav_env.OBSTACLES)}")
    parser.add_argument("--collision", default="block", help="collision mode: block or stick")
    parser.add_argument("--speed", type=int, nargs="*", default=None, metavar="G",
                        help="instead: time optimal_returns on G uniform goals (best of 3) for each G given")
    args = parser.parse_args(argv)
    try:
        if args.speed is not None:
            for num_goals in args.speed:
                goals = nav_env.sample_goals("uniform", num_goals, np.random.default_rng(0))
                nav_env.optimal_returns(goals[:1], args.obstacles, args.collision)  # tables built outside the timing
                times = []
                for _ in range(3):
                    start = time.perf_counter()
                    nav_env.optimal_returns(goals, args.obstacles, args.collision)
                    times.append(time.perf_counter() - start)
                print(f"{num_goals} goals: {min(times):.3f} s")
            return
        best, reaches, policy = nav_env.optimal_policy(tuple(args.goal), args.obstacles, args.collision)
        env = nav_env.NavigationEnv(obstacles=args.obstacles, collision=args.collision)
        env.reset(options={"goal": tuple(args.goal)})
    except ValueError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    total, steps = 0.0, 0
    for t in range(nav_env.MAX_EPISODE_STEPS):
        cell = np.rint(env.position * nav_env.CELLS_PER_UNIT).astype(int)
        _, reward, terminated, truncated, info = env.step(int(policy[t][cell[0], cell[1]]))
        total, steps = total + reward, t + 1
        if terminated or truncated:
            break
    print(f"goal {tuple(args.goal)} on {args.obstacles!r} obstacles: optimal return {best:.1f}, "
          f"{'an optimal policy reaches the goal' if reaches else 'no optimal policy reaches the goal'}")
    print(f"optimal policy replayed in the env: return {total:.1f}, final distance {info['distance']:.2f}, "
          f"{'reaches the goal' if terminated else 'does not reach the goal'} after {steps} steps")


if __name__ == "__main__":
    main()
