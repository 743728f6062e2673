"""maml_trpo.py's point-nav runs scored with the sampler of the paper's test scripts (rllab's), beside their own score.

maml_trpo.py's evaluation runs 40 episodes of 100 steps per task, each counted once; an episode that reaches its goal
early stops there (masked). rllab samples a budget of 4,000 env steps per task instead: an env whose episode ends
starts a new one, and the average return is over every episode in the budget, the last ones cut at the budget. When
adapted policies reach their goals early, that average holds more (short, high-return) episodes. This script replays
the paper's protocol on each run's final parameters (its checkpoint.pt): 40 env slots x 100 steps per task with
autoreset, the inner steps on those samples (return-to-go within each episode, the linear baseline's time feature
counted from each episode's start), step sizes inner_lr then inner_lr / 2, the same 40 held-out goals.

    python -m benchmark.trpo_step_budget runs/<run> [runs/<run> ...]
"""

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch.func import functional_call, vmap

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import maml_trpo  # noqa: E402


def budget_batch(env, model, task_params, tasks, slots: int, horizon: int, see_task: bool, gamma: float):
    """slots x horizon env steps per task with autoreset: the batch for an inner step and the mean return over
    every episode in the budget (per task, then over tasks)."""
    num_envs = len(tasks) * slots
    env_tasks = np.repeat(tasks, slots, axis=0)
    positions = env.reset(env_tasks, None)
    obs = torch.zeros((horizon, num_envs, 2 + 2 * see_task))
    actions = torch.zeros((horizon, num_envs, 2))
    rewards, since_start = np.zeros((horizon, num_envs)), np.zeros((horizon, num_envs))
    ends = np.zeros((horizon, num_envs), dtype=bool)  # ends[t]: the episode ended with step t (or the budget did)
    steps_in_episode = np.zeros(num_envs)
    for t in range(horizon):
        obs[t] = torch.from_numpy(np.concatenate([positions, env_tasks], 1) if see_task else positions)
        since_start[t] = steps_in_episode
        with torch.no_grad():
            mean, log_std = vmap(functional_call, in_dims=(None, 0, 0))(model, task_params,
                                                                      (obs[t].view(len(tasks), slots, -1),))
        actions[t] = (mean + log_std.exp() * torch.randn_like(mean)).flatten(0, 1)
        positions, rewards[t], done = env.step(actions[t].numpy().astype(np.float64))
        ends[t] = done | (t == horizon - 1)
        env.positions[done] = 0.0  # a new episode from the start
        positions = env.positions.copy()
        steps_in_episode = np.where(done, 0, steps_in_episode + 1)
    returns_to_go, running = np.zeros((horizon, num_envs)), np.zeros(num_envs)
    episode_returns, running_sum = [[] for _ in tasks], np.zeros(num_envs)
    for t in reversed(range(horizon)):
        running = rewards[t] + gamma * running * ~ends[t]
        returns_to_go[t] = running
    for t in range(horizon):
        running_sum += rewards[t]
        for env_index in np.flatnonzero(ends[t]):
            episode_returns[env_index // slots].append(running_sum[env_index])
        running_sum[ends[t]] = 0.0
    clipped = np.clip(obs.double().numpy(), -10, 10)
    time_feature = since_start[..., None] / 100
    features = np.concatenate([clipped, clipped**2, time_feature, time_feature**2, time_feature**3,
                               np.ones_like(time_feature)], axis=-1)
    advantages = np.zeros((horizon, num_envs))
    for task in range(len(tasks)):  # rllab's LinearFeatureBaseline per task, then center_adv
        columns = slice(task * slots, (task + 1) * slots)
        task_features = features[:, columns].reshape(-1, features.shape[-1])
        task_returns = returns_to_go[:, columns].reshape(-1)
        gram = task_features.T @ task_features + 1e-5 * np.eye(task_features.shape[1])
        raw = task_returns - task_features @ np.linalg.solve(gram, task_features.T @ task_returns)
        advantages[:, columns] = ((raw - raw.mean()) / (raw.std() + 1e-8)).reshape(horizon, slots)

    def by_task(x):  # (T, tasks * slots, ...) -> (tasks, slots * T, ...)
        x = x.reshape((horizon, len(tasks), slots) + x.shape[2:]).movedim(0, 2)
        return x.reshape((len(tasks), slots * horizon) + x.shape[3:])
    batch = {"obs": by_task(obs), "actions": by_task(actions),
             "advantages": by_task(torch.from_numpy(advantages).float()), "mask": torch.ones(len(tasks), slots * horizon)}
    return batch, float(np.mean([np.mean(task_returns) for task_returns in episode_returns]))


def step_budget_returns(run: Path, seed: int) -> list:
    checkpoint = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)
    args = maml_trpo.Args(**checkpoint["maml_trpo.py"])
    assert args.env == "point-nav", "the step budget matters only where episodes end early: point-nav"
    env = maml_trpo.PointNav()
    model = maml_trpo.Policy(env.obs_dim + env.task_dim * args.see_task, env.action_dim, args.hidden_size)
    model.load_state_dict(checkpoint["model"])
    torch.manual_seed(seed)
    tasks = env.sample_tasks(args.num_test_tasks, np.random.default_rng(0))  # maml_trpo.py's held-out goals
    task_params = {name: p.detach().expand((len(tasks),) + p.shape) for name, p in model.named_parameters()}
    inner_lrs = [args.inner_lr] + [args.inner_lr / 2] * (args.eval_inner_steps - 1)
    returns = []
    for step in range(args.eval_inner_steps + 1):
        batch, mean_return = budget_batch(env, model, task_params, tasks, 4000 // args.horizon, args.horizon,
                                          args.see_task, args.gamma)
        returns.append(mean_return)
        if step < args.eval_inner_steps:
            task_params = vmap(maml_trpo.inner_update, in_dims=(None, 0, 0, None))(model, task_params, batch,
                                                                                    inner_lrs[step])
    return returns


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders of maml_trpo.py --env point-nav")
    parser.add_argument("--seed", type=int, default=0, help="seed of the actions sampled here")
    cli = parser.parse_args()
    torch.set_num_threads(1)
    for run in cli.runs:
        own = json.loads((run / "summary.json").read_text())["return_after_steps"]
        budget = step_budget_returns(run, cli.seed)
        print(f"{run.name}: maml_trpo.py's evaluation {' -> '.join(f'{x:.1f}' for x in own)}; "
              f"rllab's 4,000-step budget {' -> '.join(f'{x:.1f}' for x in budget)}")
