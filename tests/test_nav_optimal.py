"""Tests of benchmark.nav_optimal: the exact optimum of the navigation tasks against brute force over every action
sequence played in nav_env itself, its policy replayed in the env, and the held-out figures a meta-learner's
summary.json is scored by, against values by hand."""

import numpy as np
import pytest

import nav_env
from benchmark.nav_optimal import goal_quadrants, held_out_outcomes, optimal_policy, optimal_returns, outcome_metrics
from nav_env import NavigationEnv, NavigationVectorEnv, sample_goals


def brute_force_optimum(goal, obstacles, collision, horizon, start=nav_env.START):
    """Every one of the 8^horizon action sequences played in the env itself: (best return, does some best
    sequence end within the goal radius)."""
    sequences = np.stack(np.meshgrid(*[np.arange(8)] * horizon, indexing="ij"), -1).reshape(-1, horizon)
    envs = NavigationVectorEnv(len(sequences), obstacles=obstacles, collision=collision, autoreset_mode="Disabled")
    envs.reset(options={"goals": np.tile(goal, (len(sequences), 1))})
    envs._batch.position[:] = np.rint(np.asarray(start) * 10)  # the env has no start option: move its agents there
    returns = np.zeros(len(sequences))
    for t in range(horizon):
        _, rewards, terminated, _, _ = envs.step(sequences[:, t])
        returns += rewards
    best = returns.max()
    return best, bool(terminated[np.isclose(returns, best, rtol=0, atol=1e-9)].any())


@pytest.mark.parametrize("collision", ["block", "stick"])
@pytest.mark.parametrize(
    "goal, obstacles, horizon, start",
    [
        ((9.6, 9.6), "none", 1, nav_env.START),  # out of reach in one step
        ((9.6, 9.6), "none", 2, nav_env.START),  # two diagonal steps end at squared distance 0.02
        ((9.9, 9.3), "medium", 4, nav_env.START),  # along the wall at x = 10
        ((10.0, 10.0), "medium", 3, nav_env.START),  # in the corner: moves into the walls are cancelled
        ((4.8, 5.3), "medium", 4, (5.2, 5.3)),  # across the cross's vertical arm: blocked, or stuck to it
        ((5.3, 4.6), "medium", 4, (5.3, 5.2)),  # across the horizontal arm
        ((4.6, 4.6), "hard", 4, (5.0, 5.0)),  # the hard level's centre, walled on 4 sides with gaps at the corners
    ],
)
def test_optimal_returns_equal_brute_force_over_all_action_sequences(goal, obstacles, horizon, start, collision):
    best, reaches = brute_force_optimum(goal, obstacles, collision, horizon, start)
    value, reached = optimal_returns([goal], obstacles, collision, horizon=horizon, start=start)
    assert value[0] == pytest.approx(best, abs=1e-9) and reached[0] == reaches
    single_value, single_reached, policy = optimal_policy(goal, obstacles, collision, horizon, start)
    assert single_value == pytest.approx(best, abs=1e-9) and single_reached == reaches
    assert policy.shape == (horizon, 101, 101)


def test_the_brute_force_by_hand():
    assert brute_force_optimum((9.6, 9.6), "none", "block", 1) == (pytest.approx(-0.08), False)  # at (9.8, 9.8)
    assert brute_force_optimum((9.6, 9.6), "none", "block", 2) == (pytest.approx(-0.08), True)  # then 0 at (9.7, 9.7)
    # beside the vertical arm, the goal 0.2 across it: pushing into the arm (block) or sticking to it (stick)
    # keeps the squared distance 0.04 on every step
    assert brute_force_optimum((4.9, 5.5), "medium", "block", 3, (5.1, 5.5)) == (pytest.approx(-0.12), False)
    assert brute_force_optimum((4.9, 5.5), "medium", "stick", 3, (5.1, 5.5)) == (pytest.approx(-0.12), False)


def replay_policy(policy, goal, obstacles: str, collision: str = "block"):
    """Play a (steps, 101, 101) policy in NavigationEnv: (return, terminated at the goal, steps taken)."""
    env = NavigationEnv(obstacles=obstacles, collision=collision)
    env.reset(options={"goal": goal})
    total, terminated = 0.0, False
    for t in range(100):
        cell = np.rint(env.position * 10).astype(int)
        _, reward, terminated, truncated, _ = env.step(int(policy[t, cell[0], cell[1]]))
        total += reward
        if terminated or truncated:
            break
    return total, terminated, t + 1


def test_optimal_policy_replayed_in_the_env_earns_its_optimal_return_behind_the_cross():
    value, reaches, policy = optimal_policy((4.5, 1.0), "medium")
    assert value == pytest.approx(-2913.28) and reaches
    total, terminated, steps = replay_policy(policy, (4.5, 1.0), "medium")
    assert terminated and steps == 88 and total == pytest.approx(-2913.28)
    # parking beside the cross beats the detour to (4, 4)
    assert optimal_returns([(4.0, 4.0)], "medium")[0][0] == pytest.approx(-1452.72)
    assert not optimal_returns([(4.0, 4.0)], "medium")[1][0]


@pytest.mark.parametrize("collision", ["block", "stick"])
def test_batched_optimum_equals_one_goal_at_a_time_and_the_replayed_policy(collision):
    goals = sample_goals("random", 7, np.random.default_rng(3))
    values, reached = optimal_returns(goals, "medium", collision, chunk=3)  # chunks of 3, 3 and 1
    for goal, value, reach in zip(goals, values, reached):
        single_value, single_reach, policy = optimal_policy(goal, "medium", collision)
        assert (single_value, single_reach) == (value, reach)
        total, terminated, _ = replay_policy(policy, goal, "medium", collision)
        assert total == pytest.approx(value, abs=1e-6) and terminated == reach


def test_no_obstacles_every_goal_is_reached_and_the_optimum_is_at_most_zero():
    goals = sample_goals("uniform", 8, np.random.default_rng(0))
    values, reached = optimal_returns(goals, "none")
    assert reached.all() and (values <= 0).all()
    assert optimal_returns(np.zeros((0, 2)), "none")[0].shape == (0,)


def test_goal_quadrants_follow_the_quadrant_table():
    goals = [(9.0, 9.0), (1.0, 9.0), (1.0, 1.0), (9.0, 1.0), (5.0, 5.0), (4.9, 5.0), (5.0, 4.9)]
    assert goal_quadrants(goals).tolist() == [0, 1, 2, 3, 0, 1, 3]
    for q, (x0, x1, y0, y1) in enumerate(nav_env.QUADRANTS):  # the quadrant table's interiors agree
        assert goal_quadrants([((x0 + x1) / 2, (y0 + y1) / 2)])[0] == q


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: optimal_returns([(1.0, 1.0)], collision="original"), r"'block' and 'stick'"),
        (lambda: optimal_returns([(5.0, 5.0)], "medium"), r"lies on an obstacle"),
        (lambda: optimal_returns([1.0, 1.0]), r"shape \(G, 2\)"),
        (lambda: optimal_returns([(1.0, 1.0)], horizon=0), r"horizon must be an integer in 1..100"),
        (lambda: optimal_policy((1.0, 1.0), start=(11.0, 1.0)), r"start must be a point"),
    ],
)
def test_optimum_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_outcome_metrics_by_hand():
    # 3 goals: a Q1 goal reached in every episode, a Q1 goal in half of them, a Q3 goal never
    success, returns = np.array([1.0, 0.5, 0.0]), np.array([-20.0, -100.0, -500.0])
    quadrants = np.array([0, 0, 2])
    optimum = (np.array([-10.0, -40.0, -300.0]), np.array([True, True, False]))
    metrics = outcome_metrics(returns, success, quadrants, optimum)
    assert metrics["success_rate"] == pytest.approx(0.5)  # (1 + 0.5 + 0) / 3
    assert metrics["success_rate_by_quadrant"] == [pytest.approx(0.75), None, 0.0, None]
    assert metrics["success_rate_on_reachable"] == pytest.approx(0.75)  # the third goal is not worth reaching
    assert metrics["success_rate_on_reachable_by_quadrant"] == [pytest.approx(0.75), None, None, None]
    # gaps: -10 - (-20) = 10, -40 - (-100) = 60, -300 - (-500) = 200
    assert metrics["return_gap"] == pytest.approx(90.0)
    assert metrics["return_gap_by_quadrant"] == [pytest.approx(35.0), None, pytest.approx(200.0), None]


def test_held_out_outcomes_of_a_summary_by_hand():
    # a summary as maml_vpg.py writes it: 3 test goals, after 0 and 1 inner steps (N = 1)
    goals = [[8.0, 8.0], [2.0, 8.0], [2.0, 2.0]]
    optimum = (np.array([-10.0, -40.0, -300.0]), np.array([True, True, False]))
    summary = {"args": {"obstacles": "medium", "collision": "block", "inner_steps": 1}, "test_goals": goals,
               "return_by_goal_after_steps": [[-20.0, -100.0, -500.0], [-10.0, -40.0, -310.0]],
               "success_by_goal_after_steps": [[1.0, 0.5, 0.0], [1.0, 1.0, 0.0]]}
    figures = held_out_outcomes(summary, optimum)
    assert figures["optimal_success_rate"] == pytest.approx(2 / 3)
    assert figures["optimal_success_rate_by_quadrant"] == [1.0, 1.0, 0.0, None]  # (8, 8) is Q1, (2, 8) Q2, (2, 2) Q3
    assert figures["pre_adaptation_return_gap"] == pytest.approx(90.0)
    assert figures["post_adaptation_return_gap"] == pytest.approx(10 / 3)
    assert figures["return_gap_after_steps"] == [pytest.approx(90.0), pytest.approx(10 / 3)]
    assert figures["post_adaptation_success_rate_on_reachable"] == 1.0
    assert figures["success_on_reachable_after_steps"] == [pytest.approx(0.75), 1.0]
    assert figures["post_adaptation_success_rate_by_quadrant"] == [1.0, 1.0, 0.0, None]
    assert "post_adaptation_success_rate" not in figures  # the script's own figure stays the one in the summary
    assert figures["test_optimal_returns"] == [-10.0, -40.0, -300.0]
    # without a given optimum it is solved from the summary's flags: the same as optimal_returns of the goals
    solved = held_out_outcomes(summary)
    assert solved["test_optimal_returns"] == pytest.approx(optimal_returns(goals, "medium", "block")[0].tolist())
    with pytest.raises(ValueError, match="'block' and 'stick'"):
        held_out_outcomes(summary | {"args": summary["args"] | {"collision": "original"}})
