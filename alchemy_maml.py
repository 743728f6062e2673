# MAML (or FOMAML with --first-order) with a policy-gradient inner loop on symbolic Alchemy: a task is a chemistry.
# Docs: docs/alchemy_maml.md (usage, logged metrics, resuming, results). The algorithm is maml_vpg.py's.
"""MAML (Finn et al. 2017, Algorithm 3) with a policy-gradient inner loop on symbolic Alchemy (Wang et al. 2021).

Each meta-iteration, for all chemistries (tasks) of a meta-batch at once, in one vector env:
  1. sample K episodes (10 trials of 20 steps, fresh stones and potions every trial) with theta_0 = theta;
  2. take N inner steps theta_{k+1} = theta_k - inner_lr * grad L_in(theta_k) (Eq. 1), K fresh episodes before
     each; L_in is ProMP's LVC surrogate (Rothfuss et al. 2018), whose Hessian has the sampling term;
  3. sample K validation episodes with theta_N: their policy-gradient loss L_out(theta_N) is the task's meta-loss;
  4. step theta along the gradient of the summed meta-losses (Eq. 3), through the N inner steps (MAML) or, with
     --first-order (FOMAML, Sec. 5.2; Nichol et al. 2018), as if d theta_N / d theta were the identity.
"""

import importlib.util
import json
import math
import os
import random
import re
import sys
import time
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn as nn
import tyro
from torch.func import functional_call, grad, grad_and_value, vmap
from torch.utils.tensorboard import SummaryWriter

import alchemy_env

@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment"""
    seed: int = 1
    """seed of the experiment (training chemistries, items, actions, network initialisation)"""
    cuda: bool = False
    """if toggled, run on the CUDA device (it must be available)"""
    track: bool = False
    """if toggled, this experiment will be tracked with Weights and Biases"""
    wandb_project_name: str = "meta-rl"
    """the wandb's project name"""
    wandb_entity: str | None = None
    """the entity (team) of wandb's project (None: wandb's default)"""
    first_order: bool = False
    """if toggled, first-order MAML (FOMAML): no differentiation through the inner steps"""
    level: str = alchemy_env.STANDARD_LEVEL
    """the symbolic Alchemy level the chemistries are drawn from (alchemy_env.LEVELS)"""
    see_chemistry: bool = False
    """if toggled, the 28-float ground-truth chemistry is appended to the observation (an upper reference)"""
    backend: Literal["fast", "dm_alchemy"] = "fast"
    """`fast`: alchemy_env's vector env; `dm_alchemy`: DeepMind's envs, one per episode (slow, same scores)"""
    # Algorithm (Finn et al. 2017, Algorithm 3): the defaults train on 250 x 20 x 10 x 2 = 100,000 episodes
    num_iterations: int = 250
    """the number of meta-iterations, each of M x K x (N + 1) episodes (0: only evaluate the initial parameters)"""
    meta_batch_size: int = 20
    """the number of chemistries (tasks) per meta-iteration"""
    episodes_per_task: int = 10
    """K: episodes per chemistry for each inner step and for the validation (outer) loss"""
    inner_steps: int = 1
    """N, the number of inner policy-gradient steps (fresh episodes before each)"""
    inner_lr: float = 1.0
    """the inner SGD step size alpha (Algorithm 3, line 7), on normalised advantages"""
    outer_lr: float = 1e-2
    """the meta (outer) learning rate beta (Algorithm 3, line 10) of Adam, the meta optimizer"""
    gamma: float = 1.0
    """the discount factor gamma of returns and advantages (the score is the undiscounted return)"""
    gae_lambda: float = 1.0
    """the lambda of generalised advantage estimation (1.0: return minus the linear baseline)"""
    per_trial_returns: bool = True
    """if toggled, returns and GAE stop at the end of each 20-step trial (its items are gone)"""
    norm_adv: bool = True
    """toggles advantage normalisation (per task and batch), which makes inner_lr scale-free"""
    hidden_size: int = 128
    """width of the policy's two tanh hidden layers"""
    mask_actions: bool = True
    """if toggled, actions that change nothing get probability 0 (Huang & Ontanon 2020)"""
    max_grad_norm: float = 1.0
    """clip the meta-gradient to this norm (0: no clipping)"""
    # Evaluation, outputs and runs that survive a kill
    eval_every: int = 50
    """evaluate on the held-out test chemistries every this many iterations (0: only at the end)"""
    num_test_tasks: int = 100
    """the number of held-out test chemistries (never drawn for training), K episodes each"""
    test_seed: int = 0
    """seed of the held-out test chemistries (apart from --seed: every run tests on the same ones)"""
    eval_set: Literal["sampled", "dm_alchemy"] = "sampled"
    """final evaluation: `sampled` test chemistries, or dm_alchemy's 1,000 evaluation episodes beside its agents"""
    eval_episodes: int | None = None
    """with --eval-set dm_alchemy, score only the first this many episodes (None: all 1,000)"""
    eval_inner_steps: int | None = None
    """the final evaluation scores after 0..this many inner steps (None: --inner-steps)"""
    save_model: bool = False
    """if toggled, save the meta-parameters to runs/{run_name}/{exp_name}.cleanrl_model"""
    load_model: str | None = None
    """start from these saved meta-parameters (None: a fresh initialisation)"""
    checkpoint_every: int = 10
    """write runs/{run_name}/checkpoint.pt every this many iterations and after the last (0: after the last)"""
    resume: str | None = None
    """continue the run in this folder from its checkpoint, with its own flags (None: a new run)"""
    torch_threads: int = 1
    """torch's CPU threads (1: many small tensor operations; runs side by side do not compete)"""

def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer

class Policy(nn.Module):
    """A categorical policy: observation -> action logits (an MLP with two tanh hidden layers)."""
    def __init__(self, obs_dim: int, num_actions: int, hidden: int, obs_low: np.ndarray, obs_high: np.ndarray):
        super().__init__()
        # observations are mapped from their Box bounds to [-1, 1]: centred inputs suit tanh layers
        self.register_buffer("obs_mid", torch.as_tensor((obs_high + obs_low) / 2, dtype=torch.float32))
        self.register_buffer("obs_half_range", torch.as_tensor((obs_high - obs_low) / 2, dtype=torch.float32))
        self.net = nn.Sequential(layer_init(nn.Linear(obs_dim, hidden)), nn.Tanh(),
                                 layer_init(nn.Linear(hidden, hidden)), nn.Tanh(),
                                 layer_init(nn.Linear(hidden, num_actions), std=0.01))

    def forward(self, obs):
        return self.net((obs - self.obs_mid) / self.obs_half_range)

# The losses take one task's batch: obs (n, obs_dim), actions (n,), advantages (n,), mask (n,) (all 1: every
# episode runs its 200 steps) and with --mask-actions action_mask (n, 40). vmap runs them over the meta-batch.
def masked_logits(logits, action_mask=None):
    """Invalid-action masking (Huang & Ontanon 2020): the actions that change nothing get probability 0."""
    return logits if action_mask is None else logits.masked_fill(~action_mask, -1e8)

def log_prob(model, params, obs, actions, action_mask=None):
    logits = masked_logits(functional_call(model, params, (obs,)), action_mask)
    return torch.log_softmax(logits, dim=-1).gather(-1, actions.unsqueeze(-1)).squeeze(-1)

def inner_loss(model, params, batch):
    """ProMP's LVC surrogate, -mean_t pi(a_t|s_t) / stopgrad(pi(a_t|s_t)) * A_t, at the sampling parameters."""
    logp = log_prob(model, params, batch["obs"], batch["actions"], batch.get("action_mask"))
    ratio = torch.exp(logp - logp.detach())  # = 1 in value; its gradient is the score function
    return -(ratio * batch["advantages"] * batch["mask"]).sum() / batch["mask"].sum()

def outer_loss(model, params, batch):
    """The vanilla policy-gradient loss -mean_t log pi(a_t|s_t) * A_t of the validation episodes."""
    logp = log_prob(model, params, batch["obs"], batch["actions"], batch.get("action_mask"))
    return -(logp * batch["advantages"] * batch["mask"]).sum() / batch["mask"].sum()

def inner_update(model, params, batch, inner_lr: float):
    """One inner SGD step on the LVC loss (Finn et al. 2017, Eq. 1); differentiable w.r.t. params."""
    grads = grad(inner_loss, argnums=1)(model, params, batch)
    return {name: params[name] - inner_lr * grads[name] for name in params}

def meta_gradient(model, params, adapted_params, inner_batches, validation_batch, inner_lr: float,
                  first_order: bool = False):
    """The gradient of the validation losses summed over tasks (Eq. 3), and that sum: through the N inner steps
    (MAML), or (first_order: FOMAML) each task's gradient at its adapted parameters, summed."""
    if first_order:
        task_grads, task_losses = vmap(grad_and_value(outer_loss, argnums=1), in_dims=(None, 0, 0))(
            model, adapted_params, validation_batch)
        return {name: g.sum(0) for name, g in task_grads.items()}, task_losses.sum()
    def task_meta_loss(params, inner_batches, validation_batch):  # the validation loss after the N inner steps
        for batch in inner_batches:
            params = inner_update(model, params, batch, inner_lr)
        return outer_loss(model, params, validation_batch)
    return grad_and_value(lambda params: vmap(task_meta_loss, in_dims=(None, 0, 0))(
        params, inner_batches, validation_batch).sum())(params)

def rollout(envs, model, task_params, chemistries, args, device, items=None):
    """K episodes of every task's chemistry in lockstep, each task with its own params (and its items if given;
    leading task dims): the task-batched samples for the losses and the episodes' statistics."""
    tasks, episodes, horizon = len(chemistries["rotation"]), args.episodes_per_task, alchemy_env.EPISODE_STEPS
    obs_np, _ = envs.reset(options=alchemy_env.repeat_options(chemistries, items, episodes))
    obs = torch.zeros((horizon, tasks * episodes) + envs.single_observation_space.shape)
    actions = torch.zeros((horizon, tasks * episodes), dtype=torch.long)
    rewards, entropies = torch.zeros((2, horizon, tasks * episodes))
    action_masks = (torch.ones((horizon, tasks * episodes, envs.single_action_space.n), dtype=torch.bool)
                    if args.mask_actions else None)
    policy = vmap(functional_call, in_dims=(None, 0, 0))  # every task's policy in one forward pass
    with torch.no_grad():
        for t in range(horizon):
            obs[t] = torch.as_tensor(obs_np)
            logits = policy(model, task_params, (obs[t].view(tasks, episodes, -1).to(device),)).flatten(0, 1)
            if action_masks is not None:
                action_masks[t] = torch.as_tensor(alchemy_env.valid_action_mask(obs_np))
                logits = masked_logits(logits, action_masks[t].to(device))
            if not torch.isfinite(logits).all():
                raise FloatingPointError("non-finite action logits")
            probs = torch.softmax(logits, -1)
            entropies[t] = torch.special.entr(probs).sum(-1).cpu()
            actions[t] = torch.multinomial(probs, 1).squeeze(-1).cpu()
            obs_np, reward, terminated, truncated, info = envs.step(actions[t].numpy())
            rewards[t] = torch.as_tensor(reward, dtype=torch.float32)
    assert terminated.all(), "an Alchemy episode is 200 steps"

    def by_task(x):  # (T, tasks * episodes, ...) -> (tasks, episodes, T, ...)
        return x.reshape((horizon, tasks, episodes) + x.shape[2:]).movedim(0, 2)
    obs, actions, rewards = by_task(obs), by_task(actions), by_task(rewards)
    mask = torch.ones_like(rewards)
    normalised_obs = (obs - model.obs_mid.cpu()) / model.obs_half_range.cpu()  # baseline features in [-1, 1]
    segment = alchemy_env.STEPS_PER_TRIAL if args.per_trial_returns else None
    advantages = compute_advantages(normalised_obs, rewards, mask, args.gamma, args.gae_lambda, args.norm_adv, segment)
    batch = {"obs": obs.reshape(tasks, episodes * horizon, -1), "actions": actions.reshape(tasks, -1),
             "advantages": advantages.reshape(tasks, -1), "mask": mask.reshape(tasks, -1)}
    if action_masks is not None:
        batch["action_mask"] = by_task(action_masks).reshape(tasks, episodes * horizon, -1)
    stats = {"scores": rewards.sum(-1).numpy(), "env_steps": tasks * episodes * horizon,  # scores (tasks, episodes)
             "entropy": float(entropies.mean())}
    return {k: v.to(device) for k, v in batch.items()}, stats

def discount_matrix(rate: float, horizon: int, segment: int | None = None) -> torch.Tensor:
    """M[t, u] = rate^(u - t) for u >= t in t's segment of that many steps, else 0: x @ M.T sums x's future."""
    steps = torch.arange(horizon, dtype=torch.float64)
    exponent = steps[None, :] - steps[:, None]
    keep = exponent >= 0
    if segment is not None:
        keep &= (steps[None, :] // segment) == (steps[:, None] // segment)
    return torch.where(keep, rate ** exponent.clamp(min=0), torch.zeros(()))

def linear_baseline(features, returns, mask, reg: float = 1e-5):
    """Per-task ridge regression of returns on features: Duan et al. 2016's baseline (Finn et al. 2017, Sec. 5.3)."""
    weighted = features * mask.unsqueeze(-1)
    gram = weighted.transpose(1, 2) @ features + reg * torch.eye(features.shape[-1], dtype=features.dtype)
    coef = torch.linalg.solve(gram, weighted.transpose(1, 2) @ returns.unsqueeze(-1))
    return (features @ coef).squeeze(-1)

def compute_advantages(obs, rewards, mask, gamma: float, gae_lambda: float, norm_adv: bool,
                       segment: int | None = None):
    """GAE(gamma, lambda) (Schulman et al. 2016) with a per-task linear baseline, as matrix products, for obs (tasks,
    episodes, T, obs_dim) in [-1, 1]; with segment (the trial length) returns stop at each segment's end."""
    tasks, episodes, horizon = rewards.shape
    rewards, mask = rewards.double(), mask.double()
    returns = rewards @ discount_matrix(gamma, horizon, segment).T
    steps = torch.arange(horizon, dtype=torch.float64)
    trial_steps = (steps % segment) / segment if segment else steps / horizon  # the trial's clock
    time, trial_time = (x.expand(tasks, episodes, horizon).unsqueeze(-1) for x in (steps / horizon, trial_steps))
    features = torch.cat([obs.double(), obs.double() ** 2, time, time**2, time**3, trial_time, trial_time**2,
                          trial_time**3, torch.ones_like(time)], dim=-1)
    values = linear_baseline(features.reshape(tasks, episodes * horizon, -1), returns.reshape(tasks, -1),
                             mask.reshape(tasks, -1)).reshape(tasks, episodes, horizon) * mask
    next_values = torch.cat([values[..., 1:], torch.zeros_like(values[..., :1])], dim=-1)
    if segment is not None:  # no value after a segment's last step: the next step belongs to another segment
        next_values[..., segment - 1 :: segment] = 0.0
    deltas = (rewards + gamma * next_values - values) * mask
    advantages = deltas @ discount_matrix(gamma * gae_lambda, horizon, segment).T
    if norm_adv:
        count = mask.sum(dim=(1, 2), keepdim=True)
        mean = (advantages * mask).sum(dim=(1, 2), keepdim=True) / count
        std = (((advantages - mean) ** 2 * mask).sum(dim=(1, 2), keepdim=True) / count).sqrt()
        advantages = (advantages - mean) / (std + 1e-8)
    return (advantages * mask).float()

def sample_and_adapt(envs, model, params, chemistries, num_steps: int, args, device, items=None):
    """Steps 1-3 for every task at once, without a graph: the batches, their statistics, the adapted parameters.
    With items (an evaluation) the statistics are of the items, and each inner step adapts on fresh episodes."""
    task_params = {name: p.detach().expand((len(chemistries["rotation"]),) + p.shape) for name, p in params.items()}
    batches, stats = [], []
    for step in range(num_steps + 1):
        batch, batch_stats = rollout(envs, model, task_params, chemistries, args, device, items)
        stats.append(batch_stats)
        if items is not None and step < num_steps:
            batch, _ = rollout(envs, model, task_params, chemistries, args, device)
        batches.append(batch)
        if step < num_steps:
            task_params = vmap(inner_update, in_dims=(None, 0, 0, None))(model, task_params, batch, args.inner_lr)
    return batches, stats, task_params

# --- the helpers of the loop below: evaluation and bad input ----------------------------------------------
def make_envs(args, num_envs: int, seed: int):
    """Autoreset disabled: a rollout starts every episode itself, with its task's chemistry."""
    envs = (alchemy_env.DMAlchemyVectorEnv(num_envs, args.level, args.see_chemistry) if args.backend == "dm_alchemy"
            else alchemy_env.SymbolicAlchemyVectorEnv(num_envs, args.level, args.see_chemistry, "Disabled"))
    envs.reset(seed=seed)
    return envs

def evaluate(envs, model, params, chemistries, num_steps: int, args, device, items=None) -> list[np.ndarray]:
    """Each task's mean episode score after 0..num_steps inner steps: a list of (tasks,) arrays."""
    _, stats, _ = sample_and_adapt(envs, model, params, chemistries, num_steps, args, device, items)
    return [s["scores"].mean(1) for s in stats]

def log_evaluation(writer, prefix: str, task_means: list[np.ndarray], inner_steps: int, step: int):
    """The mean scores over tasks after 0..K inner steps (logged under prefix/) and their standard errors."""
    scores, errors = (list(x) for x in zip(*(alchemy_env.mean_and_sem(m) for m in task_means)))
    writer.add_scalar(f"{prefix}/pre_adaptation_score", scores[0], step)
    writer.add_scalar(f"{prefix}/post_adaptation_score", scores[inner_steps], step)
    for k, score in enumerate(scores):
        writer.add_scalar(f"{prefix}/score_after_{k}_steps", score, step)
    return scores, errors

def final_scores(args, model, params, envs_of_size: dict, chemistries, items, num_steps: int, device):
    """evaluate and the heuristic's scores on every task (and its items), --num-test-tasks at a time, one env a size."""
    n, means, heuristic = len(chemistries["rotation"]), [], []
    for start in range(0, n, min(args.num_test_tasks, n)):
        rows = slice(start, min(start + args.num_test_tasks, n))
        part, part_items = ({key: value[rows] for key, value in group.items()} if group else None
                            for group in (chemistries, items))
        size = len(part["rotation"])
        if size not in envs_of_size:
            envs_of_size[size] = make_envs(args, size * args.episodes_per_task, args.test_seed)
        means.append(evaluate(envs_of_size[size], model, params, part, num_steps, args, device, part_items))
        heuristic.append(alchemy_env.heuristic_scores(envs_of_size[size], part, part_items, args.episodes_per_task,
                                                      args.test_seed + start))
    return [np.concatenate(per_step) for per_step in zip(*means)], np.concatenate(heuristic)

def stop(code: int, message: str):
    print(f"error: {message}", file=sys.stderr)  # bad input (exit code 2) or a diverged run (3): one line
    sys.exit(code)

def check(args: Args) -> Args:
    """Values that would crash or silently misbehave: exit code 2 and one line naming the flag."""
    given = [flag for flag, value in asdict(args).items() if value != getattr(Args(), flag)]
    no_dm_alchemy = f"without dm_alchemy ({alchemy_env.DM_ALCHEMY_INSTALL})"
    rules = [  # (flag, the value is fine, what it must be); nan fails every comparison
        *[(flag, 0 <= getattr(args, flag) < 2**32, "in [0, 2**32)") for flag in ("seed", "test_seed")],
        ("inner_lr", 0 < args.inner_lr < math.inf, "a finite number > 0"),
        ("outer_lr", 0 < args.outer_lr < 1e37, "in (0, 1e37)"),  # above, Adam's first step overflows float32
        ("max_grad_norm", 0 <= args.max_grad_norm < math.inf, "a finite number >= 0"),
        *[(flag, 0 <= getattr(args, flag) <= 1, "in [0, 1]") for flag in ("gamma", "gae_lambda")],
        *[(flag, getattr(args, flag) > 0, "> 0") for flag in
          ("meta_batch_size", "episodes_per_task", "inner_steps", "hidden_size", "num_test_tasks", "torch_threads")],
        *[(flag, getattr(args, flag) >= 0, ">= 0") for flag in ("num_iterations", "eval_every", "checkpoint_every")],
        ("eval_inner_steps", (args.eval_inner_steps or args.inner_steps) >= args.inner_steps, ">= --inner-steps"),
        ("level", args.level in alchemy_env.LEVELS, "one of alchemy_env.LEVELS"),
        ("exp_name", args.exp_name != "" and "/" not in args.exp_name, "a name without '/'"),
        ("backend", args.backend == "fast" or importlib.util.find_spec("dm_alchemy"), f"fast {no_dm_alchemy}"),
        ("eval_set", args.eval_set == "sampled" or importlib.util.find_spec("dm_alchemy"), f"sampled {no_dm_alchemy}"),
        ("eval_episodes", args.eval_episodes is None or args.eval_set == "dm_alchemy" and 1 <= args.eval_episodes
         <= 1000, "in [1, 1000], with --eval-set dm_alchemy"),
        *[(flag, args.track or flag not in given, "left alone without --track")
          for flag in ("wandb_project_name", "wandb_entity")],
        ("cuda", not args.cuda or torch.cuda.is_available(), "given only where a CUDA device is available"),
        ("track", not args.track or importlib.util.find_spec("wandb") is not None, "given with wandb installed"),
        ("load_model", args.load_model is None or os.path.isfile(args.load_model), "an existing file"),
        ("resume", args.resume is None or set(given) <= {"resume", "torch_threads"},
         "given alone (or with --torch-threads): the run keeps its own flags"),
    ]
    for flag, fine, must in rules:
        if not fine:
            stop(2, f"--{flag.replace('_', '-')} must be {must}, got {getattr(args, flag)!r}")
    if os.path.exists("runs") and not os.path.isdir("runs"):
        stop(2, "runs must be a folder for the runs' outputs, got a file")
    return args

if __name__ == "__main__":
    args, checkpoint, script = check(tyro.cli(Args)), None, os.path.basename(__file__)
    if args.resume is not None:  # the run's own flags (kept under this script's name) and its loop's state
        try:  # weights_only=False: the run's own file, holding numpy's RNG states
            checkpoint = torch.load(os.path.join(args.resume, "checkpoint.pt"), map_location="cpu", weights_only=False)
            run_dir, args = args.resume, Args(**checkpoint[script] | {"torch_threads": args.torch_threads})
        except Exception:  # no file, a truncated or a foreign one
            stop(2, f"--resume must be a run folder with a checkpoint.pt of {script}, got {args.resume!r}")
    else:
        algorithm = "fomaml" if args.first_order else "maml"
        run_dir = f"runs/alchemy-{algorithm}__{args.exp_name}__{args.seed}__{int(time.time())}"
    torch.set_num_threads(args.torch_threads)

    # TRY NOT TO MODIFY: seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if args.cuda else "cpu")
    task_rng = np.random.default_rng([0, args.seed])  # training chemistries, never a test or evaluation-set one
    test_chemistries = alchemy_env.seeded_chemistries(args.level, np.random.default_rng([1, args.test_seed]).integers(
        0, 2**31 - 1, size=args.num_test_tasks))
    eval_set = alchemy_env.eval_set_options(args.eval_episodes) if args.eval_set == "dm_alchemy" else None
    held_out = set(alchemy_env.chemistry_keys(test_chemistries))  # never drawn for training
    held_out |= set(alchemy_env.chemistry_keys(eval_set["chemistries"])) if eval_set else set()

    # env setup
    envs = make_envs(args, args.meta_batch_size * args.episodes_per_task, args.seed)
    test_envs = make_envs(args, args.num_test_tasks * args.episodes_per_task, args.test_seed)
    obs_space = envs.single_observation_space
    model = Policy(obs_space.shape[0], int(envs.single_action_space.n), args.hidden_size, obs_space.low, obs_space.high)
    if args.load_model is not None and checkpoint is None:
        try:
            model.load_state_dict(torch.load(args.load_model, map_location="cpu"))
        except Exception as error:  # not a file torch.save wrote (its error named), or another network (the mismatch)
            lines = str(error).splitlines() if isinstance(error, RuntimeError) else [type(error).__name__]
            stop(2, f"--load-model must be a {args.exp_name}.cleanrl_model of this --hidden-size and --see-chemistry, "
                    f"got {args.load_model!r} ({lines[min(1, len(lines) - 1)].strip()[:150]})")
    model = model.to(device)
    params = dict(model.named_parameters())
    optimizer = torch.optim.Adam(params.values(), args.outer_lr)

    generators = (task_rng, envs.np_random, test_envs.np_random)  # with the global ones: every RNG the loop draws from
    checkpoint_path, start_iteration, global_step = os.path.join(run_dir, "checkpoint.pt"), 0, 0
    if checkpoint is not None:  # continue where the checkpoint left off
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        start_iteration, global_step, rng = checkpoint["loop"]
        for restore, state in zip((random.setstate, np.random.set_state, torch.set_rng_state), rng):
            restore(state)
        for generator, state in zip(generators, rng[3]):
            generator.bit_generator.state = state
        if rng[4]:
            torch.cuda.set_rng_state_all(rng[4])
    os.makedirs(run_dir, exist_ok=True)
    if args.track:  # the run's folder name is its W&B name and id: a resumed run continues its W&B run
        import wandb
        run_name = os.path.basename(os.path.normpath(run_dir))
        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True, config=vars(args),
                   name=run_name, id=re.sub(r"[^A-Za-z0-9_-]", "-", run_name), resume="allow", save_code=True)
    writer = SummaryWriter(run_dir, purge_step=start_iteration + 1 if checkpoint is not None else None)
    if checkpoint is None:
        writer.add_text("hyperparameters", "|param|value|\n|-|-|\n"
                        + "\n".join(f"|{key}|{value}|" for key, value in vars(args).items()))

    start_time = time.time()
    for iteration in range(start_iteration + 1, args.num_iterations + 1):
        iteration_start = time.time()
        chemistries = alchemy_env.sample_seeded_chemistries(args.level, args.meta_batch_size, task_rng, held_out)
        try:
            # ALGO LOGIC: sample, adapt N times and sample validation episodes, for all chemistries at once
            batches, stats, adapted = sample_and_adapt(envs, model, params, chemistries, args.inner_steps, args, device)

            # ALGO LOGIC: the meta-update (MAML through the inner steps, or FOMAML at the adapted parameters)
            grads, loss = meta_gradient(model, params, adapted, batches[:-1], batches[-1], args.inner_lr,
                                        first_order=args.first_order)
            for name, p in params.items():
                p.grad = grads[name]
            grad_norm = nn.utils.clip_grad_norm_(params.values(), args.max_grad_norm or math.inf)
            if not torch.isfinite(loss + grad_norm):
                raise FloatingPointError("non-finite outer loss or meta-gradient")
            optimizer.step()
            held_out_means = None
            if args.eval_every and iteration % args.eval_every == 0 and iteration < args.num_iterations:
                held_out_means = evaluate(test_envs, model, params, test_chemistries, args.inner_steps, args, device)
        except FloatingPointError as error:
            stop(3, f"{error} at iteration {iteration}: the run diverged; lower --outer-lr or --inner-lr")
        global_step += sum(s["env_steps"] for s in stats)

        # TRY NOT TO MODIFY: record rewards for plotting purposes; the x axis is the meta-iteration, as in maml_vpg.py
        sps = int(sum(s["env_steps"] for s in stats) / (time.time() - iteration_start))
        writer.add_scalar("charts/pre_adaptation_score", stats[0]["scores"].mean(), iteration)
        writer.add_scalar("charts/post_adaptation_score", stats[-1]["scores"].mean(), iteration)
        writer.add_scalar("charts/policy_entropy", stats[0]["entropy"], iteration)
        writer.add_scalar("charts/env_steps", global_step, iteration)
        writer.add_scalar("charts/train_episodes", global_step // alchemy_env.EPISODE_STEPS, iteration)
        writer.add_scalar("charts/iteration_time", time.time() - iteration_start, iteration)
        writer.add_scalar("charts/SPS", sps, iteration)
        writer.add_scalar("losses/outer_loss", loss.item(), iteration)
        writer.add_scalar("losses/meta_grad_norm", grad_norm.item(), iteration)
        if iteration % 10 == 0 or iteration in (1, args.num_iterations):
            print(f"iteration {iteration}/{args.num_iterations} episodes={global_step // alchemy_env.EPISODE_STEPS} "
                  f"pre_adaptation_score={stats[0]['scores'].mean():.1f} "
                  f"post_adaptation_score={stats[-1]['scores'].mean():.1f} SPS={sps}")
        if held_out_means is not None:
            scores, errors = log_evaluation(writer, "eval", held_out_means, args.inner_steps, iteration)
            print(f"iteration {iteration}: held-out score {scores[0]:.1f} +- {errors[0]:.1f} before adaptation, "
                  f"{scores[-1]:.1f} +- {errors[-1]:.1f} after {args.inner_steps} inner step(s)")
        if (args.checkpoint_every and iteration % args.checkpoint_every == 0) or iteration == args.num_iterations:
            rng = (random.getstate(), np.random.get_state(), torch.get_rng_state(), [g.bit_generator.state for g in
                   generators], torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [])
            torch.save({script: asdict(args), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "loop": (iteration, global_step, rng)}, checkpoint_path + ".tmp")
            os.replace(checkpoint_path + ".tmp", checkpoint_path)  # a kill mid-write leaves the last one whole

    # final evaluation after 0..K inner steps, paired with the random-heuristic bot on the same chemistries or episodes
    train_time, eval_steps = time.time() - start_time, max(args.inner_steps, args.eval_inner_steps or 0)
    tasks, items, envs_of_size = ((test_chemistries, None, {args.num_test_tasks: test_envs}) if eval_set is None
                                  else (eval_set["chemistries"], eval_set["items"], {}))
    try:
        task_means, heuristic = final_scores(args, model, params, envs_of_size, tasks, items, eval_steps, device)
    except FloatingPointError as error:
        stop(3, f"{error} in the final evaluation: the run diverged; lower --outer-lr or --inner-lr")
    scores, errors = log_evaluation(writer, "eval" if eval_set is None else "eval_set", task_means, args.inner_steps,
                                    args.num_iterations)
    post, pre = task_means[args.inner_steps], task_means[0]
    (bot, bot_sem), (margin, margin_sem) = (alchemy_env.mean_and_sem(x) for x in (heuristic, post - heuristic))
    print(f"{'held-out chemistries' if eval_set is None else 'evaluation episodes'}, score after 0..{eval_steps} "
          f"inner steps: {', '.join(f'{s:.1f} +- {e and round(e, 1)}' for s, e in zip(scores, errors))}")
    print(f"random-heuristic bot on the same ones: {bot:.1f}; after {args.inner_steps} step(s) minus the bot: "
          f"{margin:+.1f} +- {margin_sem and round(margin_sem, 1)} (paired)")
    summary = {"args": asdict(args), "iterations": args.num_iterations, "env_steps": global_step,
               "train_episodes": global_step // alchemy_env.EPISODE_STEPS, "eval_set": args.eval_set,
               "pre_adaptation_score": scores[0], "post_adaptation_score": scores[args.inner_steps],
               "adaptation_gain": scores[args.inner_steps] - scores[0], "score_after_steps": scores,
               "score_sem_after_steps": errors, "heuristic_score": bot, "heuristic_score_sem": bot_sem,
               "post_minus_heuristic": margin, "post_minus_heuristic_sem": margin_sem, "train_time_s": train_time,
               "wall_time_s": time.time() - start_time, "sps": global_step / train_time if global_step else None}
    if eval_set is None:
        summary["test_chemistry_seeds"] = test_chemistries["seed"].tolist()
    else:  # paired by episode with the published agents (and with the bot, on the same items)
        references, reference_sems, differences = alchemy_env.compare_with_agents(post, heuristic)
        summary.update(eval_episodes=len(post), reference_scores=references, reference_score_sems=reference_sems,
                       post_minus_reference=differences, post_minus_pre=list(alchemy_env.mean_and_sem(post - pre)),
                       pre_minus_reference=alchemy_env.compare_with_agents(pre, heuristic)[2])
        for agent, (difference, _) in differences.items():
            writer.add_scalar(f"eval_set/reference_{agent}", references[agent], args.num_iterations)
            writer.add_scalar(f"eval_set/post_minus_{agent}", difference, args.num_iterations)
        print(f"V-MPO (dm_alchemy's baseline) on them: {references['baseline']:.2f}; after {args.inner_steps} step(s) "
              f"minus it: {differences['baseline'][0]:+.2f} +- {differences['baseline'][1] or 0:.2f} (paired)")
    if args.save_model:
        summary["model_path"] = f"{run_dir}/{args.exp_name}.cleanrl_model"
        torch.save(model.state_dict(), summary["model_path"])
        print(f"model saved to {summary['model_path']}")
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"summary: {run_dir}/summary.json")
    envs.close()
    test_envs.close()
    writer.close()
