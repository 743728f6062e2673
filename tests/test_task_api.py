"""The meta-RL task convention on both envs (learn2learn's MetaEnv, garage, RLlib's TaskSettableEnv):
`sample_tasks(n)`, `set_task(task)`, `get_task()`. Checked against today's `reset(options=...)` path,
for persistence across resets, and by a small MAML-style loop written only against the API."""

import numpy as np
import pytest

import alchemy_env
import nav_env


def rollout(env, actions):
    """Observations and rewards of one single-env episode prefix, from a reset already done."""
    observations, rewards = [], []
    for action in actions:
        obs, reward, terminated, truncated, _ = env.step(action)
        observations.append(obs)
        rewards.append(reward)
        if terminated or truncated:
            break
    return np.array(observations), np.array(rewards)


# --- navigation ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("collision", nav_env.COLLISIONS)
def test_nav_set_task_then_reset_is_the_options_path(collision):
    actions = np.random.default_rng(0).integers(0, 8, 100).tolist()
    task = {"goal": np.array([2.3, 1.7])}
    by_task = nav_env.NavigationEnv(obstacles="hard", collision=collision)
    by_task.set_task(task)
    first_obs, _ = by_task.reset(seed=4)
    by_options = nav_env.NavigationEnv(obstacles="hard", collision=collision)
    expected_obs, _ = by_options.reset(seed=4, options={"goal": (2.3, 1.7)})
    assert np.array_equal(first_obs, expected_obs)
    for a, b in zip(rollout(by_task, actions), rollout(by_options, actions)):
        assert np.array_equal(a, b)


def test_nav_a_set_task_stays_across_resets_until_set_again():
    env = nav_env.NavigationEnv(targets="random")
    env.reset(seed=0)
    drawn = [env.reset()[0][2:] for _ in range(3)]
    assert len({tuple(goal) for goal in drawn}) == 3  # without a task, every reset draws a goal
    tasks = env.sample_tasks(2)
    env.set_task(tasks[0])
    for seed in (None, 1, None):
        obs, _ = env.reset(seed=seed)
        assert np.allclose(obs[2:], tasks[0]["goal"]) and np.array_equal(env.get_task()["goal"], tasks[0]["goal"])
    env.set_task(tasks[1])
    assert np.allclose(env.reset()[0][2:], tasks[1]["goal"])


def test_nav_sample_tasks_follow_the_target_distribution_and_the_seed():
    env = nav_env.NavigationEnv(targets="uniform")
    env.reset(seed=3)
    tasks = env.sample_tasks(8)
    goals = np.array([task["goal"] for task in tasks])
    # the single env's first reset drew task 0 (Q1), so these continue the cycle at Q2, Q3, Q4, Q1, ...
    quadrant_of_task = [(1 + i) % 4 for i in range(8)]
    for goal, q in zip(goals, quadrant_of_task):
        x_low, x_high, y_low, y_high = nav_env.QUADRANTS[q]
        assert x_low <= goal[0] <= x_high and y_low <= goal[1] <= y_high
    again = nav_env.NavigationEnv(targets="uniform")
    again.reset(seed=3)
    assert np.array_equal(goals, np.array([task["goal"] for task in again.sample_tasks(8)]))


def test_nav_vector_env_takes_one_task_per_env_or_one_for_all():
    envs = nav_env.NavigationVectorEnv(3, obstacles="none")
    tasks = envs.sample_tasks(3)
    envs.set_task(tasks)
    obs, _ = envs.reset(seed=0)
    assert np.allclose(obs[:, 2:], [task["goal"] for task in tasks])
    assert all(np.array_equal(a["goal"], b["goal"]) for a, b in zip(envs.get_task(), tasks))
    envs.set_task(tasks[1])
    obs, _ = envs.reset()
    assert np.allclose(obs[:, 2:], [tasks[1]["goal"]] * 3)
    by_options = nav_env.NavigationVectorEnv(3, obstacles="none")
    expected, _ = by_options.reset(seed=0, options={"goals": [tasks[1]["goal"]] * 3})
    assert np.array_equal(obs, expected)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: nav_env.NavigationEnv().set_task((1.0, 2.0)), r"a navigation task is a dict \{'goal': \(x, y\)\}"),
        (lambda: nav_env.NavigationEnv().set_task({"goal": (5.0, 5.0)}), r"goal \(5, 5\) lies on an obstacle"),
        (lambda: nav_env.NavigationVectorEnv(3).set_task([{"goal": (1.0, 1.0)}] * 2), r"one task or 3 tasks"),
        (lambda: alchemy_env.SymbolicAlchemyEnv().set_task({"potion_dim_map": [0, 1, 2]}), r"an Alchemy task is a dict"),
        (lambda: alchemy_env.SymbolicAlchemyVectorEnv(2, new_chemistry_each_episode=True).set_task(
            alchemy_env.SymbolicAlchemyEnv().sample_tasks(1)[0]), r"new_chemistry_each_episode=True"),
    ],
)
def test_bad_tasks_raise_value_error_naming_the_value(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_a_maml_style_loop_through_the_task_api_adapts_on_one_task_after_another():
    """MAML-style adaptation written only against set_task / reset / step:
    a state-independent softmax policy over the 8 moves, one REINFORCE step per task from shared
    meta-parameters. The goal is hidden (see_goal=False), so only the set task can steer the update."""
    num_envs, step_size = 256, 1.5
    envs = nav_env.NavigationVectorEnv(num_envs, obstacles="none", see_goal=False,
                                       autoreset_mode="Disabled")
    rng = np.random.default_rng(0)
    envs.reset(seed=0)

    def episodes(logits):
        """Mean return and the REINFORCE gradient of the mean return w.r.t. the logits."""
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        scores, returns = np.zeros((num_envs, 8)), np.zeros(num_envs)
        envs.reset()  # the set tasks stay set
        for _ in range(nav_env.MAX_EPISODE_STEPS):
            actions = rng.choice(8, size=num_envs, p=probs)
            _, rewards, _, _, _ = envs.step(actions)
            scores += np.eye(8)[actions] - probs
            returns += rewards
        advantages = (returns - returns.mean()) / (returns.std() + 1e-8)
        return returns.mean(), (scores * advantages[:, None]).mean(0)

    meta_logits = np.zeros(8)
    # three goals in three directions from the start (9.9, 9.9): west, south-west, south
    tasks = [{"goal": np.array(goal)} for goal in [(1.0, 9.9), (1.0, 1.0), (9.9, 1.0)]]
    before, adapted = [], []
    for task in tasks:  # adapt on one task after another
        envs.set_task(task)
        mean_return, gradient = episodes(meta_logits)
        before.append(mean_return)
        adapted.append(meta_logits + step_size * gradient / np.linalg.norm(gradient))  # a normalised step
    # returns[i, j]: the policy adapted on task j, on task i
    returns = np.zeros((3, 3))
    for i, task in enumerate(tasks):
        envs.set_task(task)
        returns[i] = [episodes(logits)[0] for logits in adapted]
    assert (np.diag(returns) > np.array(before)).all()  # adaptation helps on every task
    assert (np.diag(returns)[:, None] >= returns).all()  # and each task is served best by its own adaptation


# --- Alchemy ---------------------------------------------------------------------------------------------


def test_alchemy_set_task_then_reset_is_the_options_path_and_stays_set():
    actions = np.random.default_rng(1).integers(0, alchemy_env.NUM_ACTIONS, alchemy_env.EPISODE_STEPS).tolist()
    env = alchemy_env.SymbolicAlchemyEnv()
    task = env.sample_tasks(3)[2]
    env.set_task(task)
    obs, _ = env.reset(seed=7)
    reference = alchemy_env.SymbolicAlchemyEnv()
    expected, _ = reference.reset(seed=7, options={"chemistry": task["chemistry"]})
    assert np.array_equal(obs, expected)
    for a, b in zip(rollout(env, actions), rollout(reference, actions)):
        assert np.array_equal(a, b)
    for seed in (None, 8):  # a seed draws new items, not a new chemistry, while a task is set
        env.reset(seed=seed)
        got = env.get_task()["chemistry"]
        assert all(np.array_equal(np.asarray(got[key]), np.asarray(task["chemistry"][key])) for key in got)
        assert all(np.array_equal(np.asarray(env.chemistry[key]), np.asarray(task["chemistry"][key])) for key in got)


def test_alchemy_vector_env_takes_one_task_per_env():
    envs = alchemy_env.SymbolicAlchemyVectorEnv(3)
    tasks = envs.sample_tasks(3)
    envs.set_task(tasks)
    obs, _ = envs.reset(seed=2)
    chemistries = envs.chemistries
    for i, task in enumerate(tasks):
        assert all(np.array_equal(chemistries[key][i], np.asarray(task["chemistry"][key])) for key in chemistries)
    stacked = {key: np.stack([np.asarray(task["chemistry"][key]) for task in tasks]) for key in chemistries}
    expected, _ = alchemy_env.SymbolicAlchemyVectorEnv(3).reset(seed=2, options={"chemistries": stacked})
    assert np.array_equal(obs, expected)
