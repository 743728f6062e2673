"""How precisely must a policy act to reach the goals? The exact optimal policy with a share of random actions.

For each held-out goal that the optimal policy reaches (the 64 goals the training scripts test on with
--num-test-tasks 64), play the optimal policy of nav_optimal.optimal_policy in NavigationVectorEnv, with
every action replaced by a uniformly random one with probability epsilon, and report the share of
episodes that end within the goal radius, overall and per quadrant, beside the number of steps the
optimal episode takes (of the 100). Goals behind the medium cross need nearly all 100 steps, so a policy
that is a few per cent away from deterministic-optimal already misses most of them: this bounds the
success a stochastic (sampled) policy can reach there.

    python -m benchmark.noisy_optimum --obstacles medium --epsilons 0 0.02 0.05 0.1 0.2 --out docs/results/noisy_optimum.md
"""

import argparse
import pathlib
import shlex
import sys

import numpy as np

import nav_env
from benchmark import nav_optimal
from benchmark.tools.run import OneLineErrorParser


def play(goal, policy, epsilon: float, repeats: int, rng: np.random.Generator, obstacles: str):
    """(share of `repeats` episodes that reach the goal, steps of the noiseless episode)."""
    envs = nav_env.NavigationVectorEnv(repeats, obstacles=obstacles, autoreset_mode="Disabled")
    envs.reset(seed=int(rng.integers(2**31)), options={"goals": np.repeat([goal], repeats, axis=0)})
    reached = np.zeros(repeats, dtype=bool)
    running = np.ones(repeats, dtype=bool)
    steps = np.full(repeats, nav_env.MAX_EPISODE_STEPS)
    for t in range(nav_env.MAX_EPISODE_STEPS):
        cells = np.rint(envs.positions * nav_env.CELLS_PER_UNIT).astype(int)
        actions = policy[t][cells[:, 0], cells[:, 1]].astype(np.int64)
        explore = rng.random(repeats) < epsilon
        actions[explore] = rng.integers(len(nav_env.ACTION_NAMES), size=int(explore.sum()))
        _, _, terminated, truncated, _ = envs.step(actions)
        newly = running & terminated
        reached |= newly
        steps[newly] = t + 1
        running &= ~(terminated | truncated)
        if not running.any():
            break
    return reached.mean(), steps


def main(argv: list[str] | None = None) -> None:
    parser = OneLineErrorParser(
        prog="python -m benchmark.noisy_optimum", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--obstacles", default="medium", choices=tuple(nav_env.OBSTACLES), help="obstacle level")
    parser.add_argument("--targets", default="uniform", choices=nav_env.TARGETS, help="target distribution")
    parser.add_argument("--num-goals", type=int, default=64, help="held-out goals (the scripts' --num-test-tasks)")
    parser.add_argument("--test-seed", type=int, default=0, help="the scripts' --test-seed")
    parser.add_argument("--epsilons", type=float, nargs="+", default=[0.0, 0.02, 0.05, 0.1, 0.2],
                        help="shares of random actions")
    parser.add_argument("--repeats", type=int, default=50, help="episodes per goal and epsilon")
    parser.add_argument("--out", type=pathlib.Path, help="also write the table here (Markdown)")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if args.num_goals < 1 or args.repeats < 1:
        parser.exit(2, f"error: --num-goals and --repeats must be >= 1, got {args.num_goals} and {args.repeats}\n")
    if not all(0 <= e <= 1 for e in args.epsilons):
        parser.exit(2, f"error: every --epsilons value must be in [0, 1], got {args.epsilons}\n")

    goals = nav_env.sample_goals(args.targets, args.num_goals, np.random.default_rng([1, args.test_seed]))
    quadrants = nav_optimal.goal_quadrants(goals)
    rng = np.random.default_rng(0)
    rows, optimal_steps, kept = [], [], []
    success = np.zeros((len(args.epsilons), len(goals)))
    for g, goal in enumerate(goals):
        _, reaches, policy = nav_optimal.optimal_policy(goal, args.obstacles)
        if not reaches:
            continue
        kept.append(g)
        for e, epsilon in enumerate(args.epsilons):
            success[e, g], steps = play(goal, policy, epsilon, 1 if epsilon == 0 else args.repeats, rng, args.obstacles)
            if epsilon == 0:
                optimal_steps.append(int(steps[0]))
    kept = np.array(kept)
    quadrant_of_kept = quadrants[kept]
    optimal_steps = np.array(optimal_steps)

    def by_quadrant(values):
        return [f"{values[quadrant_of_kept == q].mean():.2f}" if (quadrant_of_kept == q).any() else "-" for q in range(4)]

    header = ["random actions", "success on reachable goals", "Q1", "Q2", "Q3", "Q4"]
    for e, epsilon in enumerate(args.epsilons):
        values = success[e, kept]
        rows.append([f"{epsilon:.0%}", f"{values.mean():.2f}", *by_quadrant(values)])
    rows.append(["optimal episode's steps (median)", f"{np.median(optimal_steps):.0f}",
                 *[f"{np.median(optimal_steps[quadrant_of_kept == q]):.0f}" if (quadrant_of_kept == q).any() else "-"
                   for q in range(4)]])
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    command = f"{parser.prog} {shlex.join(argv)}"
    text = (f"**The exact optimal policy with random actions: {args.obstacles} obstacles, {args.targets} targets, "
            f"{len(kept)} of {len(goals)} held-out goals reachable, {args.repeats} episodes per goal and share**\n\n"
            + "\n".join(lines) + f"\n\n*Made by `{command}`.*\n")
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
