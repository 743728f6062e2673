"""Held-out scoring of meta-trained policies on nav_env's tasks (maml_vpg.py, fomaml_vpg.py, benchmark.curriculum).

The test tasks are goals drawn with --test-seed, the same in every run. A batch of their episodes, sampled before
and after each inner step, is scored against each goal's exact optimum (nav_env.optimal_returns) overall and per
quadrant (Q1..Q4 as nav_env.QUADRANTS): success_rate, the share of episodes that end within the goal radius;
success_rate_on_reachable, the same over the goals an optimal policy reaches (with reward -distance^2, parking
beside the cross can beat the detour); return_gap, the mean over goals of R* minus the goal's mean return.
"""

import numpy as np

import nav_env


def test_tasks(args) -> tuple:
    """The held-out goals, their quadrants, and their exact optimum (R*, reached) or None for --collision original,
    whose float dynamics nav_env's DP does not model."""
    goals = nav_env.sample_goals(args.targets, args.num_test_tasks, np.random.default_rng([1, args.test_seed]))
    optimum = None if args.collision == "original" else nav_env.optimal_returns(goals, args.obstacles, args.collision)
    return goals, nav_env.goal_quadrants(goals), optimum


def outcome_metrics(batch_stats, quadrants: np.ndarray, optimum) -> dict:
    """success_rate, success_rate_on_reachable and return_gap of a batch of episodes ("reached" and "returns",
    (tasks, episodes)), each also _by_quadrant; None: a mean over no task, or a figure that needs R* without one."""
    success, known = batch_stats["reached"].mean(1), np.full(len(quadrants), optimum is not None)
    optimal_return, reachable = optimum if optimum is not None else (np.zeros(len(quadrants)), known)
    metrics, gap = {}, optimal_return - batch_stats["returns"].mean(1)
    for name, values, where in (("success_rate", success, np.ones(len(quadrants), dtype=bool)),
                                ("success_rate_on_reachable", success, reachable), ("return_gap", gap, known)):
        tasks = [where] + [where & (quadrants == q) for q in range(len(nav_env.QUADRANTS))]
        means = [float(values[w].mean()) if w.any() else None for w in tasks]
        metrics |= {name: means[0], f"{name}_by_quadrant": means[1:]}
    return metrics


def held_out_figures(stats: list, test: tuple, inner_steps: int) -> dict:
    """summary.json's figures of the test tasks from the statistics of their episodes after 0..K inner steps:
    before adaptation (pre_adaptation_*), after the N = inner_steps of training (post_adaptation_*), per step."""
    (goals, quadrants, optimum), n = test, inner_steps
    returns, distances = [float(s["returns"].mean()) for s in stats], [float(s["distances"].mean()) for s in stats]
    outcomes = [outcome_metrics(s, quadrants, optimum) for s in stats]
    optimal = outcome_metrics({"reached": optimum[1][:, None], "returns": optimum[0][:, None]}, quadrants, optimum) if (
        optimum is not None) else {"success_rate": None, "success_rate_by_quadrant": [None] * len(nav_env.QUADRANTS)}
    figures = {}
    for when, k in (("pre_adaptation", 0), ("post_adaptation", n)):
        figures |= {f"{when}_return": returns[k], f"{when}_distance": distances[k]}
    figures |= {"adaptation_gain": returns[n] - returns[0], "return_after_steps": returns,
                "distance_after_steps": distances}
    for when, k in (("pre_adaptation", 0), ("post_adaptation", n)):
        figures |= {f"{when}_{name}": value for name, value in outcomes[k].items()}
    return figures | {
        "optimal_success_rate": optimal["success_rate"],  # an optimal policy reaches a goal or not: 1 or 0 per task
        "optimal_success_rate_by_quadrant": optimal["success_rate_by_quadrant"],
        "success_after_steps": [o["success_rate"] for o in outcomes],
        "success_on_reachable_after_steps": [o["success_rate_on_reachable"] for o in outcomes],
        "return_gap_after_steps": [o["return_gap"] for o in outcomes],
        "test_optimal_returns": None if optimum is None else optimum[0].tolist(), "test_goals": goals.tolist()}


def trajectory_image(stats: list, goals: np.ndarray, episodes_per_task: int, obstacles: str) -> np.ndarray:
    """eval/trajectories: the first episode of the first (up to) 4 test tasks, before adaptation (left panel) and
    after the last inner step (right); a task's trajectory and goal share a colour."""
    shown, steps = min(4, len(goals)), len(stats) - 1
    tasks = f"test tasks 1-{shown}" if shown > 1 else "test task 1"
    panels = []
    for title, batch_stats in ((f"{tasks}, episode 1: before adaptation", stats[0]),
                               (f"{tasks}, episode 1: after {steps} inner step{'s' * (steps != 1)}", stats[-1])):
        first_episodes = [batch_stats["positions"][:, task * episodes_per_task] for task in range(shown)]
        panels.append(nav_env.render_trajectories(first_episodes, goals[:shown], obstacles=obstacles, size=320,
                                                  title=title, legend=True))
    return np.concatenate(panels, axis=1)


def log_held_out(writer, iteration: int, stats: list, test: tuple, args) -> dict:
    """The figures of held_out_figures, their scalars as eval/ TensorBoard tags (a quadrant's as eval/<name>_q1.._q4),
    the eval/trajectories image, and one console line of the figures before and after the N inner steps."""
    figures, n = held_out_figures(stats, test, args.inner_steps), args.inner_steps
    for key, value in figures.items():
        for q, v in enumerate(value, 1) if key.endswith("_by_quadrant") else [(0, value)]:
            if isinstance(v, float):
                writer.add_scalar(f"eval/{key.removesuffix('_by_quadrant')}" + (f"_q{q}" if q else ""), v, iteration)
    image = trajectory_image(stats[: n + 1], test[0], args.episodes_per_task, args.obstacles)
    writer.add_image("eval/trajectories", image, iteration, dataformats="HWC")
    returns, distances = figures["return_after_steps"], figures["distance_after_steps"]
    success = figures["success_after_steps"]
    print(f"held-out, iteration {iteration}, before -> after {n} inner step{'s' * (n != 1)}: return {returns[0]:.1f} -> "
          f"{returns[n]:.1f}, distance {distances[0]:.2f} -> {distances[n]:.2f}, success {success[0]:.2f} -> "
          f"{success[n]:.2f}", flush=True)
    return figures
