# First-order MAML with a vanilla-policy-gradient inner loop on the 2D navigation tasks.
# Docs: docs/maml_vpg.md, docs/fomaml_vpg.md. `diff maml_vpg.py fomaml_vpg.py` shows what FOMAML changes.
"""First-order MAML (the approximation of Finn et al. 2017) with a policy-gradient inner loop, as studied by Duan & Wang.

Each meta-iteration, for every task of a meta-batch (a goal of nav_env):
  1. sample episodes with the current parameters theta_0 = theta,
  2. take N inner policy-gradient steps theta_{k+1} = theta_k - inner_lr * grad L_in(theta_k) (Finn et al.'s
     Eq. 1), sampling fresh episodes with theta_k before each step,
  3. sample validation episodes with the adapted theta_N; their policy-gradient loss L_out(theta_N) is
     the task's meta-loss.
FOMAML applies to theta the sum over tasks of each meta-loss's gradient at theta_N (Eq. 3 with d theta_N /
d theta taken as the identity): no differentiation through the inner steps, no second-order terms.

The inner loss L_in is ProMP's low-variance curvature (LVC) surrogate (Rothfuss et al. 2018),
sum_t pi/stopgrad(pi) * A: its value and gradient equal REINFORCE's, and its Hessian adds the term of the
sampling distribution that REINFORCE's -log pi * A differentiated twice drops (exact for one-step episodes;
for longer ones LVC drops the cross-time terms that DiCE keeps, trading that bias for lower variance). A
second-order meta-gradient needs that term; a first-order one uses the gradient only.

Fast: every task's episodes run at once in one NavigationVectorEnv (tasks x episodes envs), each step
is one batched forward pass of all tasks' (possibly adapted) policies (batched matrix products), advantages
are one matrix product, and the meta-gradient is one torch.func transform (grad, vmap) over all tasks.
"""

import contextlib
import copy
import importlib.util
import io
import json
import math
import os
import random
import re
import signal
import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import Literal

import numpy as np
import torch
import torch.nn as nn
import tyro
from torch.func import functional_call, grad, grad_and_value, vmap
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

import nav_env

@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment"""
    seed: int = 1
    """seed of the experiment (training tasks, actions, network initialisation)"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    cuda: bool = False
    """if toggled, use CUDA when it is available (falls back to the CPU with a message otherwise)"""
    track: bool = False
    """if toggled, this experiment will be tracked with Weights and Biases (the TensorBoard logs synced)"""
    wandb_project_name: str = "meta-rl"
    """the wandb's project name"""
    wandb_entity: str | None = None
    """the entity (team) of wandb's project (None: wandb's default entity)"""
    preset: Literal["default", "paper"] = "default"
    """the defaults the other flags start from (flags given explicitly win; `--preset paper --help` shows them).
    `default`: adaptation in minutes on a CPU.
    `paper`: Duan & Wang's values and environment:
    --inner-lr 3e-4 --outer-lr 5e-4 --outer-optimizer adam --hidden-size 128 --collision original"""

    # Tasks
    obstacles: Literal["none", "easy", "medium", "hard"] = "medium"
    """obstacle level of nav_env"""
    targets: Literal["uniform", "random", "narrow"] = "uniform"
    """target (task) distribution the goals are drawn from"""
    see_goal: bool = True
    """if toggled, the observation includes the goal (x, y, gx, gy); with --no-see-goal it is (x, y) and
    the goal must be found by adaptation"""
    collision: Literal["block", "stick", "original"] = "block"
    """nav_env's collision mode:
    `block`: a move into an obstacle or off the map is cancelled;
    `stick`: a contact with an obstacle freezes the agent on the grid;
    `original`: the papers' own environment (no walls, -800 off the map, sticky obstacles)"""

    # Algorithm
    num_iterations: int = 500
    """the number of meta-iterations (0: only evaluate the initial parameters)"""
    meta_batch_size: int = 8
    """the number of tasks per meta-iteration"""
    episodes_per_task: int = 20
    """episodes sampled per task for each inner step and for the validation (outer) loss"""
    inner_steps: int = 1
    """N, the number of inner policy-gradient steps (fresh episodes before each)"""
    inner_lr: float = 1.0
    """alpha, the inner (adaptation) SGD step size;
    large, because on normalised advantages (--norm-adv) a small step barely moves the policy"""
    outer_lr: float = 1e-3
    """beta, the meta (outer) learning rate"""
    outer_optimizer: Literal["sgd", "adam"] = "adam"
    """the meta optimizer;
    Adam's step does not scale with the meta-gradient's norm, which differs between MAML and FOMAML and grows with N"""
    gamma: float = 0.99
    """the discount factor gamma of the returns and advantages"""
    gae_lambda: float = 1.0
    """the lambda of generalised advantage estimation (1.0: discounted return minus the baseline)"""
    norm_adv: bool = True
    """toggles advantage normalisation (per task and batch), which makes inner_lr scale-free"""
    hidden_size: int = 64
    """width of the policy's two tanh hidden layers"""
    max_grad_norm: float = 1.0
    """clip the meta-gradient to this norm (0: no clipping)"""

    # Task sampling (a curriculum over the target distribution)
    task_sampler: Literal["uniform", "plr", "cvar"] = "uniform"
    """how the training goals are drawn: `uniform` from the target distribution; `plr` and `cvar` pick a goal
    bin per task by a difficulty learned per bin (the return gap R* - return after adaptation), then a goal of
    the target distribution in that bin: PLR's rank prioritisation with staleness (Jiang et al. 2021), or
    RoML's oversampling of the worst --cvar-alpha tail (Greenberg et al. 2023)"""
    sampler_bins: int = 10
    """plr / cvar: the goal bins are a grid of this many bins per axis over the map"""
    sampler_ema: float = 0.3
    """plr / cvar: the weight of an iteration's return gaps in their bin's score (an exponential moving average)"""
    plr_temperature: float = 0.1
    """plr: beta of the rank prioritisation P_S(bin) ~ rank(score)^(-1/beta) (PLR's default)"""
    plr_staleness: float = 0.1
    """plr: rho, the weight of the staleness distribution P_C(bin) ~ iterations since it was last trained on (PLR's default)"""
    cvar_alpha: float = 0.2
    """cvar: alpha, the tail: the hardest bins holding this fraction of the target distribution"""
    cvar_uniform: float = 0.2
    """cvar: the share of training tasks still drawn from the whole target distribution (the rest from the tail)"""

    # Evaluation and outputs
    eval_every: int = 50
    """evaluate on the held-out test tasks every this many iterations (0: only at the end)"""
    num_test_tasks: int = 16
    """the number of held-out test tasks"""
    test_seed: int = 0
    """seed of the held-out test tasks (kept apart from --seed so every run is tested on the same goals)"""
    eval_inner_steps: int | None = None
    """K: the final evaluation also measures adaptation after 0..K inner steps (K >= --inner-steps),
    reported as return_after_steps / distance_after_steps in summary.json (None: K = --inner-steps)"""
    save_model: bool = False
    """if toggled, save the meta-parameters to runs/{run_name}/{exp_name}.cleanrl_model"""
    load_model: str | None = None
    """path of saved meta-parameters to start from (None: a random initialisation);
    with --num-iterations 0 this evaluates them"""

    # Runs that survive (docs/runs.md)
    checkpoint_every: int = 10
    """write runs/{run_name}/checkpoint.pt (everything a continuation needs) every this many iterations, and
    always at the start, the end and on Ctrl-C / SIGTERM (0: only those)"""
    resume: str | None = None
    """continue the run in this folder (runs/{run_name}) from its checkpoint, with the flags it was started with;
    only --torch-threads may be given with it (None: start a new run)"""
    torch_threads: int = 1
    """torch's CPU threads (torch.set_num_threads). 1, because two runs side by side on two cores thrash
    with torch's default of one thread per core (docs/runs.md#threads)"""
    collapse_patience: int = 20
    """warn, and set "collapsed" in summary.json, after this many iterations in a row with a zero
    meta-gradient norm or a mean policy entropy below 1e-3 nats (0: never)"""


# --preset: the defaults the command line starts from (parse_args). `paper` is Duan & Wang's setting: their
# values (MAML with SGD, FOMAML with Adam, as in their paper) and their environment (nav_env's
# collision="original" replays their code's episodes exactly).
PRESETS = {
    "default": Args(),
    "paper": replace(Args(), preset="paper", inner_lr=3e-4, outer_lr=5e-4, outer_optimizer="adam", hidden_size=128,
                     collision="original"),
}


def fail(message: str) -> None:
    """Bad input: one line on stderr, exit code 2, nothing written."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def tyro_cli(default: Args, argv: list[str]) -> Args:
    """tyro.cli on top of `default`, with tyro's usage errors (a box of text on stderr) given as fail()'s one line."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            args = tyro.cli(Args, default=default, args=argv)
    except SystemExit as exit:
        if not exit.code:  # --help, printed on stdout
            raise
        rows = [row.strip("│╭╮╰╯| ") for row in captured.getvalue().splitlines()[1:]]  # without the title
        message = []
        for row in rows:  # the message: the rows up to the first rule below them (then come help texts)
            if not row.strip("─-+ "):
                if message:
                    break
                continue
            message.append(row)
        fail(" ".join(" ".join(message or rows).split()))
    sys.stderr.write(captured.getvalue())  # tyro's warnings, if any
    return args


def parse_args(argv: list[str]) -> Args:
    """The command line on top of the preset it names. --preset is read first, so that every other flag defaults
    to that preset's value (which --help shows) and a flag given explicitly wins."""
    chosen = "default"
    for token, following in zip(argv, argv[1:] + [""]):
        if token == "--preset" and not following.startswith("-"):
            chosen = following
        elif token.startswith("--preset="):
            chosen = token[len("--preset="):]
    if chosen not in PRESETS:
        fail(f"--preset {chosen!r} is not a preset; allowed: {', '.join(PRESETS)}")
    return tyro_cli(PRESETS[chosen], argv)


def resolve(args: Args) -> Args:
    """Check every value (exit 2 on bad input, in one line) and set --eval-inner-steps' None to --inner-steps."""
    for name, value in vars(args).items():
        if isinstance(value, float) and not math.isfinite(value):
            fail(f"--{name.replace('_', '-')} must be a finite number, got {value}")
    for name in ("seed", "test_seed"):
        if not 0 <= getattr(args, name) < 2**32:
            fail(f"--{name.replace('_', '-')} must be in [0, 2**32 - 1], got {getattr(args, name)}")
    if not args.track and (args.wandb_project_name != "meta-rl" or args.wandb_entity is not None):
        fail("--wandb-project-name and --wandb-entity are for --track; add --track or drop them")
    if args.track and importlib.util.find_spec("wandb") is None:
        fail("--track needs the wandb package: pip install wandb")
    if "/" in args.exp_name or not args.exp_name:
        fail(f"--exp-name must be a non-empty name without '/', got {args.exp_name!r}")
    positive = ["meta_batch_size", "episodes_per_task", "inner_steps", "inner_lr", "outer_lr", "hidden_size",
                "num_test_tasks", "torch_threads"]
    for name in positive:
        if not getattr(args, name) > 0:
            fail(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    for name in ("num_iterations", "eval_every", "max_grad_norm", "checkpoint_every", "collapse_patience"):
        if getattr(args, name) < 0:
            fail(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    for name in ("gamma", "gae_lambda"):
        if not 0 <= getattr(args, name) <= 1:
            fail(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(args, name)}")
    if args.eval_inner_steps is None:
        args.eval_inner_steps = args.inner_steps
    if args.eval_inner_steps < args.inner_steps:
        fail(f"--eval-inner-steps must be >= --inner-steps ({args.inner_steps}), got {args.eval_inner_steps}")
    for name in ("sampler_bins", "plr_temperature"):
        if not getattr(args, name) > 0:
            fail(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    for name in ("sampler_ema", "cvar_alpha", "cvar_uniform"):
        if not 0 < getattr(args, name) <= 1:
            fail(f"--{name.replace('_', '-')} must be in (0, 1], got {getattr(args, name)}")
    if not 0 <= args.plr_staleness <= 1:
        fail(f"--plr-staleness must be in [0, 1], got {args.plr_staleness}")
    if args.task_sampler != "uniform" and args.collision == "original":
        fail(f"--task-sampler {args.task_sampler} scores tasks by their gap to the exact optimum, which nav_env "
             f"computes for --collision block and stick; allowed with original: uniform")
    if args.load_model is not None and not os.path.isfile(args.load_model):
        fail(f"--load-model {args.load_model}: no such file")
    return args


# --- runs that survive: checkpoints, atomic writes, signals, divergence (docs/runs.md) -------------------
CHECKPOINT = "checkpoint.pt"
EXIT_DIVERGED = 3  # exit code of a run stopped by a non-finite loss, gradient, parameter or logit
COLLAPSE_ENTROPY = 1e-3  # nats: a policy this sure of its actions no longer explores
# Test hook (tests/test_resume.py): with this set to an iteration, the process kills itself with SIGKILL
# halfway through writing that iteration's checkpoint, the moment a kill can do the most harm.
KILL_IN_CHECKPOINT = os.environ.get("META_RL_TEST_KILL_IN_CHECKPOINT")


class Diverged(Exception):
    """A non-finite loss, gradient, parameter or logit: the run stops and keeps its last good checkpoint."""


def check_finite(**values) -> None:
    for what, value in values.items():
        if not bool(torch.isfinite(torch.as_tensor(value)).all()):
            raise Diverged(f"non-finite {what.replace('_', ' ')}")


def optimizer_step(optimizer) -> None:
    try:
        optimizer.step()
    except RuntimeError as error:  # Adam's lr / (1 - beta1^t) beyond float32
        if "overflow" not in str(error):
            raise
        raise Diverged("non-finite optimizer step (its step size overflows float32)") from None


def atomic_write(path: str, data: bytes) -> None:
    """Write path.tmp in the same folder, then rename it over path: path is never half-written."""
    with open(path + ".tmp", "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)


def write_json(path: str, content: dict) -> None:
    atomic_write(path, json.dumps(content, indent=2, default=str).encode())


def save_checkpoint(path: str, state: dict) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    if KILL_IN_CHECKPOINT == str(state["iteration"]):
        with open(path + ".tmp", "wb") as f:
            f.write(data[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    atomic_write(path, data)


def rng_state(generators: dict) -> dict:
    """Every random generator the loop draws from: python's, numpy's global one, torch's (CPU and CUDA),
    and the numpy Generators given (task sampler, envs)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
             "generators": {name: copy.deepcopy(g.bit_generator.state) for name, g in generators.items()}}
    if torch.cuda.is_available():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, generators: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["torch_cuda"])
    for name, g in generators.items():
        g.bit_generator.state = state["generators"][name]


def load_checkpoint(path: str, flag: str) -> dict:
    """This script's checkpoint at path, or exit 2 in one line."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)  # our own file: numpy RNG states
    except Exception as error:  # a truncated or foreign file: UnpicklingError, EOFError, RuntimeError, ...
        fail(f"{flag}: {path} is not a readable checkpoint ({type(error).__name__})")
    if not isinstance(checkpoint, dict) or checkpoint.get("script") != os.path.basename(__file__):
        fail(f"{flag}: {path} is not a checkpoint of {os.path.basename(__file__)}")
    return checkpoint


def resume_args(cli: Args) -> tuple[Args, dict, str]:
    """--resume runs/<run>: the run's own flags, its last checkpoint and its folder; exit 2 if it cannot go on."""
    given = sorted({token.split("=")[0] for token in sys.argv[1:] if token.startswith("--")}
                   - {"--resume", "--torch-threads"})
    if given:
        fail(f"--resume continues a run with the flags it was started with; {given[0]} cannot be given with it "
             f"(only --torch-threads can)")
    run_dir = os.path.normpath(cli.resume)
    if not os.path.isdir(run_dir):
        fail(f"--resume {cli.resume}: no such run folder")
    if not os.path.isfile(os.path.join(run_dir, CHECKPOINT)):
        fail(f"--resume {cli.resume}: no {CHECKPOINT} in it (the run stopped before its first checkpoint)")
    checkpoint = load_checkpoint(os.path.join(run_dir, CHECKPOINT), f"--resume {cli.resume}")
    args = Args(**checkpoint["args"])
    args.torch_threads = cli.torch_threads
    if not args.torch_threads > 0:
        fail(f"--torch-threads must be > 0, got {args.torch_threads}")
    return args, checkpoint, run_dir


def make_run_dir(run_dir: str) -> None:
    """Create the run's folder, or exit 2 in one line (a file named runs, a read-only working directory)."""
    try:
        os.makedirs(run_dir)
    except OSError as error:
        fail(f"cannot create the run folder {run_dir} ({error.strerror}); runs/ must be a folder this process "
             f"can write in the working directory")


class StopRequest:
    """Ctrl-C (SIGINT) and SIGTERM set `signum`; the loop stops between iterations. A second one exits at once
    (the last checkpoint is whole: every write is atomic)."""

    def __init__(self):
        self.signum = None
        signal.signal(signal.SIGINT, self.request)
        signal.signal(signal.SIGTERM, self.request)

    def request(self, signum, frame):
        if self.signum is not None:
            print(f"\n{signal.Signals(signum).name} again: stopping now, without a checkpoint", file=sys.stderr)
            os._exit(128 + signum)
        self.signum = signum


def format_progress(progress: tqdm) -> str:
    """Elapsed time and ETA of a tqdm bar, for the log lines."""
    d = progress.format_dict
    done = d["n"] - d.get("initial", 0)  # iterations run by this process (a resumed run starts further on)
    eta = d["elapsed"] / done * (d["total"] - d["n"]) if done and d["total"] else None
    return f"elapsed={tqdm.format_interval(d['elapsed'])} eta={'?' if eta is None else tqdm.format_interval(eta)}"


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
        self.net = nn.Sequential(
            layer_init(nn.Linear(obs_dim, hidden)), nn.Tanh(),
            layer_init(nn.Linear(hidden, hidden)), nn.Tanh(),
            layer_init(nn.Linear(hidden, num_actions), std=0.01),
        )

    def forward(self, obs):
        return self.net((obs - self.obs_mid) / self.obs_half_range)


def load_policy(model: Policy, args: Args) -> None:
    """Load --load-model's saved parameters into model, or exit 2 in one line."""
    try:
        saved = torch.load(args.load_model, map_location="cpu")
    except Exception:  # UnpicklingError, EOFError, a zip error, ...: not a file torch.save wrote
        fail(f"--load-model {args.load_model} is not a saved policy (torch.load cannot read it); allowed: a "
             f"{args.exp_name}.cleanrl_model written by --save-model")
    try:
        model.load_state_dict(saved)
    except Exception as error:  # another network: other keys or shapes
        lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
        fail(f"--load-model {args.load_model} does not fit this policy (a saved {args.exp_name}.cleanrl_model "
             f"with the same --hidden-size and --see-goal): {lines[1] if len(lines) > 1 else lines[0]}")


# --- losses and the meta-gradient (one task each; vmap runs them over the meta-batch) ---------------
# A batch is a dict of one task's samples: obs (n, obs_dim), actions (n,), advantages (n,) and mask (n,),
# where mask is 0 for the steps after an episode ended (rollouts have a fixed horizon).


def log_prob(model, params, obs, actions):
    logits = functional_call(model, params, (obs,))
    return torch.log_softmax(logits, dim=-1).gather(-1, actions.unsqueeze(-1)).squeeze(-1)


def inner_loss(model, params, batch):
    """ProMP's LVC surrogate, -mean_t pi(a_t|s_t) / stopgrad(pi(a_t|s_t)) * A_t, at the sampling parameters."""
    logp = log_prob(model, params, batch["obs"], batch["actions"])
    ratio = torch.exp(logp - logp.detach())  # = 1 in value; its gradient is the score function
    return -(ratio * batch["advantages"] * batch["mask"]).sum() / batch["mask"].sum()


def outer_loss(model, params, batch):
    """The vanilla policy-gradient loss -mean_t log pi(a_t|s_t) * A_t of the validation episodes."""
    logp = log_prob(model, params, batch["obs"], batch["actions"])
    return -(logp * batch["advantages"] * batch["mask"]).sum() / batch["mask"].sum()


def inner_update(model, params, batch, inner_lr: float):
    """One inner SGD step on the LVC loss (Finn et al. 2017, Eq. 1); differentiable w.r.t. params (torch.func
    nests grads)."""
    grads = grad(inner_loss, argnums=1)(model, params, batch)
    return {name: params[name] - inner_lr * grads[name] for name in params}


def meta_gradient(model, adapted_params, validation_batch):
    """FOMAML: the gradient of each task's validation loss at its adapted parameters theta_N, summed over tasks
    (the first-order approximation of Finn et al. 2017, Eq. 3). Returns (gradient dict, summed loss)."""
    task_grads, task_losses = vmap(grad_and_value(outer_loss, argnums=1), in_dims=(None, 0, 0))(
        model, adapted_params, validation_batch
    )
    return {name: g.sum(0) for name, g in task_grads.items()}, task_losses.sum()


# --- sampling, baseline and advantages (batched over tasks, no grad) --------------------------------


def task_logits(model, task_params, obs):
    """Every task's own policy on its envs' observations: obs (tasks, n, obs_dim) -> logits (tasks, n, actions).

    Policy's MLP written with batched matrix products over the task dim (task_params has a leading task
    dim), for the sampling loop: it avoids vmap(functional_call)'s per-call overhead, which dominates on a
    network this small. tests/test_maml.py checks that the two agree.
    """
    x = (obs - model.obs_mid) / model.obs_half_range
    for index, layer in enumerate(model.net):
        if isinstance(layer, nn.Linear):
            weight, bias = task_params[f"net.{index}.weight"], task_params[f"net.{index}.bias"]
            x = torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))
        else:
            x = layer(x)
    return x


def discount_matrix(rate: float, horizon: int) -> torch.Tensor:
    """M[t, u] = rate^(u - t) for u >= t, else 0; x @ M.T sums the discounted future of x at every t."""
    steps = torch.arange(horizon, dtype=torch.float64)
    exponent = steps[None, :] - steps[:, None]
    return torch.where(exponent >= 0, rate ** exponent.clamp(min=0), torch.zeros(()))


def linear_baseline(features, returns, mask, reg: float = 1e-5):
    """Per-task ridge regression of returns on features (the MAML paper's linear feature baseline).

    features (tasks, n, F), returns and mask (tasks, n); returns the fitted values (tasks, n).
    """
    weighted = features * mask.unsqueeze(-1)
    gram = weighted.transpose(1, 2) @ features + reg * torch.eye(features.shape[-1], dtype=features.dtype)
    coef = torch.linalg.solve(gram, weighted.transpose(1, 2) @ returns.unsqueeze(-1))
    return (features @ coef).squeeze(-1)


def compute_advantages(obs, rewards, mask, gamma: float, gae_lambda: float, norm_adv: bool):
    """GAE(gamma, lambda) (Schulman et al. 2016) with a per-task linear baseline, as one matrix product.

    obs (tasks, episodes, T, obs_dim) normalised to [-1, 1]; rewards, mask (tasks, episodes, T). The
    horizon is the episode's end: the value after the last step (or after reaching the goal) is 0.
    """
    tasks, episodes, horizon = rewards.shape
    rewards, mask = rewards.double(), mask.double()
    returns = rewards @ discount_matrix(gamma, horizon).T
    time = (torch.arange(horizon, dtype=torch.float64) / horizon).expand(tasks, episodes, horizon).unsqueeze(-1)
    features = torch.cat([obs.double(), obs.double() ** 2, time, time**2, time**3, torch.ones_like(time)], dim=-1)
    values = linear_baseline(
        features.reshape(tasks, episodes * horizon, -1), returns.reshape(tasks, -1), mask.reshape(tasks, -1)
    ).reshape(tasks, episodes, horizon) * mask
    next_values = torch.cat([values[..., 1:], torch.zeros_like(values[..., :1])], dim=-1)
    deltas = (rewards + gamma * next_values - values) * mask
    advantages = deltas @ discount_matrix(gamma * gae_lambda, horizon).T
    if norm_adv:
        count = mask.sum(dim=(1, 2), keepdim=True)
        mean = (advantages * mask).sum(dim=(1, 2), keepdim=True) / count
        std = (((advantages - mean) ** 2 * mask).sum(dim=(1, 2), keepdim=True) / count).sqrt()
        advantages = (advantages - mean) / (std + 1e-8)
    return (advantages * mask).float()


def rollout(envs, model, task_params, goals, args, device):
    """Run args.episodes_per_task episodes of every task in lockstep for the full horizon.

    task_params: parameter dict with a leading task dim (each task's own, possibly adapted, policy).
    Returns the task-batched samples for the losses and the per-episode statistics.
    """
    tasks, episodes, horizon = len(goals), args.episodes_per_task, nav_env.MAX_EPISODE_STEPS
    obs_np, _ = envs.reset(options={"goals": np.repeat(goals, episodes, axis=0)})
    obs = torch.zeros((horizon, tasks * episodes) + envs.single_observation_space.shape)
    logits = torch.zeros((horizon, tasks * episodes, int(envs.single_action_space.n)), device=device)
    actions = torch.zeros((horizon, tasks * episodes), dtype=torch.long)
    rewards = np.zeros((horizon, tasks * episodes), dtype=np.float32)
    alive = np.ones((horizon + 1, tasks * episodes), dtype=bool)  # alive[t]: the episode runs at step t
    positions = np.zeros((horizon + 1, tasks * episodes, 2))
    positions[0] = envs.positions
    with torch.no_grad():
        for t in range(horizon):
            obs[t] = torch.from_numpy(obs_np)
            logits[t] = task_logits(model, task_params, obs[t].view(tasks, episodes, -1).to(device)).flatten(0, 1)
            try:
                actions[t] = torch.multinomial(torch.softmax(logits[t], -1), 1).squeeze(-1).cpu()
            except RuntimeError:  # multinomial refuses non-finite probabilities: name the cause
                check_finite(action_logits=logits[t])
                raise
            obs_np, rewards[t], terminated, truncated, info = envs.step(actions[t].numpy())
            positions[t + 1] = envs.positions
            alive[t + 1] = ~(terminated | truncated)
        reached = terminated.reshape(tasks, episodes)  # with autoreset disabled an ended episode keeps its flag
        check_finite(action_logits=logits)
        mask = torch.from_numpy(alive[:-1]).float()
        step_entropy = torch.special.entr(torch.softmax(logits, -1)).sum(-1).cpu()
    distances = info["distance"].reshape(tasks, episodes)  # an ended env stays where it ended
    entropy = float((step_entropy * mask).sum() / mask.sum())
    rewards = torch.from_numpy(rewards)

    def by_task(x):  # (T, tasks * episodes, ...) -> (tasks, episodes, T, ...)
        return x.reshape((horizon, tasks, episodes) + x.shape[2:]).movedim(0, 2)

    obs, actions, rewards, mask = by_task(obs), by_task(actions), by_task(rewards), by_task(mask)
    normalised_obs = (obs - model.obs_mid.cpu()) / model.obs_half_range.cpu()  # baseline features in [-1, 1]
    advantages = compute_advantages(normalised_obs, rewards, mask, args.gamma, args.gae_lambda, args.norm_adv)
    batch = {
        "obs": obs.reshape(tasks, episodes * horizon, -1),
        "actions": actions.reshape(tasks, -1),
        "advantages": advantages.reshape(tasks, -1),
        "mask": mask.reshape(tasks, -1),
    }
    stats = {
        "returns": rewards.sum(-1).numpy(),  # (tasks, episodes)
        "distances": distances,
        "env_steps": int(mask.sum()),
        "positions": positions,
        "entropy": entropy,  # the policy's mean entropy over the steps taken
        "reached": reached,  # (tasks, episodes): the episode ended within the goal radius
    }
    return {k: v.to(device) for k, v in batch.items()}, stats


def sample_and_adapt(envs, model, params, goals, num_steps: int, args, device):
    """Steps 1-3 of a meta-iteration for every task at once, without building a graph.

    Returns the batches sampled with theta_0..theta_num_steps, their statistics, and the adapted
    parameters theta_num_steps (with a leading task dim).
    """
    task_params = {name: p.detach().expand((len(goals),) + p.shape) for name, p in params.items()}
    batches, stats = [], []
    for step in range(num_steps + 1):
        batch, batch_stats = rollout(envs, model, task_params, goals, args, device)
        batches.append(batch)
        stats.append(batch_stats)
        if step < num_steps:
            task_params = vmap(inner_update, in_dims=(None, 0, 0, None))(model, task_params, batch, args.inner_lr)
    return batches, stats, task_params


def evaluate(envs, model, params, goals, num_steps: int, args, device):
    """Mean return and final distance over the test tasks after 0..num_steps inner steps."""
    _, stats, _ = sample_and_adapt(envs, model, params, goals, num_steps, args, device)
    return [float(s["returns"].mean()) for s in stats], [float(s["distances"].mean()) for s in stats], stats


def exact_optimum(goals, args):
    """Each task's optimal return R* and whether an optimal policy reaches its goal (nav_env's exact DP), or
    None for --collision original, whose float dynamics the DP does not model."""
    if args.collision == "original":
        return None
    return nav_env.optimal_returns(goals, args.obstacles, args.collision)


def mean_or_none(values: np.ndarray, where: np.ndarray) -> float | None:
    return float(values[where].mean()) if where.any() else None


def outcome_metrics(batch_stats, quadrants: np.ndarray, optimum) -> dict:
    """Success and return gap of one batch of test episodes, overall and per quadrant (Q1..Q4 of nav_env).

    success_rate: the fraction of episodes that end within the goal radius; on_reachable: the same over
    the tasks whose optimal policy reaches the goal; return_gap: the mean over tasks of R* minus the task's
    mean return. A mean over no task (a quadrant without a test goal) is None, and so is everything that
    needs R* when there is none.
    """
    success = batch_stats["reached"].mean(1)  # per task; every task has the same number of episodes
    everywhere = np.ones(len(success), dtype=bool)
    in_quadrant = [quadrants == q for q in range(len(nav_env.QUADRANTS))]
    metrics = {"success_rate": mean_or_none(success, everywhere),
               "success_rate_by_quadrant": [mean_or_none(success, m) for m in in_quadrant]}
    if optimum is None:
        return {**metrics, "success_rate_on_reachable": None, "success_rate_on_reachable_by_quadrant": [None] * 4,
                "return_gap": None, "return_gap_by_quadrant": [None] * 4}
    optimal_return, reachable = optimum
    gap = optimal_return - batch_stats["returns"].mean(1)
    return {**metrics, "success_rate_on_reachable": mean_or_none(success, reachable),
            "success_rate_on_reachable_by_quadrant": [mean_or_none(success, m & reachable) for m in in_quadrant],
            "return_gap": mean_or_none(gap, everywhere), "return_gap_by_quadrant": [mean_or_none(gap, m) for m in in_quadrant]}


def optimal_metrics(quadrants: np.ndarray, optimum) -> dict:
    """The optimal policy's success rate on the test tasks (it is deterministic: 1 or 0 per task)."""
    if optimum is None:
        return {"optimal_success_rate": None, "optimal_success_rate_by_quadrant": [None] * 4}
    reached = optimum[1].astype(np.float64)
    return {"optimal_success_rate": mean_or_none(reached, np.ones(len(reached), dtype=bool)),
            "optimal_success_rate_by_quadrant": [mean_or_none(reached, quadrants == q) for q in range(4)]}


def trajectory_image(stats, goals, args) -> np.ndarray:
    """Two panels of the first episode of the first (up to) 4 held-out test tasks (test_goals' order in
    summary.json): left before adaptation (theta), right after the N inner steps (theta_N). Each panel's title
    says which; a task's trajectory and goal share a colour (nav_env.render_trajectories)."""
    shown = min(4, len(goals))
    tasks = f"test tasks 1-{shown}" if shown > 1 else "test task 1"
    steps = len(stats) - 1
    panels = []
    for title, batch_stats in ((f"{tasks}, episode 1: before adaptation", stats[0]),
                               (f"{tasks}, episode 1: after {steps} inner step{'s' * (steps != 1)}", stats[-1])):
        first_episodes = [batch_stats["positions"][:, task * args.episodes_per_task] for task in range(shown)]
        panels.append(nav_env.render_trajectories(first_episodes, goals[:shown], obstacles=args.obstacles, size=320,
                                                  title=title, legend=True))
    return np.concatenate(panels, axis=1)


# --- task sampling: a difficulty-aware curriculum over goal bins ------------------------------------------


class TaskSampler:
    """The training goals of each meta-iteration, and what the sampler learned about where tasks are hard.

    `uniform` draws the meta-batch from the target distribution (nav_env.sample_goals). `plr` and `cvar`
    pick each task's bin from probabilities(), then take the first goal in that bin among goals drawn from
    the target distribution (in rounds of ROUND goals): the batch's bins follow probabilities() exactly,
    and inside a bin the goals follow the target distribution, so the support stays the target's (weighting
    a fixed pool of a few candidates per task could give a bin no more than its few candidates). A bin's
    score is an exponential moving average of the return gap R* - return after adaptation of its training
    tasks; a bin with no score yet counts as the hardest until it is trained on. `mass` counts the goals
    drawn per bin: the target distribution's share of each bin, estimated as training goes.
    """

    ROUND = 512  # goals drawn from the target distribution at a time
    MAX_ROUNDS = 100  # a bin these rounds miss (the target almost never reaches it) gets a goal of any bin

    def __init__(self, args):
        self.kind, self.bins, self.args = args.task_sampler, args.sampler_bins, args
        num_bins = self.bins**2
        self.score = np.zeros(num_bins)  # EMA of the return gap, valid where visits > 0
        self.visits = np.zeros(num_bins, dtype=np.int64)  # training tasks per bin
        self.last_trained = np.zeros(num_bins, dtype=np.int64)  # PLR's C_i: the iteration it was last trained on
        self.mass = np.zeros(num_bins, dtype=np.int64)  # candidates drawn per bin
        self.iteration = 0  # PLR's c
        self.quadrant_counts = np.zeros(len(nav_env.QUADRANTS), dtype=np.int64)  # training tasks per quadrant

    def state_dict(self) -> dict:
        return {name: copy.deepcopy(getattr(self, name))
                for name in ("score", "visits", "last_trained", "mass", "iteration", "quadrant_counts")}

    def load_state_dict(self, state: dict) -> None:
        for name, value in state.items():
            setattr(self, name, copy.deepcopy(value))

    def bin_of(self, goals) -> np.ndarray:
        """Bin index x_bin * bins + y_bin of each goal (n, 2), from its grid cell (exact; x = 10 joins the last bin)."""
        cells = np.rint(np.asarray(goals) * nav_env.CELLS_PER_UNIT).astype(np.int64)
        index = np.minimum(cells * self.bins // nav_env.GRID_MAX, self.bins - 1)
        return index[:, 0] * self.bins + index[:, 1]

    def probabilities(self) -> np.ndarray:
        """The intended share of training tasks per bin (sums to 1), a function of the state alone.

        Bins the target distribution has not been seen to reach (mass 0) get 0. plr (Prioritized Level Replay,
        Jiang et al. 2021): (1 - rho) P_S + rho P_C, P_S ~ rank(score)^(-1/beta) with rank 1 the highest score
        (ties share the best rank), P_C ~ c - C_i, the iterations since the bin was last trained on. cvar
        (RoML, Greenberg et al. 2023, over-samples the tasks of the lowest-return alpha tail, which it learns
        with the cross-entropy method; here the bins' scores rank the tasks): the bins of the highest scores
        holding a fraction alpha of the target's mass, the last one in part, get (1 - u) / alpha times their
        mass, and every bin u times its mass (u = --cvar-uniform, which keeps every goal in play).
        """
        support = self.mass > 0
        if not support.any():
            return np.full(len(self.mass), 1 / len(self.mass))
        mass = np.where(support, self.mass, 0) / self.mass.sum()
        if self.kind == "uniform":
            return mass
        score = np.where(self.visits > 0, self.score, np.inf)[support]  # no score yet: the hardest
        probabilities = np.zeros(len(self.mass))
        if self.kind == "plr":
            rank = 1 + (score[None, :] > score[:, None]).sum(1)
            by_score = rank.astype(np.float64) ** (-1 / self.args.plr_temperature)
            staleness = (self.iteration - self.last_trained[support]).astype(np.float64)
            by_staleness = staleness / staleness.sum() if staleness.sum() > 0 else np.full(len(score), 1 / len(score))
            rho = self.args.plr_staleness
            probabilities[support] = (1 - rho) * by_score / by_score.sum() + rho * by_staleness
        else:
            alpha, u = self.args.cvar_alpha, self.args.cvar_uniform
            share = mass[support]
            order = np.argsort(-score, kind="stable")
            before = np.zeros(len(score))
            before[order] = np.concatenate([[0.0], np.cumsum(share[order])[:-1]])  # mass of the harder bins
            in_tail = np.clip((alpha - before) / share, 0.0, 1.0)  # the fraction of the bin inside the alpha tail
            probabilities[support] = u * share + (1 - u) * share * in_tail / alpha
        return probabilities / probabilities.sum()

    def sample(self, num_tasks: int, rng: np.random.Generator, iteration: int) -> np.ndarray:
        """The meta-batch of goals (num_tasks, 2) for this iteration."""
        self.iteration = iteration
        if self.kind == "uniform":
            goals = nav_env.sample_goals(self.args.targets, num_tasks, rng)
        else:
            goals, missing = np.zeros((num_tasks, 2)), np.ones(num_tasks, dtype=bool)
            chosen = None
            for _ in range(self.MAX_ROUNDS):
                candidates = nav_env.sample_goals(self.args.targets, self.ROUND, rng)
                bins = self.bin_of(candidates)
                self.mass += np.bincount(bins, minlength=len(self.mass))
                if chosen is None:  # after the first round, so the support includes every bin seen so far
                    chosen = rng.choice(len(self.mass), num_tasks, p=self.probabilities())
                free = np.ones(len(candidates), dtype=bool)
                for task in np.flatnonzero(missing):
                    match = np.flatnonzero(free & (bins == chosen[task]))
                    if len(match):
                        goals[task], free[match[0]], missing[task] = candidates[match[0]], False, False
                if not missing.any():
                    break
            goals[missing] = candidates[free][: missing.sum()]
        self.quadrant_counts += np.bincount(nav_env.goal_quadrants(goals), minlength=len(self.quadrant_counts))
        return goals

    def update(self, goals, gaps, iteration: int) -> None:
        """Fold this iteration's return gaps (one per goal) into their bins' scores."""
        bins = self.bin_of(goals)
        for b in np.unique(bins):
            gap = float(np.mean(np.asarray(gaps)[bins == b]))
            ema = self.args.sampler_ema
            self.score[b] = gap if self.visits[b] == 0 else (1 - ema) * self.score[b] + ema * gap
            self.visits[b] += int((bins == b).sum())
            self.last_trained[b] = iteration

    def difficulty_map(self) -> np.ndarray:
        """The bins' scores as (bins, bins), row y_bin from the bottom, column x_bin (NaN: no score yet)."""
        scores = np.where(self.visits > 0, self.score, np.nan)
        return scores.reshape(self.bins, self.bins).T


def heat_colours(level: np.ndarray) -> np.ndarray:
    """difficulty_image's colour scale: level 0 -> white, 1 -> red, as RGB floats (..., 3)."""
    fade = 255 * (1 - 0.85 * np.asarray(level, dtype=np.float64))
    return np.stack([np.full(fade.shape, 255.0), fade, fade], -1)


NO_SCORE_GREY = 190  # difficulty_image's colour of a bin with no score yet


def difficulty_image(difficulty: np.ndarray, obstacles: str, title: str, size: int = 320) -> np.ndarray:
    """The bins' scores over the map (obstacles on top), with a colour scale under it: white is a return gap of
    0 (the optimum R*), red the highest gap so far (its value written at the bar's end), grey a bin with no
    score yet. The gap is in units of return (nav_env's reward summed over an episode). Returns uint8 (H, size, 3)."""
    from PIL import Image, ImageDraw  # as nav_env.render_trajectories

    top = np.nanmax(difficulty) if np.isfinite(difficulty).any() else 0.0
    base = nav_env.render_trajectories([], [], obstacles=obstacles, size=size, title=title)
    map_part = base[:size]  # anything render_trajectories draws below the size x size map stays as it is
    margin, scale = nav_env.render_layout(size)
    pixels = np.arange(size) + 0.5
    x, y = (pixels - margin) / scale, (size - margin - pixels) / scale  # x per column, y per row
    bins = len(difficulty)
    inside = ((0 <= y) & (y < nav_env.MAP_SIZE))[:, None] & ((0 <= x) & (x < nav_env.MAP_SIZE))[None, :]
    row = np.clip((y / nav_env.MAP_SIZE * bins).astype(int), 0, bins - 1)
    column = np.clip((x / nav_env.MAP_SIZE * bins).astype(int), 0, bins - 1)
    values = difficulty[row[:, None], column[None, :]]
    heat = heat_colours(np.clip(np.nan_to_num(values, nan=0.0) / (top if top > 0 else 1.0), 0.0, 1.0))
    heat[np.isnan(values)] = NO_SCORE_GREY
    heat[~inside] = 255.0
    heat_map = np.minimum(map_part, heat.astype(np.uint8))  # the map's lines and obstacles are darker than the heat

    # the colour scale: a bar from 0 (white) to the highest gap (red), and the grey of "no score yet"
    legend = Image.new("RGB", (size, 44), (255, 255, 255))
    draw = ImageDraw.Draw(legend)
    draw.text((margin, 2), "colour: return gap R* - return after adaptation", fill=(0, 0, 0))
    bar_left, bar_right, bar_top, bar_bottom = margin + 10, margin + 10 + size * 2 // 5, 17, 27
    legend_pixels = np.asarray(legend).copy()
    legend_pixels[bar_top:bar_bottom, bar_left:bar_right] = heat_colours(
        np.linspace(0.0, 1.0, bar_right - bar_left))[None].astype(np.uint8)
    legend = Image.fromarray(legend_pixels)
    draw = ImageDraw.Draw(legend)
    draw.rectangle([bar_left - 1, bar_top - 1, bar_right, bar_bottom], outline=(0, 0, 0))
    draw.text((margin, bar_top - 1), "0", fill=(0, 0, 0))
    draw.text((bar_right + 4, bar_top - 1), f"{top:.0f}", fill=(0, 0, 0))
    grey_left = bar_right + 4 + 6 * max(len(f"{top:.0f}"), 4) + 8
    draw.rectangle([grey_left, bar_top, grey_left + 10, bar_bottom - 1], fill=(NO_SCORE_GREY,) * 3, outline=(0, 0, 0))
    draw.text((grey_left + 14, bar_top - 1), "no score yet", fill=(0, 0, 0))
    draw.text((margin, 31), "(return: the reward summed over an episode)", fill=(0, 0, 0))
    return np.concatenate([heat_map, base[size:], np.asarray(legend)], axis=0)


def none_if_nan(values) -> list:
    """A nested list with NaN as None (null in JSON)."""
    return [none_if_nan(v) if np.ndim(v) else (None if np.isnan(v) else float(v)) for v in values]


if __name__ == "__main__":
    cli = parse_args(sys.argv[1:])
    stop = StopRequest()  # from here on Ctrl-C / SIGTERM stop the run cleanly, between iterations
    if cli.resume is not None:  # the run's own flags, and everything its loop carried
        args, checkpoint, run_dir = resume_args(cli)
    else:
        args, checkpoint = resolve(cli), None
        run_dir = f"runs/nav-{args.obstacles}-{args.targets}__{args.exp_name}__{args.seed}__{int(time.time())}"
    torch.set_num_threads(args.torch_threads)

    # TRY NOT TO MODIFY: seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    if args.cuda and not torch.cuda.is_available():
        print("--cuda given but no CUDA device is available: running on the CPU")
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    task_rng = np.random.default_rng([0, args.seed])  # training goals
    test_goals = nav_env.sample_goals(args.targets, args.num_test_tasks, np.random.default_rng([1, args.test_seed]))
    test_quadrants, test_optimum = nav_env.goal_quadrants(test_goals), exact_optimum(test_goals, args)

    env_kwargs = dict(obstacles=args.obstacles, see_goal=args.see_goal, collision=args.collision,
                      autoreset_mode="Disabled")  # fixed-horizon rollouts: an ended episode waits, masked out
    envs = nav_env.NavigationVectorEnv(args.meta_batch_size * args.episodes_per_task, **env_kwargs)
    test_envs = nav_env.NavigationVectorEnv(args.num_test_tasks * args.episodes_per_task, **env_kwargs)
    envs.reset(seed=args.seed)
    test_envs.reset(seed=args.test_seed)
    obs_space = envs.single_observation_space
    model = Policy(obs_space.shape[0], int(envs.single_action_space.n), args.hidden_size, obs_space.low, obs_space.high)
    if args.load_model is not None and checkpoint is None:
        load_policy(model, args)
    model = model.to(device)
    params = dict(model.named_parameters())
    if args.outer_optimizer == "adam":
        optimizer = torch.optim.Adam(params.values(), lr=args.outer_lr)
    else:
        optimizer = torch.optim.SGD(params.values(), lr=args.outer_lr)
    generators = {"task_rng": task_rng, "envs": envs.np_random, "test_envs": test_envs.np_random}
    sampler = TaskSampler(args)
    sampler_times = []  # seconds per iteration spent drawing the goals and scoring them
    checkpoint_path = os.path.join(run_dir, CHECKPOINT)

    global_step, start_iteration, elapsed_before = 0, 0, 0.0
    iteration_times, iteration_sps = [], []
    collapse_count, collapsed_at = 0, None  # iterations in a row with a zero meta-gradient or entropy; when
    if checkpoint is not None:  # continue where the checkpoint left off, in the run's own folder
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        start_iteration, global_step = checkpoint["iteration"], checkpoint["global_step"]
        iteration_times, iteration_sps = checkpoint["iteration_times"], checkpoint["iteration_sps"]
        collapse_count, collapsed_at = checkpoint["collapse_count"], checkpoint["collapsed_at"]
        elapsed_before = checkpoint["elapsed_s"]
        if "sampler" in checkpoint:  # a checkpoint written before the task samplers resumes with the uniform one
            sampler.load_state_dict(checkpoint["sampler"])
            sampler_times = checkpoint["sampler_times"]
        set_rng_state(checkpoint["rng"], generators)
        if os.path.isfile(os.path.join(run_dir, "summary.json")) and start_iteration == args.num_iterations:
            with open(os.path.join(run_dir, "summary.json")) as f:
                if not json.load(f).get("interrupted", True):
                    print(f"{run_dir} has finished (summary.json): nothing to resume")
                    sys.exit(0)
    else:
        make_run_dir(run_dir)
    start_time = time.time() - elapsed_before

    def checkpoint_state(iteration: int) -> dict:
        """Everything the loop carries from one iteration to the next."""
        return {"script": os.path.basename(__file__), "args": asdict(args), "iteration": iteration,
                "global_step": global_step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "rng": rng_state(generators), "iteration_times": iteration_times, "iteration_sps": iteration_sps,
                "collapse_count": collapse_count, "collapsed_at": collapsed_at, "elapsed_s": time.time() - start_time,
                "sampler": sampler.state_dict(), "sampler_times": sampler_times}

    if checkpoint is None:
        save_checkpoint(checkpoint_path, checkpoint_state(0))  # from here on a kill can be resumed
    # TensorBoard continues at the checkpoint's step: events a killed run wrote after it are dropped
    if args.track:  # Weights & Biases mirrors the TensorBoard logs, as CleanRL's --track does
        import wandb

        run_name = os.path.basename(run_dir)
        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True, config=vars(args),
                   name=run_name, id=re.sub(r"[^A-Za-z0-9_-]", "-", run_name), resume="allow", save_code=True)
    writer = SummaryWriter(run_dir, purge_step=start_iteration + 1 if checkpoint is not None else None)
    if checkpoint is None:
        writer.add_text(
            "hyperparameters",
            "|param|value|\n|-|-|\n%s" % ("\n".join([f"|{key}|{value}|" for key, value in vars(args).items()])),
        )

    def base_summary(iteration: int) -> dict:
        return {"args": asdict(args), "interrupted": False, "diverged": False, "collapsed": collapsed_at is not None,
                "collapsed_at_iteration": collapsed_at, "iterations": iteration, "env_steps": global_step}

    def stop_diverged(iteration: int, error: Diverged):
        """A non-finite value: summary.json says so, the last good checkpoint stays, exit EXIT_DIVERGED."""
        last_good = torch.load(checkpoint_path, map_location="cpu", weights_only=False)["iteration"]
        write_json(os.path.join(run_dir, "summary.json"), {**base_summary(iteration - 1), "diverged": True,
                                                           "diverged_at_iteration": iteration, "diverged_because": str(error)})
        progress.close()
        print(f"diverged at iteration {iteration}/{args.num_iterations}: {error}; usually --outer-lr or --inner-lr "
              f"is too large or --max-grad-norm 0. Last good checkpoint: {checkpoint_path} (iteration {last_good})",
              file=sys.stderr)
        writer.close()
        sys.exit(EXIT_DIVERGED)

    def log_evaluation(iteration: int, num_steps: int):
        try:
            returns, distances, stats = evaluate(test_envs, model, params, test_goals, num_steps, args, device)
        except Diverged as error:
            stop_diverged(iteration, error)
        writer.add_scalar("eval/pre_adaptation_return", returns[0], iteration)
        writer.add_scalar("eval/post_adaptation_return", returns[args.inner_steps], iteration)
        writer.add_scalar("eval/pre_adaptation_distance", distances[0], iteration)
        writer.add_scalar("eval/post_adaptation_distance", distances[args.inner_steps], iteration)
        writer.add_image("eval/trajectories", trajectory_image(stats[: args.inner_steps + 1], test_goals, args),
                         iteration, dataformats="HWC")
        outcomes = [outcome_metrics(s, test_quadrants, test_optimum) for s in stats]
        for when, metrics in (("pre_adaptation", outcomes[0]), ("post_adaptation", outcomes[args.inner_steps])):
            for name in ("success_rate", "success_rate_on_reachable", "return_gap"):
                if metrics[name] is not None:
                    writer.add_scalar(f"eval/{when}_{name}", metrics[name], iteration)
                for q, value in enumerate(metrics[f"{name}_by_quadrant"]):
                    if value is not None:
                        writer.add_scalar(f"eval/{when}_{name}_q{q + 1}", value, iteration)
        if sampler.kind != "uniform":
            writer.add_image("charts/difficulty_map", difficulty_image(
                sampler.difficulty_map(), args.obstacles, f"{args.task_sampler}: return gap per goal bin ({args.sampler_bins} x {args.sampler_bins})"),
                iteration, dataformats="HWC")
        if test_optimum is not None:
            writer.add_scalar("eval/optimal_success_rate", optimal_metrics(test_quadrants, test_optimum)["optimal_success_rate"],
                              iteration)
        return returns, distances, outcomes

    # elapsed time and ETA on stderr (every 30 s when it is not a terminal), and in the log lines
    progress = tqdm(total=args.num_iterations, initial=start_iteration, unit="it", file=sys.stderr, dynamic_ncols=True,
                    mininterval=0.5 if sys.stderr.isatty() else 30, disable=args.num_iterations == 0)
    completed = start_iteration
    for iteration in range(start_iteration + 1, args.num_iterations + 1):
        if stop.signum is not None:
            break
        iteration_start = time.time()
        goals = sampler.sample(args.meta_batch_size, task_rng, iteration)
        sampler_time = time.time() - iteration_start

        try:
            # ALGO LOGIC: sample, adapt N times and sample validation episodes, for all tasks at once
            batches, stats, adapted_params = sample_and_adapt(envs, model, params, goals, args.inner_steps, args,
                                                              device)

            # ALGO LOGIC: the meta-update (batches[-1] holds the validation episodes)
            grads, loss = meta_gradient(model, adapted_params, batches[-1])
            for name, p in params.items():
                p.grad = grads[name]
            grad_norm = torch.nn.utils.clip_grad_norm_(params.values(), args.max_grad_norm or float("inf"))
            check_finite(outer_loss=loss, meta_gradient=grad_norm)
            optimizer_step(optimizer)
            check_finite(parameters=torch.cat([p.detach().reshape(-1) for p in params.values()]))
        except Diverged as error:
            stop_diverged(iteration, error)

        if sampler.kind != "uniform":  # the training tasks' own post-adaptation gaps to their optimum
            scoring_start = time.time()
            sampler.update(goals, exact_optimum(goals, args)[0] - stats[-1]["returns"].mean(1), iteration)
            sampler_time += time.time() - scoring_start
        sampler_times.append(sampler_time)
        iteration_steps = sum(s["env_steps"] for s in stats)
        global_step += iteration_steps
        iteration_times.append(time.time() - iteration_start)
        iteration_sps.append(iteration_steps / iteration_times[-1])
        collapse_count = collapse_count + 1 if grad_norm.item() == 0 or stats[0]["entropy"] < COLLAPSE_ENTROPY else 0
        if args.collapse_patience and collapse_count >= args.collapse_patience and collapsed_at is None:
            collapsed_at = iteration
            tqdm.write(f"warning: the policy has collapsed: a zero meta-gradient norm or an entropy below "
                       f"{COLLAPSE_ENTROPY} for {collapse_count} iterations in a row (iteration {iteration}); "
                       f"usually --outer-lr is too large", file=sys.stderr)

        # TRY NOT TO MODIFY: record rewards for plotting purposes. The x axis is the meta-iteration, as in
        # the papers' figures (charts/env_steps maps it to env steps).
        writer.add_scalar("charts/pre_adaptation_return", stats[0]["returns"].mean(), iteration)
        writer.add_scalar("charts/post_adaptation_return", stats[-1]["returns"].mean(), iteration)
        writer.add_scalar("charts/pre_adaptation_distance", stats[0]["distances"].mean(), iteration)
        writer.add_scalar("charts/post_adaptation_distance", stats[-1]["distances"].mean(), iteration)
        writer.add_scalar("charts/policy_entropy", stats[0]["entropy"], iteration)
        writer.add_scalar("charts/env_steps", global_step, iteration)
        writer.add_scalar("charts/iteration_time", iteration_times[-1], iteration)
        writer.add_scalar("charts/SPS", int(iteration_sps[-1]), iteration)
        writer.add_scalar("losses/outer_loss", loss.item(), iteration)
        writer.add_scalar("losses/meta_grad_norm", grad_norm.item(), iteration)
        writer.add_scalar("charts/sampler_time", sampler_time, iteration)
        for q, share in enumerate(np.bincount(nav_env.goal_quadrants(goals), minlength=4) / len(goals)):
            writer.add_scalar(f"charts/sampled_share_q{q + 1}", share, iteration)
        if args.eval_every and iteration % args.eval_every == 0 and iteration < args.num_iterations:
            log_evaluation(iteration, args.inner_steps)
        progress.update(1)
        if iteration % 10 == 0 or iteration in (1, args.num_iterations):
            tqdm.write(f"iteration {iteration}/{args.num_iterations} global_step={global_step} "
                       f"pre_adaptation_return={stats[0]['returns'].mean():.1f} "
                       f"post_adaptation_return={stats[-1]['returns'].mean():.1f} "
                       f"post_adaptation_distance={stats[-1]['distances'].mean():.2f} SPS={int(iteration_sps[-1])} "
                       f"{format_progress(progress)}", file=sys.stdout)
            sys.stdout.flush()
        completed = iteration
        if (args.checkpoint_every and iteration % args.checkpoint_every == 0) or iteration == args.num_iterations:
            save_checkpoint(checkpoint_path, checkpoint_state(iteration))
    progress.close()

    if stop.signum is not None:  # Ctrl-C or SIGTERM: checkpoint, a summary that says so, one line, 130 / 143
        save_checkpoint(checkpoint_path, checkpoint_state(completed))
        write_json(os.path.join(run_dir, "summary.json"), {**base_summary(completed), "interrupted": True,
                                                           "wall_time_s": time.time() - start_time})
        writer.close()
        print(f"interrupted at iteration {completed}/{args.num_iterations}; resume with: python "
              f"{os.path.basename(__file__)} --resume {run_dir}", file=sys.stderr)
        sys.exit(128 + stop.signum)

    # Final evaluation on the held-out test tasks, after 0..K inner steps
    train_time = time.time() - start_time
    returns, distances, outcomes = log_evaluation(args.num_iterations, max(args.inner_steps, args.eval_inner_steps))
    summary = {
        **base_summary(args.num_iterations),
        "pre_adaptation_return": returns[0],
        "post_adaptation_return": returns[args.inner_steps],
        "pre_adaptation_distance": distances[0],
        "post_adaptation_distance": distances[args.inner_steps],
        "adaptation_gain": returns[args.inner_steps] - returns[0],
        "return_after_steps": returns,
        "distance_after_steps": distances,
        # success (episodes ending within the goal radius) and the gap to each task's exact optimum R*
        **{f"{when}_{name}": outcomes[k][name] for when, k in (("pre_adaptation", 0), ("post_adaptation", args.inner_steps))
           for name in outcomes[0]},
        **optimal_metrics(test_quadrants, test_optimum),
        "success_after_steps": [o["success_rate"] for o in outcomes],
        "success_on_reachable_after_steps": [o["success_rate_on_reachable"] for o in outcomes],
        "return_gap_after_steps": [o["return_gap"] for o in outcomes],
        "test_optimal_returns": None if test_optimum is None else test_optimum[0].tolist(),
        # what the task sampler did: the share of training tasks per quadrant, and its scores per goal bin
        "sampled_share_by_quadrant": (sampler.quadrant_counts / sampler.quadrant_counts.sum()).tolist()
        if sampler.quadrant_counts.sum() else None,
        "difficulty_map": none_if_nan(sampler.difficulty_map()) if sampler.kind != "uniform" else None,
        "median_sampler_time_s": float(np.median(sampler_times)) if sampler_times else None,
        "test_goals": test_goals.tolist(),
        "wall_time_s": time.time() - start_time,
        "train_time_s": train_time,
        "sps": global_step / train_time if global_step else None,
        "median_iteration_time_s": float(np.median(iteration_times)) if iteration_times else None,
        "median_sps": float(np.median(iteration_sps)) if iteration_sps else None,
    }
    print("held-out test tasks: " + ", ".join(
        f"after {k} step(s): return {r:.1f} distance {d:.2f} success {o['success_rate']:.2f}"
        for k, (r, d, o) in enumerate(zip(returns, distances, outcomes))))
    if args.save_model:
        model_path = f"{run_dir}/{args.exp_name}.cleanrl_model"
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        atomic_write(model_path, buffer.getvalue())
        summary["model_path"] = model_path
        print(f"model saved to {model_path}")
    write_json(os.path.join(run_dir, "summary.json"), summary)
    print(f"summary: {run_dir}/summary.json")
    envs.close()
    test_envs.close()
    writer.close()
