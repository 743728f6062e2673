"""The exact optimum of the navigation tasks, and the held-out figures of a nav meta-learner measured against it.

Backward induction over (cell, steps left) on nav_env.collision_table, the env's transition model, gives each task's
optimal undiscounted return R* and an optimal policy exactly. R* is a learner's ceiling, and says whether a goal is
worth reaching: with reward -distance^2, parking beside an obstacle can beat a long detour (goal (4, 4) on medium
obstacles), while for (3.5, 3.5) the optimal policy goes round the cross and reaches the goal.

`held_out_outcomes` scores a run of maml_vpg.py or fomaml_vpg.py from its summary.json (its test goals and their
per-goal returns and success after 0..K inner steps): the success rate on the goals an optimal policy reaches, the
return gap R* - return, and both per quadrant. benchmark/curriculum.py logs them with every evaluation.

    python -m benchmark.nav_optimal --goal 3.5 3.5 --obstacles medium
    python -m benchmark.nav_optimal --summary runs/<run>/summary.json    # a meta-learner's held-out figures
    python -m benchmark.nav_optimal --speed 16 64     # seconds of optimal_returns for that many goals
"""

import argparse
import json
import time

import numpy as np

import nav_env
from benchmark.tools.run import OneLineErrorParser  # errors in one line, as every tool here


def goal_quadrants(goals) -> np.ndarray:
    """Quadrant of each goal (array-like (n, 2), map units) as an index into QUADRANTS: 0 = Q1 (upper right,
    the start's), 1 = Q2, 2 = Q3, 3 = Q4. By position; a goal on the line x = 5 or y = 5 counts as right / upper."""
    goals = np.asarray(goals, dtype=np.float64).reshape(-1, 2)
    right, upper = goals[:, 0] >= nav_env.MAP_SIZE / 2, goals[:, 1] >= nav_env.MAP_SIZE / 2
    return np.select([right & upper, ~right & upper, ~right & ~upper], [0, 1, 2], 3)


def _successors(obstacles: str, collision: str) -> np.ndarray:
    """int (cells, 8): the flat cell (x * 101 + y) each action leads to. A blocked move stays in its cell; with
    collision="stick" a move into an obstacle leads to cells + cell, the frozen copy of the cell. Not cached:
    it takes a millisecond, and follows nav_env.collision_table when a level is redefined (benchmark/ppo_nav.py)."""
    table = nav_env.collision_table(obstacles).reshape(-1, len(nav_env.ACTION_NAMES))
    cells = np.arange(len(table))
    moved = cells[:, None] + nav_env.ACTION_DELTAS[:, 0] * (nav_env.GRID_MAX + 1) + nav_env.ACTION_DELTAS[:, 1]
    successors = np.where(table == nav_env.FREE, moved, cells[:, None])
    if collision == "stick":
        successors = np.where(table == nav_env.OBSTACLE, len(table) + cells[:, None], successors)
    return successors.astype(np.intp)


def _backward_induction(goal_cells: np.ndarray, obstacles: str, collision: str, horizon: int, start_cell,
                        keep_policy: bool):
    """Keys 2 * value + reaches (cells, G) with `horizon` steps left, and optionally the policy (horizon, cells, G).

    Every reward is -(squared distance in cells^2) / 100, so the value times 100 is an integer and the DP is exact
    in int32 (|key| <= 2 * 100 * 20000). The key orders by value, then prefers reaching the goal among equal
    values: reaches is 1 iff some optimal policy ends the episode within the goal radius, and the argmax policy
    is such a policy. Without keep_policy, only the cells the agent can occupy are solved (those within
    Chebyshev distance t of the start after t steps), about a third of the work: the cells are numbered by
    that distance, so those cells are a prefix of the arrays, and the goals are the last axis, so the gather
    of a successor copies a contiguous row of G values.
    """
    num_cells = (nav_env.GRID_MAX + 1) ** 2
    cx, cy = np.divmod(np.arange(num_cells), nav_env.GRID_MAX + 1)
    chebyshev = np.maximum(np.abs(cx - start_cell[0]), np.abs(cy - start_cell[1]))
    order = np.argsort(chebyshev, kind="stable")  # position -> cell
    position = np.empty(num_cells, dtype=np.intp)
    position[order] = np.arange(num_cells)  # cell -> position
    successors = _successors(obstacles, collision)[order]  # rows by position, entries still cells
    successors = np.where(successors < num_cells, position[successors % num_cells],
                          num_cells + position[successors % num_cells])  # stick's frozen copies follow the cells
    # within[d]: the number of cells within Chebyshev distance d of the start
    within = np.searchsorted(chebyshev[order], np.arange(horizon + 2), side="right")
    cx, cy = cx[order], cy[order]
    distance_sq = (cx[:, None] - goal_cells[:, 0]) ** 2 + (cy[:, None] - goal_cells[:, 1]) ** 2  # (cells, G)
    reached = distance_sq <= nav_env.GOAL_RADIUS_SQ_CELLS  # arriving there ends the episode with reward 0
    arrival = np.where(reached, 0, -2 * distance_sq).astype(np.int32)  # twice the reward of arriving in a cell
    key = np.zeros(arrival.shape, dtype=np.int32)  # no steps left
    landing = np.zeros((2 * num_cells if collision == "stick" else num_cells, len(goal_cells)), dtype=np.int32)
    policy = []
    for steps_left in range(1, horizon + 1):
        # with steps_left steps left the agent is within horizon - steps_left of the start, one step further after
        live, next_live = (num_cells, num_cells) if keep_policy else within[horizon - steps_left : horizon - steps_left + 2]
        # the key of arriving in a cell with steps_left - 1 steps to go
        np.copyto(landing[:next_live], np.where(reached[:next_live], 1, key[:next_live] + arrival[:next_live]))
        if collision == "stick":  # frozen in the cell: its reward on every step left (0 and done at the goal)
            landing[num_cells : num_cells + live] = np.where(reached[:live], 1, steps_left * arrival[:live])
        if keep_policy:
            q = landing[successors]  # (cells, 8, G)
            policy.append(q.argmax(1).astype(np.int8)[position])
            key = q.max(1)
        else:  # the max over actions one gather at a time; rows beyond `live` are stale and never read
            best, gathered = key[:live], np.empty((live, len(goal_cells)), dtype=np.int32)
            np.take(landing, successors[:live, 0], axis=0, out=best)
            for action in range(1, len(nav_env.ACTION_NAMES)):
                np.take(landing, successors[:live, action], axis=0, out=gathered)
                np.maximum(best, gathered, out=best)
    return key[position], (np.stack(policy[::-1]) if keep_policy else None)


def _check_optimum_args(obstacles: str, collision: str, horizon: int, start) -> np.ndarray:
    nav_env._check_choice("obstacle level", obstacles, tuple(nav_env.OBSTACLES))
    nav_env._check_choice("collision mode", collision, nav_env.COLLISIONS)
    if collision == "original":
        raise ValueError("the exact optimum is computed for collision 'block' and 'stick'; collision 'original' "
                         "keeps float positions off the grid")
    if not isinstance(horizon, (int, np.integer)) or not 1 <= horizon <= nav_env.MAX_EPISODE_STEPS:
        raise ValueError(f"horizon must be an integer in 1..{nav_env.MAX_EPISODE_STEPS}, got {horizon!r}")
    start_cell = np.rint(np.asarray(start, dtype=np.float64) * nav_env.CELLS_PER_UNIT).astype(np.int64)
    if start_cell.shape != (2,) or ((start_cell < 0) | (start_cell > nav_env.GRID_MAX)).any():
        raise ValueError(f"start must be a point (x, y) of the map, got {start!r}")
    return start_cell


def optimal_returns(goals, obstacles: str = "medium", collision: str = "block", horizon: int = nav_env.MAX_EPISODE_STEPS,
                    start=nav_env.START, chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """The exact optimal undiscounted return of each task (goal), and whether an optimal policy reaches it.

    goals: array-like (G, 2) in map units. Backward induction over (cell, steps left) for all goals at once
    (numpy, `chunk` goals per pass to bound memory). Returns (optimal_return (G,) float64, reaches_goal (G,)
    bool): reaches_goal is True iff some optimal policy's episode ends within the goal radius. With
    reward -distance^2, parking beside an obstacle can beat a detour round it (goal (4, 4) on medium), so
    not every goal is worth reaching. `horizon` (steps) and `start` (a point of the map) generalise the
    episode for tests; collision "block" or "stick" ("original" raises ValueError).
    """
    start_cell = _check_optimum_args(obstacles, collision, horizon, start)
    goals_array = np.asarray(goals, dtype=np.float64)
    if goals_array.ndim != 2 or goals_array.shape[1] != 2:
        raise ValueError(f"goals must have shape (G, 2), got shape {goals_array.shape}")
    goal_cells = nav_env._goals_to_cells(goals_array, len(goals_array), obstacles)
    start_index = start_cell[0] * (nav_env.GRID_MAX + 1) + start_cell[1]
    keys = [_backward_induction(goal_cells[i : i + chunk], obstacles, collision, horizon, start_cell, False)[0][
        start_index] for i in range(0, len(goal_cells), chunk)]
    key = np.concatenate(keys) if keys else np.zeros(0, dtype=np.int32)
    return (key // 2) / nav_env.CELLS_PER_UNIT**2, key % 2 == 1


def optimal_policy(goal, obstacles: str = "medium", collision: str = "block", horizon: int = nav_env.MAX_EPISODE_STEPS,
                   start=nav_env.START) -> tuple[float, bool, np.ndarray]:
    """One task's optimum as in `optimal_returns`, with an optimal policy: (optimal return, reaches_goal,
    policy int8 (horizon, 101, 101), the action to take at step t in cell (x, y)). Among optimal actions
    the policy prefers one that reaches the goal, then the lowest action index."""
    start_cell = _check_optimum_args(obstacles, collision, horizon, start)
    goal_cells = nav_env._goals_to_cells([goal], 1, obstacles)
    key, policy = _backward_induction(goal_cells, obstacles, collision, horizon, start_cell, True)
    start_key = int(key[start_cell[0] * (nav_env.GRID_MAX + 1) + start_cell[1], 0])
    return (start_key // 2) / nav_env.CELLS_PER_UNIT**2, start_key % 2 == 1, policy[..., 0].reshape(horizon, nav_env.GRID_MAX + 1, -1)


def outcome_metrics(returns, success, quadrants: np.ndarray, optimum) -> dict:
    """success_rate, success_rate_on_reachable and return_gap of a set of goals, each also _by_quadrant (Q1..Q4 as
    nav_env.QUADRANTS). returns and success (the share of a goal's episodes that reach it) are per goal (G,),
    quadrants per goal as goal_quadrants gives, optimum = (R*, reached) per goal as optimal_returns gives. The
    return gap is the mean over goals of R* minus the goal's return; None: a mean over no goal."""
    optimal_return, reachable = optimum
    every_goal = np.ones(len(quadrants), dtype=bool)
    metrics = {}
    for name, values, where in (("success_rate", np.asarray(success), every_goal),
                                ("success_rate_on_reachable", np.asarray(success), reachable),
                                ("return_gap", optimal_return - np.asarray(returns), every_goal)):
        subsets = [where] + [where & (quadrants == q) for q in range(len(nav_env.QUADRANTS))]
        means = [float(values[subset].mean()) if subset.any() else None for subset in subsets]
        metrics |= {name: means[0], f"{name}_by_quadrant": means[1:]}
    return metrics


def held_out_outcomes(summary: dict, optimum=None) -> dict:
    """The held-out figures against the exact optimum of a nav meta-learner's summary.json (or the figures its
    evaluate() returns, with "args" beside them): from test_goals, return_by_goal_after_steps and
    success_by_goal_after_steps, before adaptation (pre_adaptation_*), after the N = --inner-steps of training
    (post_adaptation_*): success_rate_by_quadrant, success_rate_on_reachable, return_gap and their _by_quadrant; per
    inner step k = 0..K: success_on_reachable_after_steps, return_gap_after_steps; and optimal_success_rate (an
    optimal policy reaches a goal or not) with its _by_quadrant, and test_optimal_returns. optimum: the test goals'
    optimal_returns, computed when not given. Raises ValueError for collision "original", which the DP does not model."""
    args, goals = summary["args"], np.asarray(summary["test_goals"], dtype=np.float64)
    if optimum is None:
        optimum = optimal_returns(goals, args["obstacles"], args["collision"])
    quadrants = goal_quadrants(goals)
    outcomes = [outcome_metrics(returns, success, quadrants, optimum) for returns, success in
                zip(summary["return_by_goal_after_steps"], summary["success_by_goal_after_steps"])]
    optimal = outcome_metrics(optimum[0], optimum[1].astype(np.float64), quadrants, optimum)
    figures = {"optimal_success_rate": optimal["success_rate"],
               "optimal_success_rate_by_quadrant": optimal["success_rate_by_quadrant"],
               "success_on_reachable_after_steps": [o["success_rate_on_reachable"] for o in outcomes],
               "return_gap_after_steps": [o["return_gap"] for o in outcomes],
               "test_optimal_returns": optimum[0].tolist()}
    for when, k in (("pre_adaptation", 0), ("post_adaptation", args["inner_steps"])):
        figures |= {f"{when}_{name}": value for name, value in outcomes[k].items() if name != "success_rate"}
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = OneLineErrorParser(
        prog="python -m benchmark.nav_optimal", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--goal", type=float, nargs=2, default=(3.5, 3.5), metavar=("X", "Y"), help="the task's goal")
    parser.add_argument("--obstacles", default="medium", help=f"obstacle level: {', '.join(nav_env.OBSTACLES)}")
    parser.add_argument("--collision", default="block", help="collision mode: block or stick")
    parser.add_argument("--summary", metavar="PATH",
                        help="instead: the held-out figures against the optimum of a maml_vpg.py / fomaml_vpg.py run")
    parser.add_argument("--speed", type=int, nargs="*", default=None, metavar="G",
                        help="instead: time optimal_returns on G uniform goals (best of 3) for each G given")
    args = parser.parse_args(argv)
    try:
        if args.summary is not None:
            try:
                with open(args.summary) as f:
                    summary = json.load(f)
                figures = held_out_outcomes(summary)
            except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
                raise ValueError(f"--summary must be the summary.json of a maml_vpg.py or fomaml_vpg.py run, got "
                                 f"{args.summary!r} ({type(error).__name__}: {error})") from None
            print(json.dumps(figures, indent=2))
            return
        if args.speed is not None:
            for num_goals in args.speed:
                goals = nav_env.sample_goals("uniform", num_goals, np.random.default_rng(0))
                optimal_returns(goals[:1], args.obstacles, args.collision)  # tables built outside the timing
                times = []
                for _ in range(3):
                    start = time.perf_counter()
                    optimal_returns(goals, args.obstacles, args.collision)
                    times.append(time.perf_counter() - start)
                print(f"{num_goals} goals: {min(times):.3f} s")
            return
        best, reaches, policy = optimal_policy(tuple(args.goal), args.obstacles, args.collision)
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
