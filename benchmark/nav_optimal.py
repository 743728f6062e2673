"""Exact optimal return of one navigation task, by dynamic programming over (cell, steps left).

The state space is tiny (101 x 101 cells, 100 steps), so backward induction gives the optimal
undiscounted return and an optimal policy exactly. Use it as the ceiling for a single-task learner
(ppo_single_task.py) and to check that a goal is worth reaching: with reward -distance^2, parking next
to an obstacle can beat a long detour (e.g. goal (4, 4) on medium obstacles), while for (3.5, 3.5) the
optimal policy goes round the cross and reaches the goal.

    python benchmark/nav_optimal.py --goal 3.5 3.5 --obstacles medium
"""

import argparse
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import nav_env  # noqa: E402


def optimal_policy(goal, obstacles: str, collision: str = "block"):
    """Return (optimal return from the start, policy array (100, 101, 101): action at step t in cell)."""
    if collision != "block":
        raise ValueError(f"collision {collision!r} not supported here; allowed: 'block'")
    table = nav_env.collision_table(obstacles)
    goal_cell = np.rint(np.asarray(goal, dtype=np.float64) * nav_env.CELLS_PER_UNIT).astype(int)
    xs, ys = np.meshgrid(np.arange(nav_env.GRID_MAX + 1), np.arange(nav_env.GRID_MAX + 1), indexing="ij")
    value = np.zeros(xs.shape)  # value with no steps left
    policy = []
    for _ in range(nav_env.MAX_EPISODE_STEPS):
        q = []
        for action, (dx, dy) in enumerate(nav_env.ACTION_DELTAS):
            free = table[:, :, action] == nav_env.FREE
            nx, ny = np.where(free, xs + dx, xs), np.where(free, ys + dy, ys)
            distance_sq = (nx - goal_cell[0]) ** 2 + (ny - goal_cell[1]) ** 2
            reached = distance_sq <= nav_env.GOAL_RADIUS_SQ_CELLS  # terminal: reward 0, nothing after
            q.append(np.where(reached, 0.0, -distance_sq / nav_env.CELLS_PER_UNIT**2 + value[nx, ny]))
        q = np.stack(q, -1)
        policy.append(q.argmax(-1))
        value = q.max(-1)
    start = nav_env.START_CELL
    return float(value[start]), np.stack(policy[::-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--goal", type=float, nargs=2, default=(3.5, 3.5), metavar=("X", "Y"), help="the task's goal")
    parser.add_argument("--obstacles", default="medium", help=f"obstacle level: {', '.join(nav_env.OBSTACLES)}")
    args = parser.parse_args()
    try:
        env = nav_env.NavigationEnv(obstacles=args.obstacles)
        env.reset(options={"goal": tuple(args.goal)})
    except ValueError as error:
        parser.exit(2, f"error: {error}\n")
    best, policy = optimal_policy(args.goal, args.obstacles)
    total, steps = 0.0, 0
    for t in range(nav_env.MAX_EPISODE_STEPS):
        cell = np.rint(env.position * nav_env.CELLS_PER_UNIT).astype(int)
        _, reward, terminated, truncated, info = env.step(int(policy[t][cell[0], cell[1]]))
        total, steps = total + reward, t + 1
        if terminated or truncated:
            break
    print(f"goal {tuple(args.goal)} on {args.obstacles!r} obstacles: optimal return {best:.1f}")
    print(f"optimal policy replayed in the env: return {total:.1f}, final distance {info['distance']:.2f}, "
          f"{'reaches the goal' if terminated else 'does not reach the goal'} after {steps} steps")


if __name__ == "__main__":
    main()
