"""maml_trpo.py's point-nav runs scored with the sampler of the paper's test scripts (rllab's), beside their own score.

maml_trpo.py's evaluation runs 40 episodes of 100 steps per task, each counted once; an episode that reaches its goal
early stops there (masked). rllab's VectorizedSampler (cbfinn/maml_rl, sandbox/rocky/tf/samplers/) collects a budget
of 4,000 env steps per task instead: 40 envs, each starting a new episode when one ends, whole episodes kept in the
order they end until they hold 4,000 steps, the ones still running dropped; the average return is over the kept
episodes. When adapted policies reach their goals early, that average holds more (short, high-return) episodes.
This script replays that sampler on each run's final parameters (its checkpoint.pt), with the inner steps on its
samples (return-to-go within each episode, the linear baseline's time feature counted from each episode's start),
step sizes inner_lr then inner_lr / 2, and maml_trpo.py's 40 held-out goals.

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
    """rllab's VectorizedSampler for each task: `slots` envs with autoreset, episodes of at most `horizon` steps,
    whole episodes collected in the order they end until they hold 4,000 steps (slots x horizon); an episode still
    running then is dropped. Returns the batch for an inner step (steps outside the kept episodes masked) and the
    mean return over the kept episodes (per task, then over tasks)."""
    budget, run_length = slots * horizon, 2 * horizon  # in 2 horizons every slot ends at least 2 episodes: enough
    num_envs = len(tasks) * slots
    env_tasks = np.repeat(tasks, slots, axis=0)
    positions = env.reset(env_tasks, None)
    obs = torch.zeros((run_length, num_envs, 2 + 2 * see_task))
    actions = torch.zeros((run_length, num_envs, 2))
    rewards, since_start = np.zeros((run_length, num_envs)), np.zeros((run_length, num_envs))
    ends = np.zeros((run_length, num_envs), dtype=bool)  # ends[t]: an episode ended with step t
    steps_in_episode = np.zeros(num_envs)
    for t in range(run_length):
        obs[t] = torch.from_numpy(np.concatenate([positions, env_tasks], 1) if see_task else positions)
        since_start[t] = steps_in_episode
        with torch.no_grad():
            mean, log_std = vmap(functional_call, in_dims=(None, 0, 0))(model, task_params,
                                                                      (obs[t].view(len(tasks), slots, -1),))
        actions[t] = (mean + log_std.exp() * torch.randn_like(mean)).flatten(0, 1)
        _, rewards[t], done = env.step(actions[t].numpy().astype(np.float64))
        ends[t] = done | (steps_in_episode + 1 == horizon)
        env.positions[ends[t]] = 0.0  # a new episode from the start
        positions = env.positions.copy()
        steps_in_episode = np.where(ends[t], 0, steps_in_episode + 1)
    kept = np.zeros((run_length, num_envs), dtype=bool)
    episode_returns = [[] for _ in tasks]
    collected = np.zeros(len(tasks))
    for t in range(run_length):  # episodes in the order they end, until each task's budget is full
        for env_index in np.flatnonzero(ends[t]):
            task, length = env_index // slots, int(since_start[t, env_index]) + 1
            if collected[task] < budget:
                kept[t - length + 1: t + 1, env_index] = True
                episode_returns[task].append(rewards[t - length + 1: t + 1, env_index].sum())
                collected[task] += length
    returns_to_go, running = np.zeros((run_length, num_envs)), np.zeros(num_envs)
    for t in reversed(range(run_length)):
        running = rewards[t] + gamma * running * ~ends[t]
        returns_to_go[t] = running
    clipped = np.clip(obs.double().numpy(), -10, 10)
    time_feature = since_start[..., None] / 100
    features = np.concatenate([clipped, clipped**2, time_feature, time_feature**2, time_feature**3,
                               np.ones_like(time_feature)], axis=-1)
    advantages = np.zeros((run_length, num_envs))
    for task in range(len(tasks)):  # rllab's LinearFeatureBaseline per task on the kept steps, then center_adv
        columns = slice(task * slots, (task + 1) * slots)
        rows = kept[:, columns]
        task_features, task_returns = features[:, columns][rows], returns_to_go[:, columns][rows]
        gram = task_features.T @ task_features + 1e-5 * np.eye(task_features.shape[1])
        raw = task_returns - task_features @ np.linalg.solve(gram, task_features.T @ task_returns)
        task_advantages = np.zeros((run_length, slots))
        task_advantages[rows] = (raw - raw.mean()) / (raw.std() + 1e-8)
        advantages[:, columns] = task_advantages

    def by_task(x):  # (T, tasks * slots, ...) -> (tasks, slots * T, ...)
        x = x.reshape((run_length, len(tasks), slots) + x.shape[2:]).movedim(0, 2)
        return x.reshape((len(tasks), slots * run_length) + x.shape[3:])
    batch = {"obs": by_task(obs), "actions": by_task(actions), "advantages": by_task(torch.from_numpy(advantages)),
             "mask": by_task(torch.from_numpy(kept))}
    batch = {key: value.float() for key, value in batch.items()}
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
