# MAML-TRPO on the MAML paper's own tasks: 2D point navigation, HalfCheetah-Vel and -Dir. Docs: docs/maml_trpo.md
"""MAML-TRPO (Finn et al. 2017, Algorithm 3 with the TRPO meta-optimizer of Sec. 5.3), continuous actions.

Each meta-iteration, for all tasks of a meta-batch at once:
  1. sample episodes of every task with the meta-parameters theta (a Gaussian policy);
  2. adapt: theta'_i = theta - alpha * grad L_in(theta) (the paper's Eq. 1), L_in the policy-gradient loss of the
     task's episodes (ProMP's LVC form) with a per-task linear baseline; N steps, fresh episodes before each;
  3. sample validation episodes with every theta'_i;
  4. a TRPO step on theta (Schulman et al. 2015): minimise the surrogate -mean_i E[pi_theta'_i(a|s) / pi_old(a|s) A]
     subject to mean_i KL(pi_old || pi_theta'_i) <= max_kl, both through the inner steps: conjugate gradient on the
     KL's Hessian-vector products of some tasks gives the direction, scaled to the bound, shrunk until it improves.
--inner-steps 0 trains the paper's "pretrained" multi-task policy (TRPO, no adaptation); --see-task its oracle.
"""

import importlib.util
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import Literal

import gymnasium
import numpy as np
import torch
import torch.nn as nn
import tyro
from torch.func import functional_call, grad, grad_and_value, vjp, vmap
from torch.utils.tensorboard import SummaryWriter

# The paper's settings, from cbfinn/maml_rl's maml_examples/: maml_trpo_point.py (ICML run trpomaml1_fbs20_mbs20),
# cluster_maml_trpo_cheetah.py with the checkpoints that test_maml_cheetah.py (maml1_fbs10_mbs40_flr_0.1_mlr0.01,
# itr 475) and test_maml_cheetah_direc.py (maml1_fbs20_mbs40_flr_0.1_mlr0.02, itr 100) load.
PAPER = {
    "point-nav": dict(num_iterations=100, meta_batch_size=20, episodes_per_task=20, horizon=100, inner_lr=0.5,
                      max_kl=0.01),
    "cheetah-vel": dict(num_iterations=475, meta_batch_size=40, episodes_per_task=10, horizon=200, inner_lr=0.1,
                        max_kl=0.01),
    "cheetah-dir": dict(num_iterations=100, meta_batch_size=40, episodes_per_task=20, horizon=200, inner_lr=0.1,
                        max_kl=0.02),
}

@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment"""
    seed: int = 1
    """seed of the experiment (training tasks, actions, network initialisation)"""
    track: bool = False
    """if toggled, track the run with Weights and Biases (the TensorBoard logs synced; needs wandb)"""
    wandb_project_name: str = "meta-rl"
    """the wandb's project name"""
    wandb_entity: str | None = None
    """the entity (team) of wandb's project (None: wandb's default entity)"""
    env: Literal["point-nav", "cheetah-vel", "cheetah-dir"] = "point-nav"
    """the task family; flags below with default None take its value in the paper (cbfinn/maml_rl, see PAPER)"""
    see_task: bool = False
    """if toggled, the observation includes the task (goal, velocity or direction): the paper's oracle"""
    num_iterations: int | None = None
    """meta-iterations (None: the paper's, 100 point-nav and cheetah-dir, 475 cheetah-vel)"""
    meta_batch_size: int | None = None
    """tasks per meta-iteration (None: the paper's, 20 point-nav, 40 cheetah)"""
    episodes_per_task: int | None = None
    """episodes per task for each inner step and for the validation (None: the paper's, 20; 10 cheetah-vel)"""
    horizon: int | None = None
    """episode length in env steps (None: the paper's, 100 point-nav, 200 cheetah; the gym convention: 100)"""
    frame_skip: int = 1
    """cheetah: MuJoCo steps of 0.01 s per env step (1: the paper's rllab; 5: HalfCheetah-v5's, the gym convention)"""
    inner_steps: int = 1
    """N, inner policy-gradient steps in training (0: no adaptation, the paper's pretrained multi-task policy)"""
    inner_lr: float | None = None
    """alpha, the inner SGD step size (None: the paper's, 0.5 point-nav, 0.1 cheetah)"""
    first_order: bool = False
    """if toggled, FOMAML: the meta-gradient ignores the inner step's dependence on theta"""
    max_kl: float | None = None
    """TRPO's bound on the adapted policies' mean KL per step (None: the paper's, 0.02 cheetah-dir, else 0.01)"""
    fisher_fraction: float = 0.25
    """share of the tasks, drawn each step, whose KL's Hessian CG uses: TRPO's subsampled Fisher (1.0: rllab's, all)"""
    gamma: float = 0.99
    """the discount factor gamma"""
    hidden_size: int = 100
    """width of the policy's two ReLU hidden layers (the paper's 100)"""
    num_test_tasks: int = 40
    """held-out test tasks (the paper's 40)"""
    eval_inner_steps: int = 3
    """K: the evaluation measures the return after 0..K inner steps (the paper's 3)"""
    save_model: bool = False
    """if toggled, save the meta-parameters to runs/{run_name}/{exp_name}.cleanrl_model"""
    load_model: str | None = None
    """a saved {exp_name}.cleanrl_model to start from (None: a random initialisation); --num-iterations 0 scores it"""
    checkpoint_every: int = 10
    """write runs/{run_name}/checkpoint.pt every this many iterations and after the last (0: after the last only)"""
    resume: str | None = None
    """continue the run in this folder (runs/{run_name}) from its checkpoint, with its own flags (None: a new run)"""
    torch_threads: int = 1
    """torch's CPU threads (1: runs side by side on few cores do not thrash; docs/runs.md)"""

class PointNav:
    """The paper's 2D navigation (cbfinn/maml_rl point_env_randgoal.py under rllab's normalize), env i with goal
    tasks[i]: start (0, 0), goals U[-0.5, 0.5]^2, a move of 0.1 * clip(action, -1, 1), reward -||position - goal||
    (Euclidean as the code; the paper's text says squared), done once both |dx| and |dy| < 0.01."""
    obs_dim, action_dim, task_dim = 2, 2, 2
    def sample_tasks(self, count, rng):
        return rng.uniform(-0.5, 0.5, (count, 2))
    def reset(self, tasks, rng):
        self.goals, self.positions = tasks, np.zeros((len(tasks), 2))
        return self.positions.copy()
    def step(self, actions):
        self.positions = self.positions + 0.1 * np.clip(actions, -1.0, 1.0)
        offset = self.positions - self.goals
        return self.positions.copy(), -np.linalg.norm(offset, axis=-1), np.all(np.abs(offset) < 0.01, axis=-1)

class Cheetah:
    """HalfCheetah-v5 (its XML, reset, observation and velocity v) with the paper's rewards (rllab's
    half_cheetah_env_rand*.py): Vel -|v - goal|, goal U[0, 2]; Dir dir * v, dir +-1; both - 0.05 * sum(a^2).
    All envs advance together, one mujoco.rollout call per env step (benchmark/trpo_speed.py: the fastest)."""
    obs_dim, action_dim, task_dim = 17, 6, 1
    def __init__(self, kind: str, frame_skip: int):
        import mujoco.rollout  # here, so that point-nav runs without it
        xml = os.path.join(os.path.dirname(gymnasium.__file__), "envs", "mujoco", "assets", "half_cheetah.xml")
        self.model, self.kind, self.frame_skip = mujoco.MjModel.from_xml_path(xml), kind, frame_skip
        self.runner, self.data = mujoco.rollout.Rollout(nthread=1), [mujoco.MjData(self.model)]
        self.state_size = mujoco.mj_stateSize(self.model, mujoco.mjtState.mjSTATE_FULLPHYSICS)
        self.qpos = slice(1, 1 + self.model.nq)  # a full-physics state is (time, qpos, qvel, ...)
        self.qvel = slice(1 + self.model.nq, 1 + self.model.nq + self.model.nv)
    def sample_tasks(self, count, rng):
        return rng.uniform(0.0, 2.0, (count, 1)) if self.kind == "cheetah-vel" else rng.choice([-1.0, 1.0], (count, 1))
    def reset(self, tasks, rng):  # HalfCheetah-v5's: qpos0 + U(-0.1, 0.1), qvel 0.1 * N(0, 1)
        self.tasks, self.state = tasks[:, 0], np.zeros((len(tasks), self.state_size))
        self.state[:, self.qpos] = self.model.qpos0 + rng.uniform(-0.1, 0.1, (len(tasks), self.model.nq))
        self.state[:, self.qvel] = 0.1 * rng.standard_normal((len(tasks), self.model.nv))
        return self.observation()
    def observation(self):  # HalfCheetah-v5's: qpos without the root's x, and qvel
        return np.concatenate([self.state[:, self.qpos][:, 1:], self.state[:, self.qvel]], axis=1)
    def step(self, actions):
        actions = np.clip(actions, -1.0, 1.0)  # rllab's normalize: the ctrl range [-1, 1]
        x_before = self.state[:, self.qpos.start].copy()
        controls = np.repeat(actions[:, None], self.frame_skip, axis=1)
        states, _ = self.runner.rollout([self.model] * len(actions), self.data, self.state, controls,
                                        nstep=self.frame_skip)
        self.state = states[:, -1]
        velocity = (self.state[:, self.qpos.start] - x_before) / (self.frame_skip * self.model.opt.timestep)
        progress = -np.abs(velocity - self.tasks) if self.kind == "cheetah-vel" else self.tasks * velocity
        return self.observation(), progress - 0.05 * np.sum(actions**2, axis=1), np.zeros(len(actions), dtype=bool)

def layer_init(layer):  # rllab's (TensorFlow's) Glorot-uniform weights and zero biases
    torch.nn.init.xavier_uniform_(layer.weight)
    torch.nn.init.zeros_(layer.bias)
    return layer

class Policy(nn.Module):
    """A Gaussian policy: a 2-layer ReLU MLP for the mean, a learned state-independent log-std (the paper's)."""
    def __init__(self, obs_dim: int, action_dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(layer_init(nn.Linear(obs_dim, hidden)), nn.ReLU(),
                                 layer_init(nn.Linear(hidden, hidden)), nn.ReLU(),
                                 layer_init(nn.Linear(hidden, action_dim)))
        self.log_std = nn.Parameter(torch.zeros(action_dim))  # rllab's initial std 1
    def forward(self, obs):
        return self.net(obs), self.log_std.expand(obs.shape[:-1] + self.log_std.shape)

def gaussian_log_prob(mean, log_std, actions):
    """log N(actions; mean, diag(exp(log_std))^2), summed over the action's dimensions."""
    return (-0.5 * ((actions - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

def gaussian_kl(mean_p, log_std_p, mean_q, log_std_q):
    """KL(p || q) of two diagonal Gaussians, summed over the action's dimensions."""
    variance_ratio_term = (torch.exp(2 * log_std_p) + (mean_p - mean_q) ** 2) / (2 * torch.exp(2 * log_std_q))
    return (log_std_q - log_std_p + variance_ratio_term - 0.5).sum(-1)

# The losses take one task's batch: obs, actions, advantages and mask (0 after an episode's end); vmap maps over tasks.
def inner_loss(model, params, batch):
    """ProMP's LVC surrogate -mean_t pi(a_t|s_t) / stopgrad(pi(a_t|s_t)) * A_t: the policy gradient's value and
    gradient, and a Hessian with the sampling distribution's term, which MAML's second-order meta-gradient needs."""
    logp = gaussian_log_prob(*functional_call(model, params, (batch["obs"],)), batch["actions"])
    ratio = torch.exp(logp - logp.detach())  # 1 in value; its gradient is the score function
    return -(ratio * batch["advantages"] * batch["mask"]).sum() / batch["mask"].sum()

def inner_update(model, params, batch, inner_lr: float, first_order: bool = False):
    """One inner SGD step on the policy-gradient loss (Eq. 1); FOMAML stops the gradient through the step's gradient."""
    grads = grad(inner_loss, argnums=1)(model, params, batch)
    if first_order:
        grads = {name: g.detach() for name, g in grads.items()}
    return {name: params[name] - inner_lr * grads[name] for name in params}

def adapted_outputs(model, params, inner_batches, validation_obs, inner_lr: float, first_order: bool):
    """Every task's adapted policy theta'_i(theta) on its validation observations: (mean, log_std), each (tasks, n,
    action_dim). The TRPO step's objectives depend on theta only through these."""
    def task_outputs(params, inner_batches, obs):
        for inner_batch in inner_batches:
            params = inner_update(model, params, inner_batch, inner_lr, first_order)
        return functional_call(model, params, (obs,))
    return vmap(task_outputs, in_dims=(None, 0, 0))(params, inner_batches, validation_obs)

def step_weights(mask):  # each valid step's weight in a mean over its task's steps, then over tasks: (tasks, n, 1)
    return (mask / mask.sum(1, keepdim=True) / len(mask)).unsqueeze(-1)

def surrogate_and_kl(outputs, validation, old):
    """TRPO's two objectives, means over tasks: the surrogate loss -E[pi_theta'_i(a|s) / pi_old(a|s) * A] and the
    KL(pi_old || pi_theta'_i) of the validation episodes. old: (mean, log_std) of the policies that sampled them."""
    weights = step_weights(validation["mask"]).squeeze(-1)
    log_ratio = gaussian_log_prob(*outputs, validation["actions"]) - gaussian_log_prob(*old, validation["actions"])
    surrogate = -(torch.exp(log_ratio) * validation["advantages"] * weights).sum()
    return surrogate, (gaussian_kl(*old, *outputs) * weights).sum()

def conjugate_gradient(matrix_vector_product, b, iterations: int, tolerance: float = 1e-10):
    """Solves A x = b, A symmetric positive-definite given as x -> A x (Nocedal & Wright, Alg. 5.2): x, b - A x."""
    x, residual = torch.zeros_like(b), b.clone()
    direction, residual_norm = b.clone(), b @ b
    for _ in range(iterations):
        product = matrix_vector_product(direction)
        step = residual_norm / (direction @ product)
        x = x + step * direction
        residual = residual - step * product
        new_residual_norm = residual @ residual
        if new_residual_norm < tolerance:
            break
        direction = residual + new_residual_norm / residual_norm * direction
        residual_norm = new_residual_norm
    return x, residual

def linearise(outputs_of, theta, mask, damping: float, fisher_tasks=None):
    """The adapted policies' outputs at theta, u -> J^T u (J their Jacobian in theta) and the KL's Hessian-vector
    product v -> F v + damping * v. At theta the adapted policies are the old ones, so the KL's Hessian is exactly
    J^T M J, M the Gaussian KL's Hessian in the outputs: 1 / sigma^2 per mean, 2 per log-std, times the step's weight.
    Both graphs are built once for all CG iterations; J v is reverse mode on the linear map u -> J^T u. fisher_tasks
    (indices; None: all) subsamples F: the mean KL of those tasks alone, with outputs_of(theta, fisher_tasks)."""
    outputs, output_vjp = vjp(outputs_of, theta)
    subset = fisher_tasks is not None and len(fisher_tasks) < len(mask)  # the subset's tasks, a graph of their own
    fisher_outputs, fisher_vjp = vjp(lambda v: outputs_of(v, fisher_tasks), theta) if subset else (outputs, output_vjp)
    _, output_jvp = vjp(lambda u: fisher_vjp(u)[0], tuple(torch.zeros_like(x) for x in fisher_outputs))
    weights, variance = step_weights(mask[fisher_tasks] if subset else mask), torch.exp(2 * fisher_outputs[1])

    def fisher_product(vector):
        d_mean, d_log_std = output_jvp(vector)[0]
        return fisher_vjp((weights * d_mean / variance, weights * 2 * d_log_std))[0] + damping * vector
    return outputs, output_vjp, fisher_product

def meta_gradient(outputs, output_vjp, validation, old):
    """The surrogate loss and its gradient g = J^T dL/d(outputs) in theta: MAML's meta-gradient (Eq. 3)."""
    output_gradient, loss = grad_and_value(lambda outputs: surrogate_and_kl(outputs, validation, old)[0])(outputs)
    return loss, output_vjp(output_gradient)[0]

def trpo_step(outputs_of, theta, validation, old, max_kl: float, fisher_tasks=None, cg_iters=10, damping=1e-5,
              backtrack_ratio=0.8, max_backtracks=15):
    """One TRPO step on the flat vector theta (outputs_of, fisher_tasks: see linearise): the new vector (theta when
    the line search accepts no step) and diagnostics; the defaults are rllab's ConjugateGradientOptimizer's."""
    outputs, output_vjp, fisher_product = linearise(outputs_of, theta, validation["mask"], damping, fisher_tasks)
    loss_before, loss_gradient = meta_gradient(outputs, output_vjp, validation, old)
    direction, residual = conjugate_gradient(fisher_product, -loss_gradient, cg_iters)
    curvature = direction @ (-loss_gradient - residual)  # d'Fd = d'(b - r): KL(theta + s d) ~ s^2 d'Fd / 2
    full_step = torch.sqrt(2 * max_kl / curvature) * direction if curvature > 0 else torch.zeros_like(theta)
    stats = {"surrogate_before": loss_before.item(), "surrogate_after": loss_before.item(), "kl": 0.0,
             "backtracks": max_backtracks, "accepted": 0.0}
    with torch.no_grad():  # torch.func.grad inside still differentiates the inner steps
        for backtrack in range(max_backtracks):
            candidate = theta + backtrack_ratio**backtrack * full_step
            loss, kl = surrogate_and_kl(outputs_of(candidate), validation, old)
            if loss < loss_before and kl <= max_kl:  # an improved surrogate within the KL bound
                stats.update(surrogate_after=loss.item(), kl=kl.item(), backtracks=backtrack, accepted=1.0)
                return candidate, stats
    return theta, stats

def as_params(vector, like):  # the flat vector as a {name: tensor} dict of like's shapes
    parts = vector.split([p.numel() for p in like.values()])
    return {name: part.view_as(p) for (name, p), part in zip(like.items(), parts)}

def rollout(env, model, task_params, tasks, episodes: int, args, env_rng):
    """`episodes` episodes of every task in lockstep for the full horizon, each task with its own parameters
    (a leading task dim): the task-batched samples and per-episode statistics."""
    horizon, num_envs = args.horizon, len(tasks) * episodes
    env_tasks = np.repeat(tasks, episodes, axis=0)
    obs_np = env.reset(env_tasks, env_rng)
    obs = torch.zeros((horizon, num_envs, env.obs_dim + env.task_dim * args.see_task))
    actions = torch.zeros((horizon, num_envs, env.action_dim))
    rewards = np.zeros((horizon, num_envs))
    alive = np.ones((horizon + 1, num_envs), dtype=bool)  # alive[t]: the episode runs at step t
    with torch.no_grad():
        for t in range(horizon):
            obs[t] = torch.from_numpy(np.concatenate([obs_np, env_tasks], 1) if args.see_task else obs_np)
            task_obs = obs[t].view(len(tasks), episodes, -1)
            mean, log_std = vmap(functional_call, in_dims=(None, 0, 0))(model, task_params, (task_obs,))
            if not torch.isfinite(mean).all():
                stop(3, "non-finite action means: the run diverged; lower --max-kl or --inner-lr")
            actions[t] = (mean + log_std.exp() * torch.randn_like(mean)).flatten(0, 1)
            obs_np, rewards[t], done = env.step(actions[t].numpy().astype(np.float64))
            alive[t + 1] = alive[t] & ~done
    mask = torch.from_numpy(alive[:-1]).float()
    def by_task(x):  # (T, tasks * episodes, ...) -> (tasks, episodes, T, ...)
        return x.reshape((horizon, len(tasks), episodes) + x.shape[2:]).movedim(0, 2)
    obs, actions, task_mask = by_task(obs), by_task(actions), by_task(mask)
    rewards = by_task(torch.from_numpy(rewards)) * task_mask
    advantages = compute_advantages(obs, rewards, task_mask, args.gamma)
    batch = {"obs": obs.reshape(len(tasks), episodes * horizon, -1), "actions": actions.flatten(1, 2),
             "advantages": advantages.reshape(len(tasks), -1), "mask": task_mask.reshape(len(tasks), -1)}
    stats = {"returns": rewards.sum(-1).numpy(), "env_steps": int(mask.sum())}
    return batch, stats

def compute_advantages(obs, rewards, mask, gamma: float):
    """The discounted return minus the paper's per-task linear feature baseline (rllab's LinearFeatureBaseline: obs
    clipped to +-10, obs^2, t/100 and its square and cube, 1; ridge 1e-5), normalised per task (rllab's center_adv).
    obs (tasks, episodes, T, obs_dim); rewards, mask (tasks, episodes, T)."""
    tasks, episodes, horizon = rewards.shape
    rewards, mask, obs = rewards.double(), mask.double(), obs.double().clamp(-10, 10)
    steps = torch.arange(horizon, dtype=torch.float64)
    steps_ahead = steps[None, :] - steps[:, None]  # u - t
    discounts = torch.where(steps_ahead >= 0, gamma ** steps_ahead.clamp(min=0.0), 0.0)
    returns = rewards @ discounts.T  # sum over u >= t of gamma^(u - t) r_u
    time_feature = (steps / 100).expand(tasks, episodes, horizon).unsqueeze(-1)
    features = torch.cat([obs, obs**2, time_feature, time_feature**2, time_feature**3, torch.ones_like(time_feature)],
                         dim=-1).reshape(tasks, episodes * horizon, -1)
    weighted = features * mask.reshape(tasks, -1, 1)
    gram = weighted.transpose(1, 2) @ features + 1e-5 * torch.eye(features.shape[-1], dtype=torch.float64)
    coef = torch.linalg.solve(gram, weighted.transpose(1, 2) @ returns.reshape(tasks, -1, 1))
    values = (features @ coef).reshape(tasks, episodes, horizon) * mask
    advantages = returns - values  # rllab's GAE with lambda 1
    count = mask.sum(dim=(1, 2), keepdim=True)
    mean = (advantages * mask).sum(dim=(1, 2), keepdim=True) / count
    std = (((advantages - mean) ** 2 * mask).sum(dim=(1, 2), keepdim=True) / count).sqrt()
    return ((advantages - mean) / (std + 1e-8) * mask).float()

def sample_and_adapt(env, model, params, tasks, inner_lrs, episodes: int, args, env_rng):
    """Steps 1-3 for every task at once, without a graph: the batches of theta_0..theta_N (step k of size
    inner_lrs[k]), their statistics, and theta_N (with a leading task dim)."""
    task_params = {name: p.detach().expand((len(tasks),) + p.shape) for name, p in params.items()}
    rollouts = [rollout(env, model, task_params, tasks, episodes, args, env_rng)]  # theta_0's (batch, stats)
    for inner_lr in inner_lrs:  # theta_k+1 from theta_k's batch, then theta_k+1's rollout
        task_params = vmap(inner_update, in_dims=(None, 0, 0, None))(model, task_params, rollouts[-1][0], inner_lr)
        rollouts.append(rollout(env, model, task_params, tasks, episodes, args, env_rng))
    batches, stats = zip(*rollouts)
    return batches, stats, task_params

def evaluate(env, model, params, test_tasks, args, env_rng):
    """The paper's test (test_maml_*.py): returns after 0..K steps of size inner_lr, then inner_lr / 2, each on
    4,000 fresh env steps per task (40 episodes of 100 steps, 20 of 200)."""
    inner_lrs = [args.inner_lr / (2 if step else 1) for step in range(args.eval_inner_steps)]
    stats = sample_and_adapt(env, model, params, test_tasks, inner_lrs, max(1, 4000 // args.horizon), args, env_rng)[1]
    task_returns = np.array([s["returns"].mean(1) for s in stats])  # (K + 1, test tasks)
    return task_returns.mean(1), task_returns.std(1, ddof=1) / np.sqrt(len(test_tasks))

def stop(code: int, message: str):
    print(f"error: {message}", file=sys.stderr)  # bad input (exit code 2) or a diverged run (3): one line
    sys.exit(code)

def check(args: Args) -> None:
    """Values that would crash or silently misbehave: exit code 2 and one line naming the flag."""
    rules = [  # (flag, the value is fine, what it must be); nan fails every comparison
        ("seed", 0 <= args.seed < 2**32, "in [0, 2**32)"),
        *[(flag, 0 < getattr(args, flag) < math.inf, "a finite number > 0") for flag in ("inner_lr", "max_kl")],
        ("gamma", 0 <= args.gamma <= 1, "in [0, 1]"),
        ("fisher_fraction", 0 < args.fisher_fraction <= 1, "in (0, 1]"),
        *[(flag, getattr(args, flag) > 0, "> 0") for flag in ("meta_batch_size", "episodes_per_task", "horizon",
          "frame_skip", "hidden_size", "torch_threads")],
        ("num_test_tasks", args.num_test_tasks > 1, "> 1 (the standard error needs two)"),
        *[(flag, getattr(args, flag) >= 0, ">= 0") for flag in
          ("num_iterations", "inner_steps", "eval_inner_steps", "checkpoint_every")],
        ("frame_skip", args.frame_skip == 1 or args.env != "point-nav", "1 with --env point-nav"),
        ("env", args.env == "point-nav" or importlib.util.find_spec("mujoco") is not None,
         "point-nav without mujoco (pip install -r requirements-mujoco.txt)"),
        ("exp_name", args.exp_name != "" and "/" not in args.exp_name, "a name without '/'"),
        *[(flag, args.track or getattr(args, flag) == getattr(Args, flag), "left alone without --track")
          for flag in ("wandb_project_name", "wandb_entity")],
        ("track", not args.track or importlib.util.find_spec("wandb") is not None, "given with wandb installed"),
        ("load_model", args.load_model is None or os.path.isfile(args.load_model), "an existing file"),
    ]
    for flag, fine, must in rules:
        if not fine:
            stop(2, f"--{flag.replace('_', '-')} must be {must}, got {getattr(args, flag)!r}")

def with_paper_values(args: Args) -> Args:
    """args with every flag left at None set to its env's paper value."""
    return replace(args, **{flag: value for flag, value in PAPER[args.env].items() if getattr(args, flag) is None})

if __name__ == "__main__":
    args, checkpoint = with_paper_values(tyro.cli(Args)), None
    run_dir = f"runs/{args.env}__{args.exp_name}__{args.seed}__{int(time.time())}"
    if args.resume is not None:  # the run's own flags (kept under this script's name) and its loop's state
        script = os.path.basename(__file__)
        given = [f for f, v in asdict(args).items() if v != getattr(with_paper_values(Args()), f)]
        try:  # weights_only=False: the run's own file, holding numpy's RNG states
            checkpoint = torch.load(os.path.join(args.resume, "checkpoint.pt"), map_location="cpu", weights_only=False)
            run_dir, args = args.resume, Args(**checkpoint[script] | {"torch_threads": args.torch_threads})
        except Exception:
            stop(2, f"--resume must be a run folder with a checkpoint.pt of {script}, got {args.resume!r}")
        if set(given) - {"resume", "torch_threads"}:
            stop(2, f"--resume continues a run with its own flags (and --torch-threads), got {given}")
    check(args)
    torch.set_num_threads(args.torch_threads)

    # TRY NOT TO MODIFY: seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    task_rng, env_rng, test_env_rng, fisher_rng = [np.random.default_rng([stream, args.seed]) for stream in range(4)]

    # env setup: one object steps every env of a meta-batch; the held-out tasks are the same in every run (seed 0)
    env = PointNav() if args.env == "point-nav" else Cheetah(args.env, args.frame_skip)
    test_tasks = env.sample_tasks(args.num_test_tasks, np.random.default_rng(0))
    model = Policy(env.obs_dim + env.task_dim * args.see_task, env.action_dim, args.hidden_size)
    if args.load_model is not None and checkpoint is None:
        try:
            model.load_state_dict(torch.load(args.load_model, map_location="cpu"))
        except Exception as error:  # not a file torch.save wrote, or another network
            stop(2, f"--load-model must be a {args.exp_name}.cleanrl_model of this --env, --see-task and "
                    f"--hidden-size, got {args.load_model!r} ({type(error).__name__})")
    params = dict(model.named_parameters())
    generators = (task_rng, env_rng, test_env_rng, fisher_rng)  # with the global ones: every RNG the loop draws from
    global_step, start_iteration, timings = 0, 0, []
    if checkpoint is not None:  # continue where the checkpoint left off
        model.load_state_dict(checkpoint["model"])
        start_iteration, global_step, timings, rng = checkpoint["loop"]
        random.setstate(rng[0])
        np.random.set_state(rng[1])
        torch.set_rng_state(rng[2])
        for generator, state in zip(generators, rng[3]):
            generator.bit_generator.state = state
    else:
        try:
            os.makedirs(run_dir)
        except OSError as error:  # a file named runs, a folder this process cannot write in
            stop(2, f"cannot create the run folder {run_dir} ({error.strerror}): runs/ must be a writable folder")
    if args.track:
        import wandb
        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True, config=vars(args),
                   name=os.path.basename(run_dir), id=os.path.basename(run_dir), resume="allow", save_code=True)
    writer = SummaryWriter(run_dir, purge_step=start_iteration + 1 if checkpoint is not None else None)
    if checkpoint is None:
        writer.add_text("hyperparameters", "|param|value|\n|-|-|\n"
                        + "\n".join(f"|{key}|{value}|" for key, value in vars(args).items()))

    start_time, checkpoint_path = time.time(), os.path.join(run_dir, "checkpoint.pt")
    for iteration in range(start_iteration + 1, args.num_iterations + 1):
        iteration_start = time.time()
        tasks = env.sample_tasks(args.meta_batch_size, task_rng)
        # ALGO LOGIC: sample, adapt N times and sample validation episodes, for all tasks at once
        batches, stats, adapted = sample_and_adapt(env, model, params, tasks, [args.inner_lr] * args.inner_steps,
                                                   args.episodes_per_task, args, env_rng)
        sampling_time = time.time() - iteration_start

        # ALGO LOGIC: the TRPO meta-step (batches[-1] holds the validation episodes of the adapted policies)
        old = vmap(functional_call, in_dims=(None, 0, 0))(model, adapted, (batches[-1]["obs"],))  # pi_old

        def outputs_of(vector, tasks=slice(None)):  # of all the meta-batch's tasks, or of some (indices)
            inner = [{key: value[tasks] for key, value in batch.items()} for batch in batches[:-1]]
            return adapted_outputs(model, as_params(vector, params), inner, batches[-1]["obs"][tasks],
                                   args.inner_lr, args.first_order)
        theta = nn.utils.parameters_to_vector(params.values()).detach()
        fisher_count = max(1, round(args.fisher_fraction * len(tasks)))  # TRPO's subsampled Fisher, by tasks
        fisher_tasks = torch.from_numpy(fisher_rng.permutation(len(tasks))[:fisher_count])
        new_theta, step_stats = trpo_step(outputs_of, theta, batches[-1], old, args.max_kl, fisher_tasks)
        if not math.isfinite(step_stats["surrogate_before"]):
            stop(3, f"non-finite surrogate at iteration {iteration}: the run diverged; lower --max-kl or --inner-lr")
        nn.utils.vector_to_parameters(new_theta, params.values())
        env_steps = sum(s["env_steps"] for s in stats)
        global_step += env_steps
        timings.append({"iteration": time.time() - iteration_start, "sampling": sampling_time,
                        "trpo": time.time() - iteration_start - sampling_time})

        # TRY NOT TO MODIFY: record rewards for plotting purposes; the x axis is the meta-iteration, as in the paper
        writer.add_scalar("charts/pre_adaptation_return", stats[0]["returns"].mean(), iteration)
        writer.add_scalar("charts/post_adaptation_return", stats[-1]["returns"].mean(), iteration)
        writer.add_scalar("charts/policy_std", model.log_std.exp().mean().item(), iteration)
        writer.add_scalar("charts/env_steps", global_step, iteration)
        for name, seconds in timings[-1].items():
            writer.add_scalar(f"charts/{name}_time", seconds, iteration)
        writer.add_scalar("charts/SPS", int(env_steps / timings[-1]["iteration"]), iteration)
        for name, value in step_stats.items():
            writer.add_scalar(f"losses/{name}", value, iteration)
        if iteration % 10 == 0 or iteration in (1, args.num_iterations):
            print(f"iteration {iteration}/{args.num_iterations} global_step={global_step} pre/post-adaptation return "
                  f"{stats[0]['returns'].mean():.1f} -> {stats[-1]['returns'].mean():.1f} "
                  f"SPS={int(env_steps / timings[-1]['iteration'])}")
        if (args.checkpoint_every and iteration % args.checkpoint_every == 0) or iteration == args.num_iterations:
            rng = (random.getstate(), np.random.get_state(), torch.get_rng_state(), [g.bit_generator.state for g in
                   generators])
            torch.save({os.path.basename(__file__): asdict(args), "model": model.state_dict(),
                        "loop": (iteration, global_step, timings, rng)}, checkpoint_path + ".tmp")
            os.replace(checkpoint_path + ".tmp", checkpoint_path)  # a kill mid-write leaves the last one whole

    # final evaluation on the held-out test tasks, after 0..K inner steps (the paper's Figs. 4-5 and its table)
    train_time = time.time() - start_time
    returns, standard_errors = evaluate(env, model, params, test_tasks, args, test_env_rng)
    print(f"held-out at iteration {args.num_iterations}, return after 0..{args.eval_inner_steps} inner steps: "
          + " -> ".join(f"{value:.1f}" for value in returns))
    summary = {"args": asdict(args), "iterations": args.num_iterations, "env_steps": global_step,
               "return_after_steps": returns.tolist(), "return_after_steps_se": standard_errors.tolist(),
               "test_tasks": test_tasks.tolist(), "wall_time_s": time.time() - start_time, "train_time_s": train_time,
               "sps": global_step / train_time if global_step else None}
    for name in ("iteration", "sampling", "trpo"):
        summary[f"median_{name}_time_s"] = float(np.median([t[name] for t in timings])) if timings else None
    if args.save_model:
        summary["model_path"] = f"{run_dir}/{args.exp_name}.cleanrl_model"
        torch.save(model.state_dict(), summary["model_path"])
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"summary: {run_dir}/summary.json")
    writer.close()
