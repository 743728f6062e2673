# docs and measured results, each with its command: docs/ppo_single_task.md
"""PPO (Schulman et al. 2017) on ONE fixed task, in the shape of CleanRL's ppo.py: one goal of the 2D navigation
with obstacles (--env nav, nav_env.py) or one Alchemy chemistry (--env alchemy, alchemy_env.py), the check that an
environment and the learner work before meta-learning on the task family. Each iteration:
1. Roll out --num-envs x --num-steps steps in a numpy-batched vector env. Its NEXT_STEP autoreset spends the step
   after an episode's end on resetting that env: no decision of the policy, so every loss masks it out.
2. Advantages by GAE (Schulman et al. 2016); with --per-trial-returns (alchemy) they stop at each trial's end.
3. --update-epochs epochs of mini-batch steps on PPO's clipped surrogate, value and entropy loss (eq. 9).
4. nav: self-imitation learning (SIL; Oh et al. 2018) on the best episodes so far. The reward, minus the squared
   distance to the goal, slopes into the wall before a goal behind it; SIL imitates the rare episodes that went round.
alchemy masks the actions that do nothing (invalid action masking, Huang & Ontanon 2020).
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
import torch.optim as optim
import tyro
from torch.distributions.categorical import Categorical
from torch.utils.tensorboard import SummaryWriter

import alchemy_env
import nav_env

@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment"""
    seed: int = 1
    """seed of the experiment (env, actions, network initialisation)"""
    cuda: bool = False
    """if toggled, run on the CUDA device (it must be available)"""
    track: bool = False
    """if toggled, track the experiment with Weights and Biases (needs wandb: pip install wandb)"""
    wandb_project_name: str = "meta-rl"
    """the wandb's project name"""
    wandb_entity: str | None = None
    """the entity (team) of wandb's project (None: wandb's default entity)"""

    env: Literal["nav", "alchemy"] = "nav"
    """the task family: one goal of nav_env or one chemistry of alchemy_env (see ENV_DEFAULTS)"""
    goal: tuple[float, float] = (4.5, 1.0)
    """nav: the goal (x, y); the default lies behind the medium cross (the optimum goes round it)"""
    obstacles: Literal["none", "easy", "medium", "hard"] = "medium"
    """nav: obstacle level"""
    see_goal: bool = True
    """nav: if toggled, the observation includes the goal (x, y, gx, gy); else (x, y)"""
    collision: Literal["block", "stick", "original"] = "block"
    """nav: block a move into a wall, freeze on contact (stick), or the papers' own env (original)"""
    chemistry_seed: int = 0
    """alchemy: seed of the one chemistry of every episode (items still change every trial)"""
    level: str = alchemy_env.STANDARD_LEVEL
    """alchemy: the level whose chemistry prior the fixed chemistry is drawn from"""
    per_trial_returns: bool = True
    """alchemy: returns and GAE stop at each trial's end (later trials bring fresh items)"""
    mask_actions: bool = True
    """alchemy: the policy never picks an action that does nothing (alchemy_env.valid_action_mask)"""
    eval_set: Literal["sampled", "dm_alchemy"] = "sampled"
    """alchemy: dm_alchemy also scores the policy on dm_alchemy's evaluation episodes (needs dm_alchemy)"""
    eval_episodes: int = 1000
    """alchemy, --eval-set dm_alchemy: score the first this many of the 1,000 evaluation episodes"""
    total_timesteps: int | None = None
    """total env steps, in whole rollouts (None: nav 12_000_000, alchemy 8_000_000)"""
    num_iterations: int | None = None
    """the number of rollouts, instead of --total-timesteps (None: total_timesteps // batch size)"""
    learning_rate: float | None = None
    """the learning rate of the optimizer (Adam) (None: nav 3e-4, alchemy 1e-3)"""
    num_envs: int | None = None
    """the number of parallel envs (None: nav 64, alchemy 256)"""
    num_steps: int | None = None
    """the number of steps per env per rollout (None: nav 200, alchemy 100)"""
    anneal_lr: bool = True
    """toggle learning rate annealing (linear, to 0 at the end)"""
    gamma: float | None = None
    """the discount factor gamma (None: nav 1.0 (its return is undiscounted), alchemy 0.99)"""
    gae_lambda: float = 0.95
    """the lambda of generalised advantage estimation"""
    num_minibatches: int = 8
    """the number of mini-batches per epoch"""
    update_epochs: int = 4
    """the K epochs to update the policy per rollout"""
    norm_adv: bool = True
    """toggles advantage normalisation (per mini-batch)"""
    clip_coef: float = 0.2
    """the surrogate clipping coefficient"""
    clip_vloss: bool = True
    """toggles whether or not to use a clipped loss for the value function, as per the paper"""
    ent_coef: float | None = None
    """coefficient of the entropy bonus (None: nav 0.0, alchemy 0.01)"""
    vf_coef: float = 0.5
    """coefficient of the value function loss"""
    max_grad_norm: float = 0.5
    """the maximum norm for the gradient clipping"""
    target_kl: float | None = None
    """the target KL divergence threshold: stop the epochs early when exceeded (None: never)"""
    reward_scale: float | None = None
    """multiplies rewards for learning only; logged returns are unscaled (None: nav 0.01, alchemy 0.1)"""
    hidden_size: int | None = None
    """width of the two tanh layers of the actor and of the critic (None: nav 64, alchemy 128)"""
    sil_coef: float | None = None
    """weight of the self-imitation loss; 0: plain PPO (None: nav 1.0, alchemy 0.0, the only choice)"""
    sil_fraction: float = 0.25
    """nav, SIL: SIL runs in this first fraction of the iterations; then PPO alone sharpens the policy"""
    checkpoint_every: int = 10
    """write runs/{run_name}/checkpoint.pt every this many iterations and after the last (0: only then)"""
    resume: str | None = None
    """continue the run in this folder from its checkpoint.pt, with its own flags (None: a new run)"""
    torch_threads: int = 1
    """torch's CPU threads (1: runs side by side on a few cores slow each other down with more)"""

# The fields left at None take their --env's value: (nav, alchemy). The runs behind them: docs/ppo_single_task.md.
ENV_DEFAULTS = dict(total_timesteps=(12_000_000, 8_000_000), learning_rate=(3e-4, 1e-3), num_envs=(64, 256),
                    num_steps=(200, 100), gamma=(1.0, 0.99), ent_coef=(0.0, 0.01), reward_scale=(0.01, 0.1),
                    hidden_size=(64, 128), sil_coef=(1.0, 0.0))
# SIL (nav): the 16 best episodes kept, 8 steps per iteration on 512 of their transitions, value loss weight (beta) 0.01
SIL_EPISODES, SIL_UPDATES, SIL_BATCH_SIZE, SIL_VALUE_COEF = 16, 8, 512, 0.01

def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer

class Agent(nn.Module):
    def __init__(self, obs_dim: int, num_actions: int, hidden: int, obs_low: np.ndarray, obs_high: np.ndarray):
        super().__init__()
        # Observations are mapped from their Box bounds to [-1, 1]: centred inputs suit tanh layers.
        self.register_buffer("obs_mid", torch.as_tensor((obs_high + obs_low) / 2, dtype=torch.float32))
        self.register_buffer("obs_half_range", torch.as_tensor((obs_high - obs_low) / 2, dtype=torch.float32))
        self.critic = nn.Sequential(layer_init(nn.Linear(obs_dim, hidden)), nn.Tanh(),
                                    layer_init(nn.Linear(hidden, hidden)), nn.Tanh(),
                                    layer_init(nn.Linear(hidden, 1), std=1.0))
        self.actor = nn.Sequential(layer_init(nn.Linear(obs_dim, hidden)), nn.Tanh(),
                                   layer_init(nn.Linear(hidden, hidden)), nn.Tanh(),
                                   layer_init(nn.Linear(hidden, num_actions), std=0.01))
    def normalise(self, x):
        return (x - self.obs_mid) / self.obs_half_range
    def get_value(self, x):
        return self.critic(self.normalise(x))
    def get_action_and_value(self, x, action=None, action_mask=None):
        x = self.normalise(x)
        logits = self.actor(x)
        if action_mask is not None:  # invalid action masking (Huang & Ontanon 2020): probability 0, no gradient
            logits = logits.masked_fill(~action_mask, -1e8)
        probs = Categorical(logits=logits, validate_args=False)  # a non-finite loss is caught in the loop
        if action is None:
            action = probs.sample()
        return action, probs.log_prob(action), probs.entropy(), self.critic(x)

def compute_gae(rewards, values, dones, next_value, next_done, gamma: float, gae_lambda: float):
    """Generalised advantage estimation (Schulman et al. 2016, eq. 16) over a rollout (num_steps, num_envs). As in
    CleanRL, dones[t] = 1: step t - 1 ended its episode (or trial), so obs[t]'s value is not bootstrapped into it."""
    advantages, lastgaelam = torch.zeros_like(rewards), 0
    for t in reversed(range(len(rewards))):
        nextnonterminal = 1.0 - (next_done if t == len(rewards) - 1 else dones[t + 1])
        nextvalues = next_value if t == len(rewards) - 1 else values[t + 1]
        delta = rewards[t] + gamma * nextvalues * nextnonterminal - values[t]
        advantages[t] = lastgaelam = delta + gamma * gae_lambda * nextnonterminal * lastgaelam
    return advantages

def ppo_loss(newlogprob, oldlogprob, advantages, newvalue, oldvalue, returns, entropy, mask, args: Args):
    """PPO's loss on one mini-batch (Schulman et al. 2017, eq. 9), every mean over the samples with mask 1 (mask 0: an
    autoreset step). Returns (loss, pg_loss, v_loss, entropy_loss, old_approx_kl, approx_kl, clipfrac)."""
    num_samples = mask.sum().clamp(min=1.0)
    def masked_mean(x):
        return (x * mask).sum() / num_samples
    logratio = newlogprob - oldlogprob
    ratio = logratio.exp()
    with torch.no_grad():  # calculate approx_kl http://joschu.net/blog/kl-approx.html
        old_approx_kl = masked_mean(-logratio)
        approx_kl = masked_mean((ratio - 1) - logratio)
        clipfrac = masked_mean(((ratio - 1.0).abs() > args.clip_coef).float()).item()
    if args.norm_adv:
        adv_mean = masked_mean(advantages)
        advantages = (advantages - adv_mean) / (masked_mean((advantages - adv_mean) ** 2).sqrt() + 1e-8)
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)
    pg_loss = masked_mean(torch.max(pg_loss1, pg_loss2))
    v_loss = (newvalue - returns) ** 2
    if args.clip_vloss:
        v_clipped = oldvalue + torch.clamp(newvalue - oldvalue, -args.clip_coef, args.clip_coef)
        v_loss = torch.max(v_loss, (v_clipped - returns) ** 2)
    v_loss = 0.5 * masked_mean(v_loss)
    entropy_loss = masked_mean(entropy)
    loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef
    return loss, pg_loss, v_loss, entropy_loss, old_approx_kl, approx_kl, clipfrac

def sil_loss(logprob, value, returns, value_coef: float):
    """Self-imitation loss (Oh et al. 2018, eqs. 2-4) on stored (s, a, R), imitating a only where R beats the critic:
    L = -log pi(a|s) * (R - V(s))+ + value_coef * 0.5 * ((R - V(s))+)^2. Returns (loss, policy_loss, value_loss)."""
    gap = (returns - value).clamp(min=0.0)
    policy_loss, value_loss = -(logprob * gap.detach()).mean(), 0.5 * (gap**2).mean()
    return policy_loss + value_coef * value_loss, policy_loss, value_loss

class BestEpisodes:
    """SIL's memory: the `capacity` finished episodes with the highest return so far (ties: the older stays)."""
    def __init__(self, capacity: int):
        self.capacity, self.episodes = capacity, []  # (return, obs (T, d), actions (T,), returns (T,)), best first
    def add(self, steps: list, gamma: float) -> None:  # steps: the episode's (obs, action, reward) tuples
        observations, actions, rewards = (np.array(x) for x in zip(*steps))
        returns, running = np.zeros(len(rewards)), 0.0
        for t in reversed(range(len(rewards))):  # G_t = r_t + gamma * G_{t+1}
            returns[t] = running = rewards[t] + gamma * running
        self.episodes.append((returns[0], observations, actions, returns))
        self.episodes.sort(key=lambda episode: -episode[0])
        del self.episodes[self.capacity :]
    def sample(self, batch_size: int, device):  # transitions, uniformly with replacement: (obs, actions, returns)
        obs, actions, returns = (torch.as_tensor(np.concatenate([e[k] for e in self.episodes])) for k in (1, 2, 3))
        index = torch.randint(len(returns), (batch_size,))
        return obs[index].to(device), actions[index].to(device), returns[index].float().to(device)

def resolve(args: Args) -> Args:
    """The --env's values of the fields left at None, and --num-iterations as env steps."""
    for name, values in ENV_DEFAULTS.items():
        setattr(args, name, values[args.env == "alchemy"] if getattr(args, name) is None else getattr(args, name))
    if args.env == "nav":  # nav has neither trials nor actions that do nothing
        args.per_trial_returns = args.mask_actions = False
    if args.num_iterations is not None:
        args.total_timesteps = args.num_iterations * args.num_envs * args.num_steps
    return args

def stop(code: int, message: str):
    print(f"error: {message}", file=sys.stderr)  # bad input (exit code 2) or a diverged run (3): one line
    sys.exit(code)

def check(args: Args) -> None:
    """Values that would crash or silently misbehave: exit code 2 and one line naming the flag."""
    rules = [  # (flag, value is fine, what it must be); nan fails every comparison
        *((name, 0 < getattr(args, name) < math.inf, "be a finite number > 0") for name in ("learning_rate", "num_envs",
          "num_steps", "num_minibatches", "update_epochs", "max_grad_norm", "reward_scale", "hidden_size",
          "torch_threads")),
        *((name, 0 <= getattr(args, name) < math.inf, "be a finite number >= 0") for name in ("clip_coef", "ent_coef",
          "vf_coef", "sil_coef", "checkpoint_every")),
        *((name, 0 <= getattr(args, name) < 2**32, "be in [0, 2**32)") for name in ("seed", "chemistry_seed")),
        *((name, 0 <= getattr(args, name) <= 1, "be in [0, 1]") for name in ("gamma", "gae_lambda")),
        ("total_timesteps", args.total_timesteps >= args.num_envs * args.num_steps, "be at least one rollout"),
        ("num_minibatches", args.num_minibatches <= args.num_envs * args.num_steps, "not exceed the batch size"),
        ("learning_rate", args.learning_rate < 3e37, "be below 3e37 (Adam's first step, 10 x lr, is float32)"),
        ("sil_fraction", 0 < args.sil_fraction <= 1, "be in (0, 1]"),
        ("target_kl", args.target_kl is None or 0 < args.target_kl < math.inf, "be a finite number > 0"),
        ("sil_coef", args.env == "nav" or args.sil_coef == 0, "be 0 with --env alchemy (SIL is nav's)"),
        ("level", args.level.removesuffix(alchemy_env.SHAPING_SUFFIX) in alchemy_env.LEVELS, "name a level"),
        ("eval_episodes", 1 <= args.eval_episodes <= 1000, "be in [1, 1000]"),
        ("eval_set", args.eval_set == "sampled" or importlib.util.find_spec("dm_alchemy"), "have dm_alchemy installed"),
        ("exp_name", args.exp_name and "/" not in args.exp_name and not os.path.isfile("runs"), "name a run in runs/"),
        ("cuda", not args.cuda or torch.cuda.is_available(), "be given only where a CUDA device is available"),
        ("track", not args.track or importlib.util.find_spec("wandb"), "have wandb installed (pip install wandb)"),
        *((name, args.track or getattr(args, name) == getattr(Args, name), "be left alone without --track")
          for name in ("wandb_project_name", "wandb_entity")),
    ]
    for flag, fine, must in rules:
        if not fine:
            stop(2, f"--{flag.replace('_', '-')} must {must}, got {getattr(args, flag)!r}")

if __name__ == "__main__":
    args, checkpoint = tyro.cli(Args), None
    run_dir = args.resume
    if args.resume is not None:  # the run's own flags; everything its loop carried is restored below
        given = [name for name, value in asdict(args).items() if value != getattr(Args, name)]
        if set(given) - {"resume", "torch_threads"}:
            stop(2, f"--resume continues a run with its own flags (only --torch-threads may be given), got {given}")
        try:
            checkpoint = torch.load(f"{args.resume}/checkpoint.pt", map_location="cpu", weights_only=False)
            args = Args(**{**checkpoint["args"], "torch_threads": args.torch_threads})
        except Exception:  # no such folder or file, a truncated file, another script's
            stop(2, f"--resume must be a run folder with a checkpoint.pt of this script, got {args.resume!r}")
    check(resolve(args))
    batch_size = args.num_envs * args.num_steps
    args.num_iterations = args.total_timesteps // batch_size
    minibatch_size = batch_size // args.num_minibatches

    # TRY NOT TO MODIFY: seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.torch_threads)
    device = torch.device("cuda" if args.cuda else "cpu")

    # env setup: one task for every env, kept across autoresets
    if args.env == "nav":
        envs = nav_env.NavigationVectorEnv(args.num_envs, args.obstacles, see_goal=args.see_goal,
                                           collision=args.collision)
        task = {"goals": np.tile(np.asarray(args.goal, dtype=np.float64), (args.num_envs, 1))}
    else:
        envs = alchemy_env.SymbolicAlchemyVectorEnv(args.num_envs, level=args.level)
        task = {"chemistries": alchemy_env.sample_chemistry(args.level, np.random.default_rng(args.chemistry_seed))}
    try:  # nav_env checks the goal: in the map [0, 10]^2, off the obstacles
        next_obs, _ = envs.reset(seed=args.seed, options=task)
    except ValueError:
        stop(2, f"--goal must be a free point of the map [0, 10]^2, got {args.goal!r}")

    space = envs.single_observation_space
    agent = Agent(np.prod(space.shape), envs.single_action_space.n, args.hidden_size, space.low, space.high).to(device)
    optimizer = optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)

    env_id = f"nav-{args.obstacles}" if args.env == "nav" else "alchemy"
    run_dir = os.path.normpath(run_dir or f"runs/{env_id}__{args.exp_name}__{args.seed}__{int(time.time())}")
    if args.track:  # Weights & Biases mirrors the TensorBoard logs
        import wandb
        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True, config=vars(args),
                   name=os.path.basename(run_dir), id=os.path.basename(run_dir), resume="allow", save_code=True)
    # a resumed run drops the events its killed process wrote after the checkpoint
    writer = SummaryWriter(run_dir, purge_step=None if checkpoint is None else checkpoint["loop"][0] + 1)
    if checkpoint is None:
        writer.add_text("hyperparameters", "|param|value|\n|-|-|\n"
                        + "\n".join(f"|{key}|{value}|" for key, value in vars(args).items()))

    # ALGO Logic: Storage setup
    obs = torch.zeros((args.num_steps, args.num_envs) + space.shape).to(device)
    actions = torch.zeros((args.num_steps, args.num_envs), dtype=torch.long).to(device)
    # gae_dones: where GAE stops, dones and with --per-trial-returns each trial's end (the step after it is a decision)
    logprobs, rewards, dones, gae_dones, values = torch.zeros((5, args.num_steps, args.num_envs)).to(device)
    action_masks = torch.ones(actions.shape + (envs.single_action_space.n,), dtype=torch.bool).to(device)
    def mask_of(observations: np.ndarray):  # alchemy: the valid actions (Huang & Ontanon 2020)
        return torch.as_tensor(alchemy_env.valid_action_mask(observations)).to(device) if args.mask_actions else None

    # TRY NOT TO MODIFY: start the game
    global_step, start_iteration, elapsed = 0, 0, 0.0
    next_done, next_gae_done = torch.zeros((2, args.num_envs))
    episode_return, episode_length = np.zeros(args.num_envs), np.zeros(args.num_envs, dtype=np.int64)
    finished_returns, finished_lengths, finished_distances = [], [], []
    memory = BestEpisodes(SIL_EPISODES) if args.sil_coef > 0 else None
    episode_steps = [[] for _ in range(args.num_envs)]  # SIL: each env's episode so far, (obs, action, scaled reward)
    if checkpoint is not None:  # continue where the checkpoint left off
        agent.load_state_dict(checkpoint["agent"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        envs.set_state(checkpoint["env"])
        (start_iteration, global_step, elapsed, next_obs, next_done, next_gae_done, episode_return, episode_length,
         finished_returns, finished_lengths, finished_distances, episode_steps, memory, rng) = checkpoint["loop"]
        for restore, state in zip((random.setstate, np.random.set_state, torch.set_rng_state), rng):
            restore(state)
        if rng[3]:
            torch.cuda.set_rng_state_all(rng[3])
    next_obs, next_done, next_gae_done = (torch.Tensor(x).to(device) for x in (next_obs, next_done, next_gae_done))
    next_mask = mask_of(next_obs.cpu().numpy())
    start_time = time.time() - elapsed

    for iteration in range(start_iteration + 1, args.num_iterations + 1):
        if args.anneal_lr:  # Annealing the rate if instructed to do so.
            optimizer.param_groups[0]["lr"] = (1.0 - (iteration - 1.0) / args.num_iterations) * args.learning_rate

        for step in range(0, args.num_steps):
            global_step += args.num_envs
            # dones[step] = 1: the last step ended an episode, so this one only resets the env
            obs[step], dones[step], gae_dones[step] = next_obs, next_done, next_gae_done
            if args.mask_actions:
                action_masks[step] = next_mask

            # ALGO LOGIC: action logic
            with torch.no_grad():
                action, logprob, _, value = agent.get_action_and_value(next_obs, action_mask=next_mask)
                values[step] = value.flatten()
            actions[step], logprobs[step] = action, logprob

            # TRY NOT TO MODIFY: execute the game and log data.
            next_obs, reward, terminations, truncations, infos = envs.step(action.cpu().numpy())
            ended = np.logical_or(terminations, truncations)
            rewards[step] = torch.as_tensor(reward * args.reward_scale, dtype=torch.float32).to(device)
            next_obs, next_mask, next_done = torch.Tensor(next_obs).to(device), mask_of(next_obs), torch.Tensor(ended)
            next_gae_done = torch.Tensor(ended | infos["new_trial"] if args.per_trial_returns else ended).to(device)
            next_done = next_done.to(device)

            stepped = dones[step].cpu().numpy() == 0  # a decision of the policy, not an autoreset
            if memory is not None:  # SIL: record the episodes in progress
                step_obs, step_actions = obs[step].cpu().numpy().copy(), action.cpu().numpy()
                for i in np.flatnonzero(stepped):
                    episode_steps[i].append((step_obs[i], step_actions[i], reward[i] * args.reward_scale))
            episode_return += reward * stepped
            episode_length += stepped
            finished = ended & stepped
            finished_returns += episode_return[finished].tolist()
            finished_lengths += episode_length[finished].tolist()
            finished_distances += infos["distance"][finished].tolist() if args.env == "nav" else []
            for i in np.flatnonzero(finished) if memory is not None else []:  # SIL keeps it if among the best so far
                memory.add(episode_steps[i], args.gamma)
                episode_steps[i] = []
            episode_return[finished], episode_length[finished] = 0.0, 0
        for tag, recent in [("episodic_return", finished_returns), ("episodic_length", finished_lengths),
                            ("final_distance", finished_distances)]:
            if recent:
                writer.add_scalar(f"charts/{tag}", np.mean(recent[-args.num_envs :]), global_step)

        # bootstrap value if not done
        with torch.no_grad():
            next_value = agent.get_value(next_obs).reshape(1, -1)
            advantages = compute_gae(rewards, values, gae_dones, next_value, next_gae_done, args.gamma, args.gae_lambda)
            returns = advantages + values

        # flatten the batch
        b_obs, b_actions, b_masks = obs.reshape((-1,) + space.shape), actions.reshape(-1), action_masks.flatten(0, 1)
        b_logprobs, b_advantages, b_returns, b_values, b_dones = (
            x.reshape(-1) for x in (logprobs, advantages, returns, values, dones))

        # Optimizing the policy and value network
        b_inds = np.arange(batch_size)
        clipfracs = []
        for epoch in range(args.update_epochs):
            np.random.shuffle(b_inds)
            for start in range(0, batch_size, minibatch_size):
                mb_inds = b_inds[start : start + minibatch_size]
                _, newlogprob, entropy, newvalue = agent.get_action_and_value(
                    b_obs[mb_inds], b_actions[mb_inds], b_masks[mb_inds] if args.mask_actions else None)
                loss, pg_loss, v_loss, entropy_loss, old_approx_kl, approx_kl, clipfrac = ppo_loss(
                    newlogprob, b_logprobs[mb_inds], b_advantages[mb_inds], newvalue.view(-1), b_values[mb_inds],
                    b_returns[mb_inds], entropy, 1.0 - b_dones[mb_inds], args)
                clipfracs.append(clipfrac)
                if not torch.isfinite(loss):  # diverged: keep the last checkpoint, write no summary.json
                    stop(3, f"non-finite loss at iteration {iteration}; lower --learning-rate or --reward-scale "
                            f"(the last checkpoint, if any, stays in {run_dir})")
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                optimizer.step()

            if args.target_kl is not None and approx_kl > args.target_kl:
                break

        # SIL (Oh et al. 2018), in the first --sil-fraction of the iterations: gradient steps on the best episodes
        if memory is not None and memory.episodes and iteration <= args.sil_fraction * args.num_iterations:
            for _ in range(SIL_UPDATES):
                sil_obs, sil_actions, sil_returns = memory.sample(SIL_BATCH_SIZE, device)
                _, sil_logprob, _, sil_value = agent.get_action_and_value(sil_obs, sil_actions)
                loss, sil_pg_loss, sil_v_loss = sil_loss(sil_logprob, sil_value.view(-1), sil_returns, SIL_VALUE_COEF)
                optimizer.zero_grad()
                (args.sil_coef * loss).backward()
                nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                optimizer.step()
            writer.add_scalar("losses/sil_policy_loss", sil_pg_loss.item(), global_step)
            writer.add_scalar("losses/sil_value_loss", sil_v_loss.item(), global_step)
            writer.add_scalar("charts/sil_best_return", memory.episodes[0][0] / args.reward_scale, global_step)

        y_pred, y_true = b_values.cpu().numpy(), b_returns.cpu().numpy()
        var_y = np.var(y_true)
        explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y

        # TRY NOT TO MODIFY: record rewards for plotting purposes
        sps = int(global_step / (time.time() - start_time))
        writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
        writer.add_scalar("losses/value_loss", v_loss.item(), global_step)
        writer.add_scalar("losses/policy_loss", pg_loss.item(), global_step)
        writer.add_scalar("losses/entropy", entropy_loss.item(), global_step)
        writer.add_scalar("losses/old_approx_kl", old_approx_kl.item(), global_step)
        writer.add_scalar("losses/approx_kl", approx_kl.item(), global_step)
        writer.add_scalar("losses/clipfrac", np.mean(clipfracs), global_step)
        writer.add_scalar("losses/explained_variance", explained_var, global_step)
        writer.add_scalar("charts/SPS", sps, global_step)
        if iteration % 10 == 0 or iteration in (1, args.num_iterations):
            print(f"iteration {iteration}/{args.num_iterations} global_step={global_step} episodic_return="
                  f"{np.mean(finished_returns[-100:]) if finished_returns else np.nan:.1f} SPS={sps}")

        # after the iteration's last random draw, so that a run killed at any moment resumes exactly
        if (args.checkpoint_every and iteration % args.checkpoint_every == 0) or iteration == args.num_iterations:
            loop = (iteration, global_step, time.time() - start_time, next_obs, next_done, next_gae_done,
                    episode_return, episode_length, finished_returns, finished_lengths, finished_distances,
                    episode_steps, memory, (random.getstate(), np.random.get_state(), torch.get_rng_state(),
                                            torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []))
            torch.save(dict(args=asdict(args), agent=agent.state_dict(), optimizer=optimizer.state_dict(), loop=loop,
                            env=envs.get_state()), f"{run_dir}/checkpoint.pt.tmp")
            os.replace(f"{run_dir}/checkpoint.pt.tmp", f"{run_dir}/checkpoint.pt")  # a kill mid-write keeps the last

    wall_time = time.time() - start_time
    summary = dict(args=asdict(args), iterations=args.num_iterations, env_steps=global_step,
                   final_episodic_return=float(np.mean(finished_returns[-100:])) if finished_returns else None,
                   episodes=len(finished_returns), wall_time_s=wall_time, sps=global_step / wall_time,
                   eval_set=args.eval_set if args.env == "alchemy" else None)
    if args.env == "nav":  # the last 100 episodes, and one greedy (argmax) episode from the start
        env = nav_env.NavigationEnv(args.obstacles, see_goal=args.see_goal, collision=args.collision)
        greedy_obs, greedy_return, done = env.reset(options={"goal": args.goal})[0], 0.0, False
        while not done:
            action = agent.actor(agent.normalise(torch.Tensor(greedy_obs)[None].to(device))).argmax()
            greedy_obs, reward, terminated, truncated, info = env.step(int(action))
            greedy_return, done = greedy_return + reward, terminated or truncated
        summary.update(final_distance=float(np.mean(finished_distances[-100:])) if finished_distances else None,
                       success_rate=float(np.mean(np.asarray(finished_distances[-100:]) <= nav_env.GOAL_RADIUS + 1e-9)),
                       greedy_return=greedy_return, greedy_final_distance=info["distance"],
                       greedy_reached=info["distance"] <= nav_env.GOAL_RADIUS + 1e-9)
    if args.env == "alchemy" and args.eval_set == "dm_alchemy":  # zero-shot, on chemistries never trained on
        @torch.no_grad()
        def policy(observations, _):  # sampled actions, as dm_alchemy's agents played them
            observations, mask = torch.Tensor(observations).to(device), mask_of(observations)
            return agent.get_action_and_value(observations, action_mask=mask)[0].cpu().numpy()
        summary.update(alchemy_env.score_on_eval_set(policy, args.eval_episodes, args.seed))
        writer.add_scalar("eval_set/score", summary["eval_set_score"], global_step)
        for name, score in summary["reference_scores"].items():  # the published agents and the random heuristic
            writer.add_scalar(f"eval_set/reference_{name}", score, global_step)
            writer.add_scalar(f"eval_set/post_minus_{name}", summary["post_minus_reference"][name][0], global_step)
        print(f"dm_alchemy's evaluation episodes ({args.eval_episodes}): score {summary['eval_set_score']:.2f}")
    with open(f"{run_dir}/summary.json", "w") as f:
        json.dump(summary, f, indent=2)
    print(f"summary: {run_dir}/summary.json")
    writer.close()
