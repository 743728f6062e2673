# MAML with a vanilla-policy-gradient inner loop on nav_env's 2D navigation tasks. Docs: docs/maml_vpg.md
"""MAML (Finn et al. 2017, Algorithm 3) with a policy-gradient inner loop, as studied by Duan & Wang.

Each meta-iteration, for all tasks of a meta-batch (goals of nav_env) at once:
  1. sample episodes with the meta-parameters theta_0 = theta;
  2. take N inner steps theta_{k+1} = theta_k - inner_lr * grad L_in(theta_k) (Finn et al.'s Eq. 1), sampling
     fresh episodes with theta_k before each; L_in is ProMP's low-variance curvature (LVC) surrogate;
  3. sample validation episodes with theta_N: their policy-gradient loss L_out(theta_N) is the task's meta-loss;
  4. step theta along the gradient of the summed meta-losses (Eq. 3), differentiated back through all N inner
     steps: it holds their second-order terms, for which LVC's Hessian has the sampling distribution's term.
"""

import importlib.util
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn as nn
import tyro
from torch.utils.tensorboard import SummaryWriter

import nav_env

@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment"""
    seed: int = 1
    """seed of the experiment (training tasks, actions, network initialisation)"""
    cuda: bool = False
    """if toggled, run on the CUDA device (it must be available)"""
    track: bool = False
    """if toggled, track the run with Weights and Biases (the TensorBoard logs synced; needs wandb)"""
    wandb_project_name: str = "meta-rl"
    """the wandb's project name"""
    wandb_entity: str | None = None
    """the entity (team) of wandb's project (None: wandb's default entity)"""
    obstacles: Literal["none", "easy", "medium", "hard"] = "medium"
    """obstacle level of nav_env"""
    targets: Literal["uniform", "random", "narrow"] = "uniform"
    """target (task) distribution the goals are drawn from"""
    see_goal: bool = True
    """if toggled, the observation is (x, y, gx, gy); with --no-see-goal it is (x, y): adaptation finds the goal"""
    collision: Literal["block", "stick", "original"] = "block"
    """block: moves into obstacles are cancelled; stick: an obstacle freezes the agent; original: the papers' env"""
    num_iterations: int = 500
    """the number of meta-iterations (0: only evaluate the initial parameters)"""
    meta_batch_size: int = 8
    """the number of tasks per meta-iteration"""
    episodes_per_task: int = 20
    """episodes sampled per task for each inner step and for the validation (outer) loss"""
    inner_steps: int = 1
    """N, the number of inner policy-gradient steps (fresh episodes before each)"""
    inner_lr: float = 1.0
    """alpha, the inner SGD step size (large: on normalised advantages a small step barely moves the policy)"""
    outer_lr: float = 1e-3
    """beta, the meta (outer) learning rate"""
    outer_optimizer: Literal["sgd", "adam"] = "adam"
    """the meta optimizer (Adam's step ignores the meta-gradient's scale, which grows with N)"""
    gamma: float = 0.99
    """the discount factor gamma"""
    gae_lambda: float = 1.0
    """the lambda of generalised advantage estimation (1.0: the discounted return minus the baseline)"""
    norm_adv: bool = True
    """toggles advantage normalisation per task, which makes --inner-lr independent of the reward's scale"""
    hidden_size: int = 64
    """width of the policy's two tanh hidden layers"""
    max_grad_norm: float = 1.0
    """clip the meta-gradient to this norm (0: no clipping)"""
    eval_every: int = 50
    """evaluate on the held-out test tasks every this many iterations (0: only at the end)"""
    num_test_tasks: int = 16
    """the number of held-out test tasks"""
    test_seed: int = 0
    """seed of the held-out test tasks, apart from --seed so that every run is tested on the same goals"""
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

def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer

class Policy(nn.Module):
    """A categorical policy: observation -> action logits (an MLP with two tanh hidden layers)."""
    def __init__(self, obs_dim: int, num_actions: int, hidden: int, obs_low: np.ndarray, obs_high: np.ndarray):
        super().__init__()
        # Observations are mapped from their Box bounds to [-1, 1]: centred inputs suit tanh layers.
        self.register_buffer("obs_mid", torch.as_tensor((obs_high + obs_low) / 2, dtype=torch.float32))
        self.register_buffer("obs_half_range", torch.as_tensor((obs_high - obs_low) / 2, dtype=torch.float32))
        self.net = nn.Sequential(layer_init(nn.Linear(obs_dim, hidden)), nn.Tanh(),
                                 layer_init(nn.Linear(hidden, hidden)), nn.Tanh(),
                                 layer_init(nn.Linear(hidden, num_actions), std=0.01))
    def forward(self, obs):
        return self.net((obs - self.obs_mid) / self.obs_half_range)

def task_layers(model, task_params):  # each linear layer as task_logits multiplies it: (weight^T, bias), per task
    return [(task_params[f"net.{index}.weight"].transpose(1, 2), task_params[f"net.{index}.bias"].unsqueeze(1))
            for index, layer in enumerate(model.net) if isinstance(layer, nn.Linear)]

def task_logits(model, layers, obs):
    """Every task's own policy on its observations, obs (tasks, n, obs_dim) -> logits (tasks, n, actions), as batched
    matrix products: on a network this small they cost a fraction of vmap(functional_call) (docs/maml_vpg.md)."""
    x = (obs - model.obs_mid) / model.obs_half_range
    for weight_t, bias in layers[:-1]:
        x = torch.tanh(torch.baddbmm(bias, x, weight_t))
    return torch.baddbmm(layers[-1][1], x, layers[-1][0])

# The losses take every task's parameters (a leading task dim) and batch: obs (tasks, n, obs_dim), actions, advantages
# and mask (tasks, n), the mask 0 after an episode's end. They sum the tasks' losses: each task's gradient is its own.
def log_prob(model, task_params, obs, actions):
    logits = task_logits(model, task_layers(model, task_params), obs)
    return torch.log_softmax(logits, -1).gather(-1, actions.unsqueeze(-1)).squeeze(-1)

def inner_loss(model, task_params, batch):
    """ProMP's LVC surrogate -mean_t pi(a_t|s_t) / stopgrad(pi(a_t|s_t)) * A_t: REINFORCE's value and gradient,
    and a Hessian with the term of the sampling distribution that -log pi * A differentiated twice drops."""
    logp = log_prob(model, task_params, batch["obs"], batch["actions"])
    ratio = torch.exp(logp - logp.detach())  # 1 in value; its gradient is the score function
    return -((ratio * batch["advantages"] * batch["mask"]).sum(1) / batch["mask"].sum(1)).sum()

def outer_loss(model, task_params, batch):
    """The vanilla policy-gradient loss -mean_t log pi(a_t|s_t) * A_t of the validation episodes."""
    logp = log_prob(model, task_params, batch["obs"], batch["actions"])
    return -((logp * batch["advantages"] * batch["mask"]).sum(1) / batch["mask"].sum(1)).sum()

def inner_update(model, task_params, batch, inner_lr: float):
    """Every task's inner SGD step on its LVC loss (Finn et al. 2017, Eq. 1), differentiable (create_graph): the
    meta-gradient flows back through the step, second-order terms included."""
    grads = torch.autograd.grad(inner_loss(model, task_params, batch), list(task_params.values()), create_graph=True)
    return {name: p - inner_lr * g for (name, p), g in zip(task_params.items(), grads)}

def rollout(envs, model, task_params, goals, args, device):
    """Every task's args.episodes_per_task episodes in lockstep, each with its task's params: the batch, the stats."""
    tasks, episodes, horizon = len(goals), args.episodes_per_task, nav_env.MAX_EPISODE_STEPS
    obs_np, _ = envs.reset(options={"goals": np.repeat(goals, episodes, axis=0)})
    obs = np.zeros((horizon, tasks * episodes) + envs.single_observation_space.shape, dtype=np.float32)
    logits = torch.zeros((horizon, tasks, episodes, int(envs.single_action_space.n)), device=device)  # by task
    actions = np.zeros((horizon, tasks * episodes), dtype=np.int64)
    rewards = np.zeros((horizon, tasks * episodes), dtype=np.float32)
    alive = np.ones((horizon + 1, tasks * episodes), dtype=bool)  # alive[t]: the episode runs at step t
    gumbel = -torch.rand_like(logits).clamp(min=1e-20).log().neg().log()  # argmax(logits + gumbel) ~ softmax(logits)
    with torch.no_grad():  # sampling needs no graph, not even of the transposed weights
        layers = task_layers(model, task_params)
        for t in range(horizon):
            obs[t] = obs_np
            logits[t] = task_logits(model, layers, torch.from_numpy(obs_np).view(tasks, episodes, -1).to(device))
            actions[t] = (logits[t] + gumbel[t]).argmax(-1).flatten().cpu().numpy()
            obs_np, rewards[t], terminated, truncated, info = envs.step(actions[t])
            alive[t + 1] = ~(terminated | truncated)
    if not torch.isfinite(logits).all():  # the argmax of a NaN is an action all the same: checked once a rollout
        stop(3, "non-finite action logits: the run diverged; lower --outer-lr or --inner-lr")
    def by_task(x):  # numpy (T, tasks * episodes, ...) -> torch (tasks, episodes, T, ...)
        return torch.from_numpy(x).reshape((horizon, tasks, episodes) + x.shape[2:]).movedim(0, 2)
    obs, actions, rewards, task_mask = by_task(obs), by_task(actions), by_task(rewards), by_task(alive[:-1]).float()
    normalised_obs = (obs - model.obs_mid.cpu()) / model.obs_half_range.cpu()  # baseline features in [-1, 1]
    advantages = compute_advantages(normalised_obs, rewards, task_mask, args.gamma, args.gae_lambda, args.norm_adv)
    batch = {"obs": obs.reshape(tasks, episodes * horizon, -1), "actions": actions.reshape(tasks, -1),
             "advantages": advantages.reshape(tasks, -1), "mask": task_mask.reshape(tasks, -1)}
    stats = {"returns": rewards.sum(-1).numpy(), "distances": info["distance"].reshape(tasks, episodes),
             "reached": terminated.reshape(tasks, episodes),  # (tasks, episodes); an ended episode keeps its flag
             "env_steps": int(alive[:-1].sum())}
    return {k: v.to(device) for k, v in batch.items()}, stats

def discount_matrix(rate: float, horizon: int) -> torch.Tensor:
    """M[t, u] = rate^(u - t) for u >= t, else 0; x @ M.T sums the discounted future of x at every t."""
    steps = torch.arange(horizon, dtype=torch.float64)
    return torch.triu(rate ** (steps[None, :] - steps[:, None]).clamp(min=0))

def linear_baseline(features, returns, mask, reg: float = 1e-5):
    """Per-task ridge regression of returns (tasks, n) on features (tasks, n, F): the MAML paper's baseline."""
    weighted = features * mask.unsqueeze(-1)
    gram = weighted.transpose(1, 2) @ features + reg * torch.eye(features.shape[-1], dtype=features.dtype)
    coef = torch.linalg.solve(gram, weighted.transpose(1, 2) @ returns.unsqueeze(-1))
    return (features @ coef).squeeze(-1)

def compute_advantages(obs, rewards, mask, gamma: float, gae_lambda: float, norm_adv: bool):
    """GAE(gamma, lambda) (Schulman et al. 2016) with a per-task linear baseline, as matrix products. obs (tasks,
    episodes, T, obs_dim) in [-1, 1]; rewards, mask (tasks, episodes, T); the value after an episode's end is 0."""
    tasks, episodes, horizon = rewards.shape
    rewards, mask = rewards.double(), mask.double()
    returns = rewards @ discount_matrix(gamma, horizon).T
    time = (torch.arange(horizon, dtype=torch.float64) / horizon).expand(tasks, episodes, horizon).unsqueeze(-1)
    features = torch.cat([obs.double(), obs.double() ** 2, time, time**2, time**3, torch.ones_like(time)], dim=-1)
    values = linear_baseline(
        features.reshape(tasks, episodes * horizon, -1), returns.reshape(tasks, -1), mask.reshape(tasks, -1)
    ).reshape(tasks, episodes, horizon) * mask
    next_values = torch.cat([values[..., 1:], torch.zeros_like(values[..., :1])], dim=-1)
    advantages = ((rewards + gamma * next_values - values) * mask) @ discount_matrix(gamma * gae_lambda, horizon).T
    if norm_adv:
        count = mask.sum(dim=(1, 2), keepdim=True)
        mean = (advantages * mask).sum(dim=(1, 2), keepdim=True) / count
        std = (((advantages - mean) ** 2 * mask).sum(dim=(1, 2), keepdim=True) / count).sqrt()
        advantages = (advantages - mean) / (std + 1e-8)
    return (advantages * mask).float()

def sample_and_adapt(envs, model, params, goals, num_steps: int, args, device):
    """Steps 1-3 for every task at once: the batches sampled with theta_0..theta_num_steps, their statistics, and
    the adapted parameters theta_num_steps (with a leading task dim), a function of theta through inner_update."""
    task_params = {name: p.expand((len(goals),) + p.shape) for name, p in params.items()}
    batches, stats = [], []
    for step in range(num_steps + 1):
        batch, batch_stats = rollout(envs, model, task_params, goals, args, device)
        batches.append(batch)
        stats.append(batch_stats)
        if step < num_steps:
            task_params = inner_update(model, task_params, batch, args.inner_lr)
    return batches, stats, task_params

def evaluate(writer, iteration: int, envs, model, params, goals, args, device) -> dict:
    """Held-out return, distance and success (the share of episodes reaching the goal) after 0..N inner steps."""
    stats, n = sample_and_adapt(envs, model, params, goals, args.inner_steps, args, device)[1], args.inner_steps
    figures = {"test_goals": goals.tolist()}
    for name, key, summary_name in (("return", "returns", "return"), ("distance", "distances", "distance"),
                                    ("success", "reached", "success_rate")):
        figures[f"{name}_after_steps"] = [float(s[key].mean()) for s in stats]
        figures[f"{name}_by_goal_after_steps"] = [s[key].mean(1).tolist() for s in stats]
        for when, k in (("pre_adaptation", 0), ("post_adaptation", n)):
            figures[f"{when}_{summary_name}"] = figures[f"{name}_after_steps"][k]
            writer.add_scalar(f"eval/{when}_{summary_name}", figures[f"{when}_{summary_name}"], iteration)
    figures["adaptation_gain"] = figures["post_adaptation_return"] - figures["pre_adaptation_return"]
    print(f"held-out at iteration {iteration}, 0 -> {n} inner step{'s' * (n != 1)}: " + ", ".join(
        f"{name} {figures[f'{name}_after_steps'][0]:.{digits}f} -> {figures[f'{name}_after_steps'][n]:.{digits}f}"
        for name, digits in (("return", 1), ("distance", 2), ("success", 2))), flush=True)
    return figures

def stop(code: int, message: str):
    print(f"error: {message}", file=sys.stderr)  # bad input (exit code 2) or a diverged run (3): one line
    sys.exit(code)

def check(args: Args) -> None:
    """Values that would crash or silently misbehave: exit code 2 and one line naming the flag."""
    rules = [  # (flag, the value is fine, what it must be); nan fails every comparison
        *[(flag, 0 <= getattr(args, flag) < 2**32, "in [0, 2**32)") for flag in ("seed", "test_seed")],
        ("inner_lr", 0 < args.inner_lr < math.inf, "a finite number > 0"),
        ("outer_lr", 0 < args.outer_lr < 1e37, "in (0, 1e37)"),  # above, Adam's first step overflows float32
        *[(flag, 0 <= getattr(args, flag) <= 1, "in [0, 1]") for flag in ("gamma", "gae_lambda")],
        *[(flag, getattr(args, flag) > 0, "> 0") for flag in
          ("meta_batch_size", "episodes_per_task", "inner_steps", "hidden_size", "num_test_tasks", "torch_threads")],
        *[(flag, getattr(args, flag) >= 0, ">= 0") for flag in ("num_iterations", "eval_every", "checkpoint_every")],
        ("max_grad_norm", 0 <= args.max_grad_norm < math.inf, "a finite number >= 0"),
        ("exp_name", args.exp_name != "" and "/" not in args.exp_name, "a name without '/'"),
        *[(flag, args.track or getattr(args, flag) == getattr(Args, flag), "left alone without --track")
          for flag in ("wandb_project_name", "wandb_entity")],
        ("cuda", not args.cuda or torch.cuda.is_available(), "given only where a CUDA device is available"),
        ("track", not args.track or importlib.util.find_spec("wandb") is not None, "given with wandb installed"),
        ("load_model", args.load_model is None or os.path.isfile(args.load_model), "an existing file"),
    ]
    for flag, fine, must in rules:
        if not fine:
            stop(2, f"--{flag.replace('_', '-')} must be {must}, got {getattr(args, flag)!r}")

if __name__ == "__main__":
    args, checkpoint = tyro.cli(Args), None
    run_dir = f"runs/nav-{args.obstacles}-{args.targets}__{args.exp_name}__{args.seed}__{int(time.time())}"
    if args.resume is not None:  # the run's own flags (kept under this script's name) and its loop's state
        script, given = os.path.basename(__file__), [f for f, v in asdict(args).items() if v != getattr(Args, f)]
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
    device = torch.device("cuda" if args.cuda else "cpu")
    task_rng = np.random.default_rng([0, args.seed])  # training goals
    test_goals = nav_env.sample_goals(args.targets, args.num_test_tasks, np.random.default_rng([1, args.test_seed]))

    # env setup: fixed-horizon rollouts, an ended episode waits (masked out) until the horizon
    kwargs = dict(obstacles=args.obstacles, see_goal=args.see_goal, collision=args.collision, autoreset_mode="Disabled")
    envs = nav_env.NavigationVectorEnv(args.meta_batch_size * args.episodes_per_task, **kwargs)
    test_envs = nav_env.NavigationVectorEnv(args.num_test_tasks * args.episodes_per_task, **kwargs)
    envs.reset(seed=args.seed)
    test_envs.reset(seed=args.test_seed)
    space = envs.single_observation_space
    model = Policy(space.shape[0], int(envs.single_action_space.n), args.hidden_size, space.low, space.high)
    if args.load_model is not None and checkpoint is None:
        try:
            model.load_state_dict(torch.load(args.load_model, map_location="cpu"))
        except Exception as error:  # not a file torch.save wrote (its error named), or another network (the mismatch)
            lines = str(error).splitlines() if isinstance(error, RuntimeError) else [type(error).__name__]
            stop(2, f"--load-model must be a {args.exp_name}.cleanrl_model of this --hidden-size and --see-goal, got "
                    f"{args.load_model!r} ({lines[min(1, len(lines) - 1)].strip()[:150]})")
    model = model.to(device)
    params = dict(model.named_parameters())
    optimizer = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}[args.outer_optimizer](params.values(), args.outer_lr)
    generators = (task_rng, envs.np_random, test_envs.np_random)  # with the global ones: every RNG the loop draws from
    global_step, start_iteration, iteration_times = 0, 0, []
    if checkpoint is not None:  # continue where the checkpoint left off
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        start_iteration, global_step, iteration_times, rng = checkpoint["loop"]
        for restore, state in zip((random.setstate, np.random.set_state, torch.set_rng_state), rng):
            restore(state)
        for generator, state in zip(generators, rng[3]):
            generator.bit_generator.state = state
        if rng[4]:
            torch.cuda.set_rng_state_all(rng[4])
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
        goals = nav_env.sample_goals(args.targets, args.meta_batch_size, task_rng)
        # ALGO LOGIC: sample, adapt N times and sample validation episodes, for all tasks at once
        batches, stats, adapted_params = sample_and_adapt(envs, model, params, goals, args.inner_steps, args, device)

        # ALGO LOGIC: the meta-update: the validation losses (batches[-1]) at theta_N, differentiated back to theta
        loss = outer_loss(model, adapted_params, batches[-1])
        optimizer.zero_grad()
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(params.values(), args.max_grad_norm or math.inf)
        if not torch.isfinite(loss + grad_norm):
            stop(3, f"non-finite outer loss at iteration {iteration}: the run diverged; lower --outer-lr or --inner-lr")
        optimizer.step()
        global_step += sum(s["env_steps"] for s in stats)
        iteration_times.append(time.time() - iteration_start)
        sps = int(sum(s["env_steps"] for s in stats) / iteration_times[-1])

        # TRY NOT TO MODIFY: record rewards for plotting purposes; the x axis is the meta-iteration, as in the papers
        writer.add_scalar("charts/pre_adaptation_return", stats[0]["returns"].mean(), iteration)
        writer.add_scalar("charts/post_adaptation_return", stats[-1]["returns"].mean(), iteration)
        writer.add_scalar("charts/pre_adaptation_distance", stats[0]["distances"].mean(), iteration)
        writer.add_scalar("charts/post_adaptation_distance", stats[-1]["distances"].mean(), iteration)
        writer.add_scalar("charts/env_steps", global_step, iteration)
        writer.add_scalar("charts/iteration_time", iteration_times[-1], iteration)
        writer.add_scalar("charts/SPS", sps, iteration)
        writer.add_scalar("losses/outer_loss", loss.item(), iteration)
        writer.add_scalar("losses/meta_grad_norm", grad_norm.item(), iteration)
        if iteration % 10 == 0 or iteration in (1, args.num_iterations):
            print(f"iteration {iteration}/{args.num_iterations} global_step={global_step} pre/post-adaptation return "
                  f"{stats[0]['returns'].mean():.1f} -> {stats[-1]['returns'].mean():.1f} SPS={sps}")
        if args.eval_every and iteration % args.eval_every == 0 and iteration < args.num_iterations:
            evaluate(writer, iteration, test_envs, model, params, test_goals, args, device)
        if (args.checkpoint_every and iteration % args.checkpoint_every == 0) or iteration == args.num_iterations:
            rng = (random.getstate(), np.random.get_state(), torch.get_rng_state(), [g.bit_generator.state for g in
                   generators], torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [])
            torch.save({os.path.basename(__file__): asdict(args), "model": model.state_dict(), "optimizer":
                        optimizer.state_dict(), "loop": (iteration, global_step, iteration_times, rng)},
                       checkpoint_path + ".tmp")
            os.replace(checkpoint_path + ".tmp", checkpoint_path)  # a kill mid-write leaves the last one whole

    # final evaluation on the held-out test tasks, after 0..N inner steps
    train_time = time.time() - start_time
    figures = evaluate(writer, args.num_iterations, test_envs, model, params, test_goals, args, device)
    summary = {"args": asdict(args), "iterations": args.num_iterations, "env_steps": global_step, **figures,
               "wall_time_s": time.time() - start_time, "train_time_s": train_time,
               "median_iteration_time_s": float(np.median(iteration_times)) if iteration_times else None}
    if args.save_model:
        summary["model_path"] = f"{run_dir}/{args.exp_name}.cleanrl_model"
        torch.save(model.state_dict(), summary["model_path"])
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"summary: {run_dir}/summary.json")
    writer.close()
