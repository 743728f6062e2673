"""The training loops of maml_vpg.py, fomaml_vpg.py and alchemy_maml.py as they run: one meta-iteration of each
script's __main__ against the meta-gradient recomputed from what its envs saw, each script's rollout against a
recomputation of its batch, its sampled actions against the policy's probabilities, and nav meta-training against
the initial policy.

The scripts run in this process (runpy), so the envs they build are nav_env's and alchemy_env's own classes, whose
reset and step are wrapped here to record every observation, action, reward and episode end, and torch.optim's
global step hooks record the parameters and their .grad at the optimizer's step. Nothing of a script is copied."""

import copy
import json
import random
import runpy
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import tyro
from torch.func import functional_call
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from meta_gradient_oracles import classic_maml_meta_gradient

import alchemy_env
import alchemy_maml
import fomaml_vpg
import maml_vpg
import nav_env

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
MODULES = {"maml_vpg.py": maml_vpg, "fomaml_vpg.py": fomaml_vpg, "alchemy_maml.py": alchemy_maml}


# --- what a run did: its envs' steps, its optimizer's steps --------------------------------------------------


class EnvRecorder:
    """Every reset and step of every instance of a vector env class (patched on the class, so the envs a script's
    __main__ builds are recorded too): per env, a list of rollouts, each a reset's options and observation followed
    by each step's actions and what it returned."""

    def __init__(self, monkeypatch, env_class):
        self.envs = {}  # id(env) -> (num_envs, rollouts)
        reset, step = env_class.reset, env_class.step

        def recording_reset(env, *args, **kwargs):
            obs, info = reset(env, *args, **kwargs)
            rollouts = self.envs.setdefault(id(env), (env.num_envs, []))[1]
            rollouts.append({"options": copy.deepcopy(kwargs.get("options")), "obs": [np.array(obs)], "actions": [],
                             "rewards": [], "done": []})
            return obs, info

        def recording_step(env, actions):
            result = step(env, actions)
            obs, rewards, terminated, truncated, _ = result
            rollout = self.envs[id(env)][1][-1]
            for key, value in (("actions", actions), ("obs", obs), ("rewards", rewards),
                               ("done", np.logical_or(terminated, truncated))):
                rollout[key].append(np.array(value))
            return result

        monkeypatch.setattr(env_class, "reset", recording_reset)
        monkeypatch.setattr(env_class, "step", recording_step)

    def rollouts(self, num_envs: int) -> list:
        """The rollouts that stepped, of the one env with num_envs envs."""
        (rollouts,) = [rollouts for size, rollouts in self.envs.values() if size == num_envs]
        return [rollout for rollout in rollouts if rollout["actions"]]


class OptimizerSteps:
    """Every optimizer step while active, through torch.optim's global hooks: its class, its (first) parameter group's
    hyperparameters, and each parameter before and after the step with its .grad at the step (in the order of the
    optimizer's params)."""

    def __enter__(self):
        self.steps = []

        def before(optimizer, args, kwargs):
            params = [p for group in optimizer.param_groups for p in group["params"]]
            self.steps.append({"optimizer": type(optimizer), "params": params,
                               "hyperparameters": {k: v for k, v in optimizer.param_groups[0].items() if k != "params"},
                               "before": [p.detach().clone() for p in params],
                               "grad": [p.grad.detach().clone() for p in params]})

        def after(optimizer, args, kwargs):
            self.steps[-1]["after"] = [p.detach().clone() for p in self.steps[-1]["params"]]

        self.handles = [register_optimizer_step_pre_hook(before), register_optimizer_step_post_hook(after)]
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()


def run_main(script: str, flags: list, cwd: Path, monkeypatch):
    """The script's __main__ in this process, in cwd; torch's thread count and the global RNGs, which the script
    sets, are put back afterwards."""
    threads, states = torch.get_num_threads(), (random.getstate(), np.random.get_state(), torch.get_rng_state())
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", [script, *flags])
    try:
        runpy.run_path(str(ROOT / script), run_name="__main__")
    finally:
        torch.set_num_threads(threads)
        random.setstate(states[0]), np.random.set_state(states[1]), torch.set_rng_state(states[2])


# --- batches rebuilt from the envs' records, and meta-gradients recomputed from them ------------------------------


def by_task(x: np.ndarray, tasks: int) -> torch.Tensor:
    """(T, tasks * episodes, ...) -> (tasks, episodes, T, ...): env i plays task i // episodes (np.repeat's order)."""
    x = torch.as_tensor(x)
    return x.reshape((x.shape[0], tasks, -1) + x.shape[2:]).movedim(0, 2)


def recorded_steps(rollout: dict, horizon: int, tasks: int) -> dict:
    """A recorded rollout as (tasks, episodes, horizon, ...) tensors: obs[t] (what the policy saw at t), actions,
    rewards, and mask[t] = 1 while the env reported no end (terminated or truncated) before step t. A rollout that
    stopped stepping once every episode had ended is padded with ended steps."""
    steps = len(rollout["actions"])
    assert steps == horizon or (steps < horizon and rollout["done"][-1].all()), (steps, horizon)
    pad = horizon - steps
    obs = np.stack(rollout["obs"][:steps] + rollout["obs"][-1:] * pad)
    actions = np.stack(rollout["actions"] + [np.zeros_like(rollout["actions"][0])] * pad)
    rewards = np.stack(rollout["rewards"] + [np.zeros_like(rollout["rewards"][0])] * pad).astype(np.float32)
    done = np.stack(rollout["done"] + [np.ones_like(rollout["done"][0])] * pad)
    ended_before = np.concatenate([np.zeros_like(done[:1]), np.maximum.accumulate(done, axis=0)[:-1]])
    return {"obs": by_task(obs, tasks), "actions": by_task(actions, tasks).long(),
            "rewards": by_task(rewards, tasks), "mask": by_task(~ended_before, tasks).float()}


def flat(steps: dict, advantages: torch.Tensor) -> dict:
    """The losses' layout, (tasks, episodes * T, ...), of recorded steps and their advantages."""
    tasks = steps["obs"].shape[0]
    return {"obs": steps["obs"].reshape(tasks, -1, steps["obs"].shape[-1]),
            "actions": steps["actions"].reshape(tasks, -1), "advantages": advantages.reshape(tasks, -1),
            "mask": steps["mask"].reshape(tasks, -1)}


def normalised(obs: torch.Tensor, space) -> torch.Tensor:
    """Observations mapped from the observation space's bounds to [-1, 1], the baseline's features."""
    low, high = (torch.as_tensor(x, dtype=torch.float32) for x in (space.low, space.high))
    return (obs - (high + low) / 2) / ((high - low) / 2)


def nav_batch(module, rollout: dict, tasks: int, args, space) -> dict:
    """A nav rollout's batch rebuilt from the env's record: advantages by module.compute_advantages."""
    steps = recorded_steps(rollout, nav_env.MAX_EPISODE_STEPS, tasks)
    advantages = module.compute_advantages(normalised(steps["obs"], space), steps["rewards"], steps["mask"],
                                           args.gamma, args.gae_lambda, args.norm_adv)
    return flat(steps, advantages)


def alchemy_batch(rollout: dict, tasks: int, args, space) -> dict:
    """An Alchemy rollout's batch rebuilt from the env's record: advantages by compute_advantages with returns cut
    at every trial's end when args.per_trial_returns, and the valid actions of each observation."""
    steps = recorded_steps(rollout, alchemy_env.EPISODE_STEPS, tasks)
    segment = alchemy_env.STEPS_PER_TRIAL if args.per_trial_returns else None
    advantages = alchemy_maml.compute_advantages(normalised(steps["obs"], space), steps["rewards"], steps["mask"],
                                                 args.gamma, args.gae_lambda, args.norm_adv, segment)
    batch = flat(steps, advantages)
    if args.mask_actions:
        batch["action_mask"] = torch.as_tensor(alchemy_env.valid_action_mask(batch["obs"].numpy()))
    return batch


def policy_with(module, space, num_actions: int, hidden: int, values: list):
    """module.Policy holding the given parameter values (in named_parameters order) as its own leaves."""
    model = module.Policy(space.shape[0], num_actions, hidden, space.low, space.high)
    with torch.no_grad():
        for p, value in zip(model.parameters(), values, strict=True):
            p.copy_(value)
    return model


# --- the policy's probabilities, and chi-square tests that sampled actions follow them ---------------------


def tasks_policies(model, tasks: int, scale: float, seed: int) -> dict:
    """tasks different policies near model's (a leading task dim): the initial policy is nearly uniform, which a
    sampler that ignored the logits would match too."""
    generator = torch.Generator().manual_seed(seed)
    return {name: p.detach() + scale * torch.randn((tasks,) + p.shape, generator=generator)
            for name, p in model.named_parameters()}


def task_probabilities(model, task_params: dict, obs: torch.Tensor, action_mask=None) -> torch.Tensor:
    """Each task's action probabilities on its own observations (tasks, n, obs_dim), by functional_call one task at a
    time; invalid actions (action_mask False) get probability 0."""
    probs = []
    for task in range(obs.shape[0]):
        logits = functional_call(model, {name: p[task] for name, p in task_params.items()}, (obs[task],))
        if action_mask is not None:
            logits = logits.masked_fill(~action_mask[task], -torch.inf)
        probs.append(torch.softmax(logits.double(), -1))
    return torch.stack(probs)


def chi_square_p_value(statistic: float, degrees_of_freedom: int) -> float:
    """P(X >= statistic) for X chi-square distributed with these degrees of freedom."""
    return torch.special.gammaincc(torch.tensor(degrees_of_freedom / 2, dtype=torch.float64),
                                   torch.tensor(statistic / 2, dtype=torch.float64)).item()


def first_step_p_value(probs: torch.Tensor, actions: torch.Tensor) -> float:
    """Pearson's chi-square test that actions (tasks, n), each task's drawn at one fixed state, follow that task's
    probabilities probs (tasks, actions); the tasks' statistics are summed (tasks x (actions - 1) degrees of
    freedom)."""
    counts = torch.stack([torch.bincount(a, minlength=probs.shape[-1]) for a in actions]).double()
    expected = actions.shape[1] * probs
    assert expected.min() >= 5, expected.min()  # where Pearson's chi-square approximation holds
    return chi_square_p_value(((counts - expected) ** 2 / expected).sum().item(), probs.numel() - probs.shape[0])


def every_step_p_value(probs: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor) -> float:
    """A chi-square test over every valid step, each action drawn from its state's probabilities probs (tasks, n,
    actions) given the steps before: per task, d = sum_t (onehot(a_t) - p_t) is a martingale whose summed
    conditional covariance is C = sum_t diag(p_t) - p_t p_t^T, so d^T C^+ d is asymptotically chi-square with
    rank(C) degrees of freedom; d off C's range (an action drawn where its probability is 0) has p-value 0. The
    tasks' statistics are summed."""
    statistic, degrees_of_freedom = 0.0, 0
    for task in range(probs.shape[0]):
        valid = mask[task] > 0
        p, a = probs[task][valid], actions[task][valid]
        d = (torch.nn.functional.one_hot(a, p.shape[-1]).double() - p).sum(0)
        covariance = torch.diag(p.sum(0)) - p.T @ p
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        kept = eigenvalues > 1e-9 * eigenvalues.max()  # the null directions: all ones, never-valid actions
        if (~kept).any() and (eigenvectors[:, ~kept].T @ d).abs().max() > 1e-6:
            return 0.0
        statistic += ((eigenvectors[:, kept].T @ d) ** 2 / eigenvalues[kept]).sum().item()
        degrees_of_freedom += int(kept.sum())
    return chi_square_p_value(statistic, degrees_of_freedom)


# Significance level of each chi-square test of a sampler. The samplers are seeded, so every outcome is fixed; over
# seeds a correct sampler fails one test at this rate, and one of this file's 16 with probability under 0.2%.
ALPHA = 1e-4


def adapted_parameters(model, inner_batches: list, lr: float) -> list:
    """theta_0 .. theta_N of every task (a leading task dim): each task's inner SGD steps on its batches'
    -mean(log pi * A), the LVC surrogate's gradient, by plain autograd one task at a time."""
    names = [name for name, _ in model.named_parameters()]
    tasks = inner_batches[0]["obs"].shape[0] if inner_batches else 0
    thetas = [{name: p.detach().expand((tasks,) + p.shape) for name, p in model.named_parameters()}]
    for batch in inner_batches:
        stepped = {name: [] for name in names}
        for task in range(tasks):
            params = [thetas[-1][name][task].clone().requires_grad_(True) for name in names]
            logits = functional_call(model, dict(zip(names, params)), (batch["obs"][task],))
            if "action_mask" in batch:
                logits = logits.masked_fill(~batch["action_mask"][task], -1e8)
            logp = torch.log_softmax(logits, -1).gather(-1, batch["actions"][task][:, None]).squeeze(-1)
            loss = -(logp * batch["advantages"][task] * batch["mask"][task]).sum() / batch["mask"][task].sum()
            for name, p, g in zip(names, params, torch.autograd.grad(loss, params)):
                stepped[name].append((p - lr * g).detach())
        thetas.append({name: torch.stack(values) for name, values in stepped.items()})
    return thetas


def sampling_p_value(model, theta: dict, batch: dict) -> float:
    """The every-step chi-square test's p-value that batch's actions were drawn from theta's probabilities (theta
    with a leading task dim)."""
    probs = task_probabilities(model, theta, batch["obs"], batch.get("action_mask"))
    return every_step_p_value(probs, batch["actions"], batch["mask"])


# --- 1. one meta-iteration of each script, against the meta-gradient recomputed from its batches ------------------

NAV_ITERATION = ["--num-iterations", "1", "--meta-batch-size", "3", "--episodes-per-task", "4", "--inner-steps", "2",
                 "--hidden-size", "16", "--num-test-tasks", "2", "--eval-every", "0", "--gae-lambda", "0.95",
                 "--outer-optimizer", "sgd", "--outer-lr", "0.5", "--max-grad-norm", "0", "--save-model"]


@pytest.mark.parametrize("script", ["maml_vpg.py", "fomaml_vpg.py"])
def test_one_nav_meta_iteration_is_an_sgd_step_along_the_meta_gradient_of_the_envs_own_episodes(script, tmp_path,
                                                                                                monkeypatch):
    """With SGD and no clipping, the loop's one step moves theta by -outer_lr x the meta-gradient recomputed one task
    at a time by plain autograd (through the N inner steps for MAML, at theta_N for FOMAML) from the N + 1 batches
    rebuilt from what the training envs saw; each batch's actions were drawn from its recomputed theta_k."""
    module, args = MODULES[script], tyro.cli(MODULES[script].Args, args=NAV_ITERATION)
    recorder = EnvRecorder(monkeypatch, nav_env.NavigationVectorEnv)
    with OptimizerSteps() as optimizer:
        run_main(script, NAV_ITERATION, tmp_path, monkeypatch)
    (step,) = optimizer.steps
    assert step["optimizer"] is torch.optim.SGD and step["hyperparameters"]["lr"] == args.outer_lr
    rollouts = recorder.rollouts(args.meta_batch_size * args.episodes_per_task)
    assert len(rollouts) == args.inner_steps + 1  # theta_0 .. theta_N's episodes
    for rollout in rollouts:  # every task's goal on its episodes_per_task consecutive envs
        goals = rollout["options"]["goals"].reshape(args.meta_batch_size, args.episodes_per_task, 2)
        assert (goals == goals[:, :1]).all() and len(np.unique(goals[:, 0], axis=0)) == args.meta_batch_size
    space = nav_env._observation_space(args.see_goal, args.collision)
    batches = [nav_batch(module, rollout, args.meta_batch_size, args, space) for rollout in rollouts]
    model = policy_with(module, space, len(nav_env.ACTION_NAMES), args.hidden_size, step["before"])
    params = dict(model.named_parameters())
    expected, _ = classic_maml_meta_gradient(model, params, batches[:-1], batches[-1], args.inner_lr,
                                             first_order=script == "fomaml_vpg.py")
    # batch k was sampled with theta_k: its actions follow theta_k's probabilities, the validation batch's not theta_0's
    thetas = adapted_parameters(model, batches[:-1], args.inner_lr)
    p_values = [sampling_p_value(model, theta, batch) for batch, theta in zip(batches, thetas, strict=True)]
    assert min(p_values) > ALPHA, p_values
    assert sampling_p_value(model, thetas[0], batches[-1]) < ALPHA, "the test cannot tell theta_N from theta_0"
    (saved_path,) = tmp_path.glob(f"runs/*/{args.exp_name}.cleanrl_model")
    saved = torch.load(saved_path)
    for (name, before), grad, after in zip(((n, p.detach()) for n, p in params.items()), step["grad"], step["after"],
                                           strict=True):
        torch.testing.assert_close(grad, expected[name], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(after - before, -args.outer_lr * expected[name], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(saved[name], after, rtol=0, atol=0)  # the run ends with the stepped parameters


ALCHEMY_ITERATION = ["--num-iterations", "1", "--meta-batch-size", "2", "--episodes-per-task", "2", "--hidden-size",
                     "16", "--num-test-tasks", "1", "--eval-every", "0", "--max-grad-norm", "0", "--save-model"]


@pytest.mark.parametrize("flags", [[], ["--first-order"]], ids=["maml", "fomaml"])
def test_one_alchemy_meta_iteration_is_adams_first_step_on_the_meta_gradient_of_the_envs_own_episodes(flags, tmp_path,
                                                                                                    monkeypatch):
    """The .grad at the loop's Adam step is the meta-gradient recomputed one task at a time by plain autograd (through
    the inner step, or at theta_N with --first-order) from the batches rebuilt from what the training envs saw, with
    returns cut at trial ends and invalid actions masked; the step is Adam's first, -lr * g / (|g| + eps) (its bias
    corrections make m / sqrt(v) = g / |g|), so it moves every parameter along the recomputed gradient's sign."""
    args = tyro.cli(alchemy_maml.Args, args=ALCHEMY_ITERATION + flags)
    assert args.per_trial_returns and args.mask_actions and args.inner_steps == 1
    recorder = EnvRecorder(monkeypatch, alchemy_env.SymbolicAlchemyVectorEnv)
    with OptimizerSteps() as optimizer:
        run_main("alchemy_maml.py", ALCHEMY_ITERATION + flags, tmp_path, monkeypatch)
    (step,) = optimizer.steps
    assert step["optimizer"] is torch.optim.Adam and step["hyperparameters"]["lr"] == args.outer_lr
    rollouts = recorder.rollouts(args.meta_batch_size * args.episodes_per_task)
    assert len(rollouts) == args.inner_steps + 1
    for rollout in rollouts:  # every task's chemistry on its episodes_per_task consecutive envs
        rotations = rollout["options"]["chemistries"]["rotation"]
        rotations = rotations.reshape((args.meta_batch_size, args.episodes_per_task) + rotations.shape[1:])
        assert (rotations == rotations[:, :1]).all()
    space = alchemy_env._observation_space(args.see_chemistry)
    batches = [alchemy_batch(rollout, args.meta_batch_size, args, space) for rollout in rollouts]
    model = policy_with(alchemy_maml, space, alchemy_env.NUM_ACTIONS, args.hidden_size, step["before"])
    params = dict(model.named_parameters())
    expected, _ = classic_maml_meta_gradient(model, params, batches[:-1], batches[-1], args.inner_lr,
                                             first_order=args.first_order)
    # batch k's actions follow theta_k's masked probabilities (here theta_1 is too near theta_0 for the test to tell
    # them apart; the nav test above shows that it can)
    thetas = adapted_parameters(model, batches[:-1], args.inner_lr)
    p_values = [sampling_p_value(model, theta, batch) for batch, theta in zip(batches, thetas, strict=True)]
    assert min(p_values) > ALPHA, p_values
    eps = step["hyperparameters"]["eps"]
    (saved_path,) = tmp_path.glob(f"runs/*/{args.exp_name}.cleanrl_model")
    saved = torch.load(saved_path)
    for (name, before), grad, after in zip(((n, p.detach()) for n, p in params.items()), step["grad"], step["after"],
                                           strict=True):
        torch.testing.assert_close(grad, expected[name], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(after - before, -args.outer_lr * grad / (grad.abs() + eps), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(saved[name], after, rtol=0, atol=0)  # the run ends with the stepped parameters


# --- 2. each script's rollout: its batch against the envs' record, its actions against the policy ----------------


@pytest.mark.parametrize("module", [maml_vpg, fomaml_vpg])
def test_nav_rollout_batch_is_the_envs_steps_with_mask_zero_after_each_end_and_recomputed_advantages(module,
                                                                                                     monkeypatch):
    """The batch holds the env's observations and actions on every valid step; the mask is 1 up to and including the
    step at which the env reported an episode's end and 0 after it; the advantages equal compute_advantages of the
    batch's own observations and mask and the env's rewards (0 where the mask is)."""
    goals = np.array([[9.5, 9.5], [9.0, 8.8], [2.0, 2.0]])  # the first two near the start: some episodes end early
    args = SimpleNamespace(episodes_per_task=8, gamma=0.99, gae_lambda=0.95, norm_adv=True)
    tasks, horizon = len(goals), nav_env.MAX_EPISODE_STEPS
    recorder = EnvRecorder(monkeypatch, nav_env.NavigationVectorEnv)
    envs = nav_env.NavigationVectorEnv(tasks * args.episodes_per_task, obstacles="easy", autoreset_mode="Disabled")
    envs.reset(seed=0)
    space = envs.single_observation_space
    torch.manual_seed(0)
    model = module.Policy(space.shape[0], int(envs.single_action_space.n), 16, space.low, space.high)
    task_params = {name: p.detach().expand((tasks,) + p.shape) for name, p in model.named_parameters()}
    batch, stats = module.rollout(envs, model, task_params, goals, args, CPU)
    (rollout,) = recorder.rollouts(tasks * args.episodes_per_task)
    steps = recorded_steps(rollout, horizon, tasks)

    torch.testing.assert_close(batch["mask"], steps["mask"].reshape(tasks, -1), rtol=0, atol=0)
    lengths = steps["mask"].sum(-1)
    assert (lengths < horizon).any() and (lengths == horizon).any()  # episodes that ended early, and that did not
    assert stats["env_steps"] == lengths.sum()
    valid = batch["mask"] > 0
    torch.testing.assert_close(batch["obs"][valid], steps["obs"].reshape(tasks, -1, space.shape[0])[valid])
    torch.testing.assert_close(batch["actions"][valid], steps["actions"].reshape(tasks, -1)[valid])
    own_obs = batch["obs"].reshape(tasks, args.episodes_per_task, horizon, -1)
    expected = module.compute_advantages(normalised(own_obs, space), steps["rewards"],
                                         batch["mask"].reshape(steps["mask"].shape), args.gamma, args.gae_lambda,
                                         args.norm_adv)
    torch.testing.assert_close(batch["advantages"], expected.reshape(tasks, -1), rtol=1e-5, atol=1e-6)
    assert (batch["advantages"][~valid] == 0).all()


@pytest.mark.parametrize("module", [maml_vpg, fomaml_vpg])
def test_nav_rollout_draws_each_tasks_actions_from_its_own_policys_probabilities(module):
    """Chi-square at level ALPHA: at the first state, each task's 1,000 actions against its policy's probabilities,
    and over every valid step; with the tasks' probabilities swapped the first test rejects, so it has power."""
    goals = np.array([[2.0, 8.0], [8.0, 2.0]])
    args = SimpleNamespace(episodes_per_task=1000, gamma=0.99, gae_lambda=1.0, norm_adv=True)
    tasks = len(goals)
    envs = nav_env.NavigationVectorEnv(tasks * args.episodes_per_task, autoreset_mode="Disabled")
    envs.reset(seed=0)
    space = envs.single_observation_space
    torch.manual_seed(0)
    model = module.Policy(space.shape[0], int(envs.single_action_space.n), 16, space.low, space.high)
    task_params = tasks_policies(model, tasks, scale=0.3, seed=1)
    batch, _ = module.rollout(envs, model, task_params, goals, args, CPU)

    probs = task_probabilities(model, task_params, batch["obs"])
    first = slice(0, None, nav_env.MAX_EPISODE_STEPS)  # each episode's first step, all at the task's start state
    assert (batch["obs"][:, first] == batch["obs"][:, :1]).all()
    p_first = probs[:, 0]
    assert first_step_p_value(p_first, batch["actions"][:, first]) > ALPHA
    assert first_step_p_value(p_first.flip(0), batch["actions"][:, first]) < 1e-9
    assert every_step_p_value(probs, batch["actions"], batch["mask"]) > ALPHA


@pytest.mark.parametrize("per_trial_returns", [True, False])
def test_alchemy_rollout_batch_is_the_envs_steps_with_advantages_recomputed_cut_at_trial_ends_when_per_trial(
        per_trial_returns, monkeypatch):
    """The advantages equal compute_advantages of the batch's own observations, the env's rewards and the mask, with
    returns cut at every 20-step trial's end exactly when --per-trial-returns is on; the cut changes them, so the test
    tells the two apart. Every episode runs the whole horizon: the mask is all 1, the env ends it at its last step."""
    args = SimpleNamespace(episodes_per_task=3, gamma=0.99, gae_lambda=0.9, norm_adv=True,
                           per_trial_returns=per_trial_returns, mask_actions=True)
    chemistries = alchemy_env.seeded_chemistries(alchemy_env.STANDARD_LEVEL, np.array([7, 8]))
    tasks, horizon = len(chemistries["seed"]), alchemy_env.EPISODE_STEPS
    recorder = EnvRecorder(monkeypatch, alchemy_env.SymbolicAlchemyVectorEnv)
    envs = alchemy_env.SymbolicAlchemyVectorEnv(tasks * args.episodes_per_task, autoreset_mode="Disabled")
    envs.reset(seed=0)
    space = envs.single_observation_space
    torch.manual_seed(0)
    model = alchemy_maml.Policy(space.shape[0], alchemy_env.NUM_ACTIONS, 16, space.low, space.high)
    task_params = {name: p.detach().expand((tasks,) + p.shape) for name, p in model.named_parameters()}
    batch, stats = alchemy_maml.rollout(envs, model, task_params, chemistries, args, CPU)
    (rollout,) = recorder.rollouts(tasks * args.episodes_per_task)
    steps = recorded_steps(rollout, horizon, tasks)

    done = np.stack(rollout["done"])
    assert len(done) == horizon and done[-1].all() and not done[:-1].any()
    assert (steps["mask"] == 1).all() and (batch["mask"] == 1).all()
    torch.testing.assert_close(batch["obs"], steps["obs"].reshape(tasks, -1, space.shape[0]), rtol=0, atol=0)
    torch.testing.assert_close(batch["actions"], steps["actions"].reshape(tasks, -1), rtol=0, atol=0)
    np.testing.assert_array_equal(batch["action_mask"].numpy(), alchemy_env.valid_action_mask(batch["obs"].numpy()))
    np.testing.assert_allclose(stats["scores"], steps["rewards"].sum(-1).numpy(), rtol=1e-6)
    own = (normalised(batch["obs"].reshape(tasks, args.episodes_per_task, horizon, -1), space), steps["rewards"],
           batch["mask"].reshape(steps["mask"].shape), args.gamma, args.gae_lambda, args.norm_adv)
    cut, uncut = (alchemy_maml.compute_advantages(*own, segment).reshape(tasks, -1)
                  for segment in (alchemy_env.STEPS_PER_TRIAL, None))
    torch.testing.assert_close(batch["advantages"], cut if per_trial_returns else uncut, rtol=1e-5, atol=1e-6)
    assert (cut - uncut).abs().max() > 0.1


def test_alchemy_rollout_draws_each_tasks_actions_from_its_own_masked_policys_probabilities():
    """Chi-square at level ALPHA: each task's chemistry and items fixed, so every episode starts in the same state;
    there each task's 600 actions against its policy's probabilities, and over every step against the probabilities
    with the invalid actions masked out; with the tasks' probabilities swapped the first test rejects."""
    level = alchemy_env.STANDARD_LEVEL
    episodes = [alchemy_env.sample_episode(level, seed) for seed in (7, 8)]
    chemistries = alchemy_env.seeded_chemistries(level, np.array([7, 8]))
    items = {key: np.stack([episode[1][key] for episode in episodes]) for key in episodes[0][1]}
    args = SimpleNamespace(episodes_per_task=600, gamma=1.0, gae_lambda=1.0, norm_adv=True, per_trial_returns=True,
                           mask_actions=True)
    tasks = len(episodes)
    envs = alchemy_env.SymbolicAlchemyVectorEnv(tasks * args.episodes_per_task, autoreset_mode="Disabled")
    envs.reset(seed=0)
    space = envs.single_observation_space
    torch.manual_seed(0)
    model = alchemy_maml.Policy(space.shape[0], alchemy_env.NUM_ACTIONS, 16, space.low, space.high)
    task_params = tasks_policies(model, tasks, scale=0.1, seed=1)
    batch, _ = alchemy_maml.rollout(envs, model, task_params, chemistries, args, CPU, items)

    probs = task_probabilities(model, task_params, batch["obs"], batch["action_mask"])
    first = slice(0, None, alchemy_env.EPISODE_STEPS)
    assert (batch["obs"][:, first] == batch["obs"][:, :1]).all()
    assert batch["action_mask"][:, first].all()  # at the start every action is valid
    p_first = probs[:, 0]
    assert first_step_p_value(p_first, batch["actions"][:, first]) > ALPHA
    assert first_step_p_value(p_first.flip(0), batch["actions"][:, first]) < 1e-9
    assert every_step_p_value(probs, batch["actions"], batch["mask"]) > ALPHA


# --- 3. nav meta-training: a few meta-iterations raise the held-out post-adaptation return ------------------------

NAV_LEARNING = ["--seed", "1", "--meta-batch-size", "8", "--episodes-per-task", "20", "--num-test-tasks", "16",
                "--inner-steps", "1", "--inner-lr", "1.0", "--outer-optimizer", "adam", "--outer-lr", "1e-3",
                "--eval-every", "0", "--checkpoint-every", "0"]
LEARNING_ITERATIONS = 10
# Measured with these flags over seeds 1-6 (the seed draws the network, the training goals and the actions; the 16
# held-out goals are --test-seed's): the initial policy's held-out post-adaptation return is -5451 with an SD of 53
# over seeds, so the difference of two such returns has a standard error of about sqrt(2) x 53 = 75. After 10
# meta-iterations FOMAML gains 1171 (SD 45 over seeds), MAML 1177 (SD 43), 1124 at the least. The threshold is 6
# standard errors, 450: a loop that does not learn gains 0 +- 75 (without its optimizer step: -37), one that steps
# against the meta-gradient -531; a correct one clears it by about 15 SDs of its own gain.
LEARNING_THRESHOLD = 6 * 75


@pytest.mark.parametrize("script", ["maml_vpg.py", "fomaml_vpg.py"])
def test_ten_nav_meta_iterations_raise_the_held_out_post_adaptation_return_by_many_standard_errors(script, tmp_path,
                                                                                                  monkeypatch):
    """The script's own loop, run for 0 and for 10 meta-iterations from the same seed (so the same initial policy):
    the held-out post-adaptation return of summary.json rises by more than LEARNING_THRESHOLD. A sign error, a lost
    term or a missing step in the meta-update leaves it where it started."""
    returns = {}
    for iterations in (0, LEARNING_ITERATIONS):
        cwd = tmp_path / str(iterations)
        cwd.mkdir()
        run_main(script, NAV_LEARNING + ["--num-iterations", str(iterations)], cwd, monkeypatch)
        (summary,) = cwd.glob("runs/*/summary.json")
        returns[iterations] = json.loads(summary.read_text())["post_adaptation_return"]
    assert returns[LEARNING_ITERATIONS] - returns[0] > LEARNING_THRESHOLD, returns
