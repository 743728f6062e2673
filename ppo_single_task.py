# docs and measured results, each with its command: docs/ppo_single_task.md
"""PPO (Schulman et al. 2017) on ONE fixed task, in the shape of CleanRL's ppo.py: one navigation goal
(--env nav, the 2D navigation with obstacles of Duan & Wang 2022, nav_env.py) or one Alchemy chemistry
(--env alchemy, Wang et al. 2021, alchemy_env.py). It checks that an environment and the learner work
before meta-learning on the task family.

For nav, PPO is joined by self-imitation learning (SIL; Oh et al. 2018) by default. The reward is minus the
squared distance to the goal, so for a goal behind an obstacle its slope points into the wall, not round it;
SIL imitates the rare episodes that went round.

Rollouts come from numpy-batched vector envs with gymnasium's NEXT_STEP autoreset: the step after an
episode's end only resets that env. That step is no decision of the policy, so it is masked out of every
loss (`dones[step]` is 1 exactly there, see the main loop).

Layout: Args and the per-env defaults (ENV_DEFAULTS), validation, runs that survive (checkpoints), the agent
and PPO's loss, then one section per env family (navigation with SIL; alchemy), then the main loop.
"""

import contextlib
import copy
import dataclasses
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
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim
import tyro
from torch.distributions.categorical import Categorical
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

import nav_env

@dataclass
class Args:
    """PPO on one task. The defaults shown are those of the --env given (nav when none is): fields whose
    help gives both values take Alchemy's with --env alchemy (ENV_DEFAULTS)."""

    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment"""
    seed: int = 1
    """seed of the experiment (env, actions, network initialisation)"""
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

    # Task
    env: Literal["nav", "alchemy"] = "nav"
    """which task family: `nav` (one goal of nav_env) or `alchemy` (one chemistry of alchemy_env); it also
    chooses the defaults of the fields that give both values (`--env alchemy --help` shows Alchemy's)"""
    goal: tuple[float, float] = (4.5, 1.0)
    """nav: the fixed goal (x, y). The default lies behind the medium cross: the optimal policy
    (nav_env.optimal_policy) goes round it and arrives after 88 of the 100 moves"""
    obstacles: Literal["none", "easy", "medium", "hard"] = "medium"
    """nav: obstacle level"""
    see_goal: bool = True
    """nav: if toggled, the observation includes the goal (x, y, gx, gy); else (x, y)"""
    collision: Literal["block", "stick", "original"] = "block"
    """nav: `block` cancels a move into an obstacle or off the map; `stick` freezes the agent on the grid
    after a contact; `original` is the papers' own environment (no walls, -800 off the map, sticky obstacles)"""
    chemistry_seed: int = 0
    """alchemy: seed of the one chemistry used for all episodes (items still change every trial)"""
    level: str = "alchemy/perceptual_mapping_randomized_with_rotation_and_random_bottleneck"
    """alchemy: level whose chemistry prior the fixed chemistry is drawn from"""
    per_trial_returns: bool = False
    """alchemy: returns and GAE stop at each trial's end (nav: False, alchemy: True; `--env alchemy --help`
    shows Alchemy's; nav has no trials, so giving it there is an error). With one fixed chemistry a trial
    cannot change later ones (they bring fresh items), so later trials' rewards only add noise to a value
    function that does not see the trial"""
    mask_actions: bool = False
    """alchemy: the policy never picks an action that does nothing (a stone already in the cauldron, a drunk
    potion; alchemy_env.valid_action_mask): invalid-action masking (Huang & Ontanon 2020) (nav: False,
    alchemy: True; `--env alchemy --help` shows Alchemy's; nav has no such actions, so giving it there is an
    error)"""
    eval_set: Literal["sampled", "dm_alchemy"] = "sampled"
    """alchemy: `dm_alchemy` also scores the trained policy on dm_alchemy's 1,000 evaluation episodes
    (chemistries and items as given), where its published agents were scored, with the paired difference to
    each in summary.json (needs the dm_alchemy package). The policy learnt one chemistry (--chemistry-seed),
    so there it plays chemistries it has never seen. `sampled`: no such evaluation"""
    eval_episodes: int | None = None
    """alchemy, with --eval-set dm_alchemy: score only the first this many of the 1,000 episodes (None: all)"""

    # Algorithm
    total_timesteps: int = 12_000_000
    """total env steps of the experiment, run as total_timesteps // (num_envs * num_steps) full rollouts
    (nav: 12_000_000, alchemy: 8_000_000; `--env alchemy --help` shows Alchemy's)"""
    num_iterations: int | None = None
    """the number of iterations (rollouts of --num-envs x --num-steps steps), instead of --total-timesteps
    (None: total_timesteps // (num_envs * num_steps))"""
    learning_rate: float = 3e-4
    """the learning rate of the optimizer (Adam) (nav: 3e-4, alchemy: 1e-3; `--env alchemy --help` shows
    Alchemy's)"""
    num_envs: int = 64
    """the number of parallel envs (one numpy-batched vector env) (nav: 64, alchemy: 256; `--env alchemy
    --help` shows Alchemy's)"""
    num_steps: int = 200
    """the number of steps per env per rollout (nav: 200, alchemy: 100; `--env alchemy --help` shows
    Alchemy's): two nav episodes, half an Alchemy episode"""
    anneal_lr: bool = True
    """toggle learning rate annealing (linear, to 0 at the end)"""
    gamma: float = 1.0
    """the discount factor gamma (nav: 1.0, alchemy: 0.99; `--env alchemy --help` shows Alchemy's). nav's
    objective is the undiscounted return of a 100-step episode, and discounting would shrink the benefit
    of arriving, which comes late in it"""
    gae_lambda: float = 0.95
    """the lambda of generalised advantage estimation (Schulman et al. 2016)"""
    num_minibatches: int = 8
    """the number of mini-batches per epoch (--vpg: 1)"""
    update_epochs: int = 4
    """the K epochs to update the policy per rollout (--vpg: 1)"""
    norm_adv: bool = True
    """toggles advantage normalisation (per mini-batch)"""
    clip_coef: float = 0.2
    """the surrogate clipping coefficient"""
    clip_vloss: bool = True
    """toggles whether or not to use a clipped loss for the value function, as per the paper (--vpg: off)"""
    ent_coef: float = 0.0
    """coefficient of the entropy bonus (nav: 0.0, alchemy: 0.01; `--env alchemy --help` shows Alchemy's).
    nav's goal needs a precise path of up to 100 moves, which an entropy bonus would blur"""
    vf_coef: float = 0.5
    """coefficient of the value function loss"""
    max_grad_norm: float = 0.5
    """the maximum norm for the gradient clipping (> 0)"""
    target_kl: float | None = None
    """the target KL divergence threshold: stop the epochs early when exceeded (None: never)"""
    reward_scale: float = 0.01
    """multiplies rewards for learning only; logged returns are unscaled (nav: 0.01, alchemy: 0.1;
    `--env alchemy --help` shows Alchemy's): nav's per-step reward, minus a squared distance, is as low
    as -200 (the squared diagonal of the map)"""
    hidden_size: int = 64
    """width of the two tanh hidden layers of the actor and of the critic (nav: 64, alchemy: 128;
    `--env alchemy --help` shows Alchemy's)"""
    vpg: bool = False
    """if toggled, vanilla policy gradient instead of PPO: one epoch, one mini-batch, no clipping (so it cannot
    be given with --update-epochs, --num-minibatches, --clip-vloss or --target-kl)"""

    # Self-imitation learning (Oh et al. 2018), joined to PPO for nav
    sil_coef: float = 1.0
    """weight of the self-imitation loss; 0: off, plain PPO, the only choice for alchemy (nav: 1.0, alchemy:
    0.0; `--env alchemy --help` shows Alchemy's). SIL keeps the best episodes seen so far and imitates their
    actions where their return beats the critic"""
    sil_episodes: int = 16
    """nav, SIL: how many of the best episodes so far (by return) are kept for imitation"""
    sil_fraction: float = 0.25
    """nav, SIL: SIL runs in this first fraction of the iterations; then PPO alone sharpens the policy"""
    sil_updates: int = 8
    """nav, SIL: gradient steps on the SIL loss per iteration"""
    sil_batch_size: int = 512
    """nav, SIL: transitions per SIL gradient step, drawn uniformly from the kept episodes"""
    sil_value_coef: float = 0.01
    """nav, SIL: weight of the SIL value loss (beta in Oh et al. 2018)"""

    # Logging
    image_every: int = 20
    """nav: every this many iterations, log an image of a greedy (argmax) episode of the policy (0: never)"""

    # Runs that survive: checkpoints, resume, divergence and collapse (docs/runs.md)
    checkpoint_every: int = 10
    """write runs/{run_name}/checkpoint.pt (everything a continuation needs) every this many iterations, and
    always at the start, the end and on Ctrl-C / SIGTERM (0: only those)"""
    resume: str | None = None
    """continue the run in this folder (runs/{run_name}) from its checkpoint, with the flags it was started
    with; only --torch-threads may be given with it (None: a new run)"""
    torch_threads: int = 1
    """torch's CPU threads (torch.set_num_threads). 1, because runs side by side on a few cores slow each
    other down with torch's default of one thread per core"""
    collapse_patience: int = 20
    """warn, and set "collapsed" in summary.json, after this many iterations in a row with a zero gradient
    norm or a mean policy entropy below 1e-3 nats (0: never). A policy that has converged to one action per
    state also has near-zero entropy"""


# The defaults of each env family, applied before parsing (so --help shows them and given flags win).
# Alchemy's: masking, per-trial returns, a wider network, and larger, shorter rollouts (half an episode);
# the runs that compare them: docs/ppo_single_task.md.
ENV_DEFAULTS = {
    "nav": Args(),
    "alchemy": dataclasses.replace(
        Args(), env="alchemy", total_timesteps=8_000_000, learning_rate=1e-3, num_envs=256, num_steps=100,
        gamma=0.99, ent_coef=0.01, reward_scale=0.1, hidden_size=128, sil_coef=0.0, per_trial_returns=True,
        mask_actions=True,
    ),
}


def env_on_command_line(argv: list[str]) -> str:
    """The value of --env X / --env=X in argv (the last one), else "nav"; tyro checks the value itself."""
    env = "nav"
    for i, token in enumerate(argv):
        if token == "--env" and i + 1 < len(argv):
            env = argv[i + 1]
        elif token.startswith("--env="):
            env = token[len("--env="):]
    return env


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


def parse_args(argv: list[str]) -> tuple[Args, set[str]]:
    """The command line on top of its env's defaults, and the fields it named (flags_given)."""
    defaults = ENV_DEFAULTS.get(env_on_command_line(argv), ENV_DEFAULTS["nav"])  # unknown: tyro's error
    return tyro_cli(defaults, argv), flags_given(argv)


def fail(message: str) -> None:
    """Bad input: one line on stderr, exit code 2, nothing written."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


NAV_ONLY = ("goal", "obstacles", "see_goal", "collision", "image_every", "sil_fraction", "sil_episodes", "sil_updates",
            "sil_batch_size", "sil_value_coef")
ALCHEMY_ONLY = ("chemistry_seed", "level", "mask_actions", "per_trial_returns", "eval_set", "eval_episodes")
SIL_ONLY = ("sil_fraction", "sil_episodes", "sil_updates", "sil_batch_size", "sil_value_coef")
NOT_WITH_VPG = ("update_epochs", "num_minibatches", "clip_vloss", "target_kl")


def flags_given(argv: list[str]) -> set[str]:
    """The fields named on the command line (--x, --x=v and --no-x all name x)."""
    names = {token[2:].split("=")[0].replace("-", "_") for token in argv if token.startswith("--")}
    return names | {name[3:] for name in names if name.startswith("no_")}


def validate(args: Args, given: set[str] = frozenset()) -> None:
    """Check every value; `given` (flags_given) tells which fields the command line set. Exit 2 on bad input."""
    for name, value in vars(args).items():
        values = value if isinstance(value, tuple) else (value,)
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            fail(f"--{name.replace('_', '-')} must be finite, got {value}")
    if not args.track and (args.wandb_project_name != "meta-rl" or args.wandb_entity is not None):
        fail("--wandb-project-name and --wandb-entity are for --track; add --track or drop them")
    if args.track and importlib.util.find_spec("wandb") is None:
        fail("--track needs the wandb package: pip install wandb")
    for name in ("seed", "chemistry_seed"):
        if not 0 <= getattr(args, name) < 2**32:
            fail(f"--{name.replace('_', '-')} must be in [0, 2**32 - 1], got {getattr(args, name)}")
    if "/" in args.exp_name or not args.exp_name:
        fail(f"--exp-name must be a non-empty name without '/', got {args.exp_name!r}")
    for name in NAV_ONLY if args.env == "alchemy" else ALCHEMY_ONLY:
        if name in given:
            fail(f"--{name.replace('_', '-')} applies to --env {'nav' if args.env == 'alchemy' else 'alchemy'} "
                 f"only, got --env {args.env}")
    if args.sil_coef == 0:
        for name in SIL_ONLY:
            if name in given:
                fail(f"--{name.replace('_', '-')} applies with self-imitation only, got --sil-coef 0")
    if args.vpg:
        for name in NOT_WITH_VPG:
            if name in given:
                fail(f"--{name.replace('_', '-')} cannot be given with --vpg (one epoch of one mini-batch, no clipping)")
    if args.num_iterations is not None and "total_timesteps" in given:
        fail(f"--total-timesteps {args.total_timesteps} and --num-iterations {args.num_iterations} both set the "
             f"length of the run; give one of them")
    if args.image_every < 0:
        fail(f"--image-every must be >= 0 (0: never), got {args.image_every}")
    if args.target_kl is not None and not args.target_kl > 0:
        fail(f"--target-kl must be > 0, got {args.target_kl}")
    for name in ("checkpoint_every", "collapse_patience"):
        if getattr(args, name) < 0:
            fail(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    positive = ["total_timesteps", "num_iterations", "learning_rate", "num_envs", "num_steps", "num_minibatches",
                "update_epochs", "hidden_size", "sil_episodes", "sil_updates", "sil_batch_size", "torch_threads",
                "max_grad_norm", "reward_scale"]
    for name in positive:
        if getattr(args, name) is not None and not getattr(args, name) > 0:
            fail(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    for name in ("gamma", "gae_lambda"):
        if not 0 <= getattr(args, name) <= 1:
            fail(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(args, name)}")
    for name in ("clip_coef", "ent_coef", "vf_coef", "sil_coef", "sil_value_coef"):
        if getattr(args, name) < 0:
            fail(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if not 0 < args.sil_fraction <= 1:
        fail(f"--sil-fraction must be in (0, 1], got {args.sil_fraction}")
    if args.sil_coef and args.env != "nav":
        fail(f"--sil-coef applies to --env nav only, got --env {args.env}")
    if args.eval_set != "dm_alchemy" and args.eval_episodes is not None:
        fail(f"--eval-episodes is for --eval-set dm_alchemy; add it or drop --eval-episodes {args.eval_episodes}")
    if args.env == "nav":
        try:  # nav_env validates goals: inside the map and not on an obstacle
            nav_env._goals_to_cells([args.goal], 1, args.obstacles)
        except ValueError as error:
            fail(str(error))


def resolve(args: Args, given: set[str] = frozenset()) -> Args:
    """Check every value (validate), then set what follows from them: --vpg's fixed values, the run length in
    whole rollouts, the evaluation episodes. Exit 2 on bad input."""
    validate(args, given)
    if args.vpg:  # vanilla policy gradient: one gradient step on the whole batch, no clipping
        args.update_epochs, args.num_minibatches, args.clip_vloss = 1, 1, False
    if args.eval_set == "dm_alchemy":
        try:
            import alchemy_env

            size = len(alchemy_env.load_dm_alchemy_eval_set()["chemistries"]["rotation"])
        except ImportError as error:
            fail(f"--eval-set dm_alchemy: {error}")
        if args.eval_episodes is None:
            args.eval_episodes = size
        if not 1 <= args.eval_episodes <= size:
            fail(f"--eval-episodes must be in [1, {size}], got {args.eval_episodes}")
    batch_size = args.num_envs * args.num_steps
    if args.num_iterations is not None:
        args.total_timesteps = args.num_iterations * batch_size
    if args.total_timesteps < batch_size:
        fail(f"--total-timesteps must be at least one rollout, --num-envs x --num-steps = {batch_size}, got "
             f"{args.total_timesteps}")
    args.num_iterations = args.total_timesteps // batch_size
    if batch_size // args.num_minibatches < 1:
        fail(f"--num-minibatches {args.num_minibatches} exceeds the batch size {batch_size}")
    return args


# --- runs that survive: checkpoints, atomic writes, signals, divergence ---------------------------------
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


def env_state(envs) -> dict:
    """What a vector env carries from one step to the next besides its generator: its batch's writable arrays
    (every one, so that an array an env adds is saved too; read-only ones are constant tables)."""
    def writable(value):
        return isinstance(value, np.ndarray) and value.flags.writeable

    return {name: copy.deepcopy(value) for name, value in vars(envs._batch).items()
            if writable(value) or (isinstance(value, tuple) and value and all(writable(v) for v in value))}


def set_env_state(envs, state: dict) -> None:
    for name, value in state.items():  # in place: a batch keeps views of its arrays
        own = getattr(envs._batch, name)
        for mine, saved in (zip(own, value) if isinstance(own, tuple) else [(own, value)]):
            mine[...] = saved



# --- the agent and PPO's loss (Schulman et al. 2017), the same for every env -------------------------------
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
        self.critic = nn.Sequential(
            layer_init(nn.Linear(obs_dim, hidden)), nn.Tanh(),
            layer_init(nn.Linear(hidden, hidden)), nn.Tanh(),
            layer_init(nn.Linear(hidden, 1), std=1.0),
        )
        self.actor = nn.Sequential(
            layer_init(nn.Linear(obs_dim, hidden)), nn.Tanh(),
            layer_init(nn.Linear(hidden, hidden)), nn.Tanh(),
            layer_init(nn.Linear(hidden, num_actions), std=0.01),
        )

    def normalise(self, x):
        return (x - self.obs_mid) / self.obs_half_range

    def get_value(self, x):
        return self.critic(self.normalise(x))

    def get_action_and_value(self, x, action=None, action_mask=None):
        x = self.normalise(x)
        logits = self.actor(x)
        check_finite(action_logits=logits)
        if action_mask is not None:  # masked actions get probability 0 (and no gradient)
            logits = logits.masked_fill(~action_mask, -1e8)
        probs = Categorical(logits=logits)
        if action is None:
            action = probs.sample()
        return action, probs.log_prob(action), probs.entropy(), self.critic(x)


def compute_gae(rewards, values, dones, next_value, next_done, gamma: float, gae_lambda: float):
    """Generalised advantage estimation over a rollout (num_steps, num_envs) (Schulman et al. 2016, eq. 16).

    As in CleanRL, dones[t] = 1 means step t - 1 ended its episode (with --per-trial-returns: its trial), so
    the value of obs[t] is not bootstrapped into step t - 1; next_done is that flag for the step after the
    rollout.
    """
    num_steps = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    lastgaelam = 0
    for t in reversed(range(num_steps)):
        if t == num_steps - 1:
            nextnonterminal = 1.0 - next_done
            nextvalues = next_value
        else:
            nextnonterminal = 1.0 - dones[t + 1]
            nextvalues = values[t + 1]
        delta = rewards[t] + gamma * nextvalues * nextnonterminal - values[t]
        advantages[t] = lastgaelam = delta + gamma * gae_lambda * nextnonterminal * lastgaelam
    return advantages


def ppo_loss(newlogprob, oldlogprob, advantages, newvalue, oldvalue, returns, entropy, mask, args: Args):
    """PPO's loss on one mini-batch (Schulman et al. 2017, eq. 9); every mean runs over the samples with
    mask 1 only (mask 0: an autoreset step, which CleanRL's SAME_STEP envs do not have).

    Returns (loss, pg_loss, v_loss, entropy_loss, old_approx_kl, approx_kl, clipfrac). With
    args.vpg the policy term is the plain policy gradient -A * ratio (ratio = 1 on the only epoch).
    """
    num_samples = mask.sum().clamp(min=1.0)

    def masked_mean(x):
        return (x * mask).sum() / num_samples

    logratio = newlogprob - oldlogprob
    ratio = logratio.exp()
    with torch.no_grad():
        # calculate approx_kl http://joschu.net/blog/kl-approx.html
        old_approx_kl = masked_mean(-logratio)
        approx_kl = masked_mean((ratio - 1) - logratio)
        clipfrac = masked_mean(((ratio - 1.0).abs() > args.clip_coef).float()).item()

    if args.norm_adv:
        adv_mean = masked_mean(advantages)
        adv_std = masked_mean((advantages - adv_mean) ** 2).sqrt()
        advantages = (advantages - adv_mean) / (adv_std + 1e-8)

    # Policy loss
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)
    pg_loss = masked_mean(pg_loss1 if args.vpg else torch.max(pg_loss1, pg_loss2))

    # Value loss
    if args.clip_vloss:
        v_loss_unclipped = (newvalue - returns) ** 2
        v_clipped = oldvalue + torch.clamp(newvalue - oldvalue, -args.clip_coef, args.clip_coef)
        v_loss_clipped = (v_clipped - returns) ** 2
        v_loss = 0.5 * masked_mean(torch.max(v_loss_unclipped, v_loss_clipped))
    else:
        v_loss = 0.5 * masked_mean((newvalue - returns) ** 2)

    entropy_loss = masked_mean(entropy)
    loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef
    return loss, pg_loss, v_loss, entropy_loss, old_approx_kl, approx_kl, clipfrac


# --- navigation (nav_env; Duan & Wang 2022): env, self-imitation, greedy evaluation, the exact optimum ------
def make_nav_envs(args: Args):
    """(vector env, reset options that pin the goal, no action mask)."""
    envs = nav_env.NavigationVectorEnv(args.num_envs, obstacles=args.obstacles, see_goal=args.see_goal,
                                       collision=args.collision)
    return envs, {"goals": np.tile(np.asarray(args.goal, dtype=np.float64), (args.num_envs, 1))}, None


def sil_loss(logprob, value, returns, value_coef: float):
    """Self-imitation loss (Oh et al. 2018, eqs. 2-4) on stored (s, a, R) samples.

    Imitate a stored action only where its return R beats the critic, and pull V(s) up towards such R:
    L = -log pi(a|s) * (R - V(s))+ + value_coef * 0.5 * ((R - V(s))+)^2. Returns (loss, policy_loss, value_loss).
    """
    gap = (returns - value).clamp(min=0.0)
    policy_loss = -(logprob * gap.detach()).mean()
    value_loss = 0.5 * (gap**2).mean()
    return policy_loss + value_coef * value_loss, policy_loss, value_loss


def discounted_returns(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """The return from every step of one finished episode: G_t = r_t + gamma * G_{t+1}."""
    returns, running = np.zeros(len(rewards)), 0.0
    for t in reversed(range(len(rewards))):
        running = rewards[t] + gamma * running
        returns[t] = running
    return returns


class BestEpisodes:
    """SIL's memory: the `capacity` finished episodes with the highest return so far (ties: the older stays)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.episodes = []  # (return, observations (T, d), actions (T,), returns from every step (T,)), best first

    def add(self, observations: np.ndarray, actions: np.ndarray, rewards: np.ndarray, gamma: float) -> None:
        returns = discounted_returns(rewards, gamma)
        self.episodes.append((returns[0], observations, actions, returns))
        self.episodes.sort(key=lambda episode: -episode[0])
        del self.episodes[self.capacity :]

    def sample(self, batch_size: int, device):
        """Transitions drawn uniformly (with replacement) from all kept episodes: (obs, actions, returns)."""
        observations, actions, returns = (
            torch.as_tensor(np.concatenate([episode[k] for episode in self.episodes])) for k in (1, 2, 3)
        )
        index = torch.randint(len(returns), (batch_size,))
        return observations[index].to(device), actions[index].to(device), returns[index].float().to(device)


def greedy_nav_episode(agent: Agent, args: Args, device) -> tuple[np.ndarray, float, float]:
    """Run the argmax policy once on the task; return its positions (T, 2), return and final distance."""
    env = nav_env.NavigationEnv(obstacles=args.obstacles, see_goal=args.see_goal, collision=args.collision)
    obs, _ = env.reset(options={"goal": args.goal})
    positions, total = [env.position], 0.0
    with torch.no_grad():
        for _ in range(nav_env.MAX_EPISODE_STEPS):
            logits = agent.actor(agent.normalise(torch.as_tensor(obs, device=device)[None]))
            obs, reward, terminated, truncated, info = env.step(int(logits.argmax()))
            positions.append(env.position)
            total += reward
            if terminated or truncated:
                break
    return np.array(positions), total, info["distance"]


def greedy_trajectory_image(positions: np.ndarray, args: Args, global_step: int) -> np.ndarray:
    """The map with the greedy episode's path, the start (green square) and the goal (dot), titled."""
    title = f"greedy policy at step {global_step:,}; goal ({args.goal[0]:g}, {args.goal[1]:g})"
    return nav_env.render_trajectories([positions], [args.goal], obstacles=args.obstacles, size=320, title=title,
                                       legend=True)


def nav_summary(agent: Agent, args: Args, device, finished_returns: list, finished_distances: list) -> dict:
    """The sampling policy's last 100 episodes, one greedy (argmax) episode, and the gaps to the task's exact
    optimum R* (nav_env's dynamic programme; none for collision "original", whose dynamics are not on the grid)."""
    final_return = float(np.mean(finished_returns[-100:])) if finished_returns else None
    summary = {"final_distance": float(np.mean(finished_distances[-100:])) if finished_distances else None,
               "goal_reached_rate": float(np.mean(np.array(finished_distances[-100:]) <= nav_env.GOAL_RADIUS + 1e-9))}
    _, greedy_return, greedy_distance = greedy_nav_episode(agent, args, device)
    summary.update(greedy_return=greedy_return, greedy_final_distance=greedy_distance,
                   greedy_reached=bool(greedy_distance <= nav_env.GOAL_RADIUS + 1e-9))
    summary["success_rate"] = summary["goal_reached_rate"]
    optimum = None if args.collision == "original" else nav_env.optimal_returns([args.goal], args.obstacles, args.collision)
    summary.update(
        optimal_return=None if optimum is None else float(optimum[0][0]),
        optimal_success_rate=None if optimum is None else float(optimum[1][0]),
        return_gap=None if optimum is None or final_return is None else float(optimum[0][0]) - final_return,
        greedy_return_gap=None if optimum is None else float(optimum[0][0]) - greedy_return,
    )
    return summary


# --- alchemy (alchemy_env; Wang et al. 2021): env with one chemistry, action masks, dm_alchemy's eval set ---
def make_alchemy_envs(args: Args):
    """(vector env, reset options that pin the chemistry, observations -> action mask or None)."""
    try:
        import alchemy_env
    except ImportError as error:
        fail(f"--env alchemy needs alchemy_env.py next to this script ({error})")
    try:
        chemistry = alchemy_env.sample_chemistry(args.level, np.random.default_rng(args.chemistry_seed))
    except ValueError as error:
        fail(str(error))
    envs = alchemy_env.SymbolicAlchemyVectorEnv(args.num_envs, level=args.level)
    mask_fn = alchemy_env.valid_action_mask if args.mask_actions else None
    return envs, {"chemistries": chemistry}, mask_fn  # one chemistry for every env, kept across autoresets


def mean_and_sem(values: np.ndarray) -> tuple[float, float | None]:
    """The mean and its standard error (None for a single value)."""
    sem = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else None
    return float(values.mean()), sem


def eval_set_scores(agent: Agent, args: Args, device) -> tuple[np.ndarray, np.ndarray]:
    """The policy's score on each of the first args.eval_episodes episodes of dm_alchemy's evaluation set, one
    sampled episode each (as its agents played them), and the random-heuristic bot's on the same items."""
    import alchemy_env

    data, n = alchemy_env.load_dm_alchemy_eval_set(), args.eval_episodes
    options = {"chemistries": {key: value[:n] for key, value in data["chemistries"].items()},
               "items": {key: value[:n] for key, value in data["items"].items()}}
    envs = alchemy_env.SymbolicAlchemyVectorEnv(n, autoreset_mode="Disabled")
    observations, _ = envs.reset(seed=args.seed, options=options)
    scores = np.zeros(n)
    with torch.no_grad():
        for _ in range(alchemy_env.EPISODE_STEPS):
            mask = (torch.as_tensor(alchemy_env.valid_action_mask(observations)).to(device) if args.mask_actions
                    else None)
            action, _, _, _ = agent.get_action_and_value(torch.as_tensor(observations).to(device), action_mask=mask)
            observations, rewards, _, _, _ = envs.step(action.cpu().numpy())
            scores += rewards
    observations, _ = envs.reset(options=options)
    heuristic = alchemy_env.bot_episode_returns(envs, observations, alchemy_env.random_heuristic_actions,
                                                np.random.default_rng(args.seed))
    return scores, heuristic


def eval_set_summary(scores: np.ndarray, heuristic: np.ndarray, args: Args, writer, global_step: int) -> dict:
    """Zero-shot on dm_alchemy's evaluation episodes (chemistries never trained on): the score, each published
    agent's on the same episodes and the paired differences; logged, printed and returned for summary.json."""
    import alchemy_env

    score, score_sem = mean_and_sem(scores)
    references, reference_sems, differences = alchemy_env.compare_with_agents(scores, heuristic)
    writer.add_scalar("eval_set/score", score, global_step)
    if score_sem is not None:
        writer.add_scalar("eval_set/score_sem", score_sem, global_step)
    print(f"dm_alchemy's evaluation episodes ({args.eval_episodes}, chemistries never trained on): score "
          f"{score:.2f} +- {score_sem if score_sem is None else round(score_sem, 2)}")
    for agent_name, (difference, difference_sem) in differences.items():
        writer.add_scalar(f"eval_set/reference_{agent_name}", references[agent_name], global_step)
        writer.add_scalar(f"eval_set/post_minus_{agent_name}", difference, global_step)
        if difference_sem is not None:
            writer.add_scalar(f"eval_set/post_minus_{agent_name}_sem", difference_sem, global_step)
        sem_text = difference_sem if difference_sem is None else round(difference_sem, 2)
        print(f"  {agent_name}: {references[agent_name]:.2f} on the same episodes; the policy minus it: "
              f"{difference:+.2f} +- {sem_text} (paired)")
    return dict(eval_episodes=args.eval_episodes, eval_set_score=score, eval_set_score_sem=score_sem,
                reference_scores=references, reference_score_sems=reference_sems, post_minus_reference=differences)


def make_envs(args: Args):
    """(vector env, reset options that pin the task, observations -> action mask or None) of args.env."""
    return make_nav_envs(args) if args.env == "nav" else make_alchemy_envs(args)


# --- the main loop, as in CleanRL's ppo.py; env-specific steps are marked "navigation" or "alchemy" -------
if __name__ == "__main__":
    cli, given = parse_args(sys.argv[1:])
    stop = StopRequest()  # from here on Ctrl-C / SIGTERM stop the run cleanly, between iterations
    if cli.resume is not None:  # the run's own flags, and everything its loop carried
        args, checkpoint, run_dir = resume_args(cli)
    else:
        args, checkpoint = resolve(cli, given), None
    batch_size = args.num_envs * args.num_steps
    minibatch_size = batch_size // args.num_minibatches
    torch.set_num_threads(args.torch_threads)
    envs, task_options, action_mask_fn = make_envs(args)
    if checkpoint is None:
        env_id = f"nav-{args.obstacles}" if args.env == "nav" else "alchemy"
        run_dir = f"runs/{env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"

    # TRY NOT TO MODIFY: seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    if args.cuda and not torch.cuda.is_available():
        print("--cuda given but no CUDA device is available: running on the CPU")
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")

    obs_space = envs.single_observation_space
    agent = Agent(
        int(np.prod(obs_space.shape)), int(envs.single_action_space.n), args.hidden_size, obs_space.low, obs_space.high
    ).to(device)
    optimizer = optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)

    # ALGO Logic: Storage setup
    obs = torch.zeros((args.num_steps, args.num_envs) + obs_space.shape).to(device)
    actions = torch.zeros((args.num_steps, args.num_envs), dtype=torch.long).to(device)
    logprobs = torch.zeros((args.num_steps, args.num_envs)).to(device)
    rewards = torch.zeros((args.num_steps, args.num_envs)).to(device)
    dones = torch.zeros((args.num_steps, args.num_envs)).to(device)
    values = torch.zeros((args.num_steps, args.num_envs)).to(device)
    # Where GAE stops: dones, and with --per-trial-returns (alchemy) also each trial's end. Kept apart from
    # dones because a trial's end is no episode's end: the step after it is a real decision, not an autoreset.
    gae_dones = torch.zeros((args.num_steps, args.num_envs)).to(device)
    # --- alchemy: with --mask-actions, the action mask of every step (num_steps, num_envs, actions)
    action_masks = None
    if action_mask_fn is not None:
        mask_shape = (args.num_steps, args.num_envs, envs.single_action_space.n)
        action_masks = torch.ones(mask_shape, dtype=torch.bool).to(device)

    def valid_actions(observations: np.ndarray):
        """The action mask of these observations (None without --mask-actions)."""
        return None if action_mask_fn is None else torch.as_tensor(action_mask_fn(observations)).to(device)

    # TRY NOT TO MODIFY: start the game
    global_step, start_iteration, elapsed_before = 0, 0, 0.0
    next_obs, _ = envs.reset(seed=args.seed, options=task_options)
    next_mask = valid_actions(next_obs)
    next_obs = torch.as_tensor(next_obs).to(device)
    next_done = torch.zeros(args.num_envs).to(device)
    next_gae_done = torch.zeros(args.num_envs).to(device)
    episode_return = np.zeros(args.num_envs)
    episode_length = np.zeros(args.num_envs, dtype=np.int64)
    finished_returns, finished_lengths, finished_distances = [], [], []
    # --- navigation: with --sil-coef, SIL's memory (the best episodes so far) and each env's episode in progress
    memory = None
    episode_obs = episode_actions = episode_rewards = None
    if args.sil_coef > 0:
        memory = BestEpisodes(args.sil_episodes)
        episode_obs = np.zeros((args.num_envs, nav_env.MAX_EPISODE_STEPS) + obs_space.shape, dtype=np.float32)
        episode_actions = np.zeros((args.num_envs, nav_env.MAX_EPISODE_STEPS), dtype=np.int64)
        episode_rewards = np.zeros((args.num_envs, nav_env.MAX_EPISODE_STEPS))
    collapse_count, collapsed_at = 0, None  # iterations in a row with a zero gradient or entropy; when it collapsed
    generators = {"envs": envs.np_random}
    checkpoint_path = os.path.join(run_dir, CHECKPOINT)
    if checkpoint is not None:  # continue where the checkpoint left off, in the run's own folder
        agent.load_state_dict(checkpoint["agent"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        start_iteration, global_step = checkpoint["iteration"], checkpoint["global_step"]
        set_env_state(envs, checkpoint["env_state"])
        loop = checkpoint["loop"]
        next_obs, next_done, next_gae_done = loop["next_obs"], loop["next_done"], loop["next_gae_done"]
        next_obs, next_done, next_gae_done = next_obs.to(device), next_done.to(device), next_gae_done.to(device)
        next_mask = None if loop["next_mask"] is None else loop["next_mask"].to(device)
        episode_return, episode_length = loop["episode_return"], loop["episode_length"]
        finished_returns, finished_lengths = loop["finished_returns"], loop["finished_lengths"]
        finished_distances = loop["finished_distances"]
        if memory is not None:
            memory.episodes = loop["sil_memory"]
            episode_obs, episode_actions, episode_rewards = loop["sil_episode_in_progress"]
        collapse_count, collapsed_at = checkpoint["collapse_count"], checkpoint["collapsed_at"]
        elapsed_before = checkpoint["elapsed_s"]
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
        loop = {"next_obs": next_obs.cpu(), "next_done": next_done.cpu(), "next_gae_done": next_gae_done.cpu(),
                "next_mask": None if next_mask is None else next_mask.cpu(), "episode_return": episode_return,
                "episode_length": episode_length, "finished_returns": finished_returns,
                "finished_lengths": finished_lengths, "finished_distances": finished_distances,
                "sil_memory": None if memory is None else memory.episodes,
                "sil_episode_in_progress": (episode_obs, episode_actions, episode_rewards)}
        return {"script": os.path.basename(__file__), "args": asdict(args), "iteration": iteration,
                "global_step": global_step, "agent": agent.state_dict(), "optimizer": optimizer.state_dict(),
                "rng": rng_state(generators), "env_state": env_state(envs), "loop": loop,
                "collapse_count": collapse_count, "collapsed_at": collapsed_at, "elapsed_s": time.time() - start_time}

    if checkpoint is None:
        save_checkpoint(checkpoint_path, checkpoint_state(0))  # from here on a kill can be resumed
    # TensorBoard continues at the checkpoint's step: events a killed run wrote after it are dropped
    if args.track:  # Weights & Biases mirrors the TensorBoard logs, as CleanRL's --track does
        import wandb

        run_name = os.path.basename(run_dir)
        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True, config=vars(args),
                   name=run_name, id=re.sub(r"[^A-Za-z0-9_-]", "-", run_name), resume="allow", save_code=True)
    writer = SummaryWriter(run_dir, purge_step=global_step + 1 if checkpoint is not None else None)
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
        print(f"diverged at iteration {iteration}/{args.num_iterations}: {error}; usually --learning-rate, "
              f"--reward-scale or --max-grad-norm is too large. Last good checkpoint: {checkpoint_path} "
              f"(iteration {last_good})", file=sys.stderr)
        writer.close()
        sys.exit(EXIT_DIVERGED)

    def guard(iteration: int, function, *args, **kwargs):
        """function(*args, **kwargs), stopping the run if it meets a non-finite value."""
        try:
            return function(*args, **kwargs)
        except Diverged as error:
            stop_diverged(iteration, error)

    # elapsed time and ETA on stderr (every 30 s when it is not a terminal), and in the log lines
    progress = tqdm(total=args.num_iterations, initial=start_iteration, unit="it", file=sys.stderr, dynamic_ncols=True,
                    mininterval=0.5 if sys.stderr.isatty() else 30)
    completed = start_iteration
    for iteration in range(start_iteration + 1, args.num_iterations + 1):
        if stop.signum is not None:
            break
        if args.anneal_lr:
            frac = 1.0 - (iteration - 1.0) / args.num_iterations
            optimizer.param_groups[0]["lr"] = frac * args.learning_rate

        for step in range(0, args.num_steps):
            global_step += args.num_envs
            obs[step] = next_obs
            dones[step] = next_done  # 1: the last step ended an episode, so this one only resets the env
            gae_dones[step] = next_gae_done

            # ALGO LOGIC: action logic
            if action_masks is not None:
                action_masks[step] = next_mask
            with torch.no_grad():
                action, logprob, _, value = guard(iteration, agent.get_action_and_value, next_obs, action_mask=next_mask)
                values[step] = value.flatten()
            actions[step] = action
            logprobs[step] = logprob

            # TRY NOT TO MODIFY: execute the game and log data.
            next_obs_np, reward, terminations, truncations, infos = envs.step(action.cpu().numpy())
            ended = np.logical_or(terminations, truncations)
            rewards[step] = torch.as_tensor(reward * args.reward_scale, dtype=torch.float32).to(device)
            next_mask = valid_actions(next_obs_np)
            next_obs = torch.as_tensor(next_obs_np).to(device)
            next_done = torch.as_tensor(ended, dtype=torch.float32).to(device)
            gae_done = ended | infos["new_trial"] if args.per_trial_returns else ended  # alchemy: trials too
            next_gae_done = torch.as_tensor(gae_done, dtype=torch.float32).to(device)

            stepped = dones[step].cpu().numpy() == 0  # a decision of the policy, not an autoreset
            if memory is not None:  # navigation, SIL: record the episodes in progress
                rows = np.flatnonzero(stepped)
                episode_obs[rows, episode_length[rows]] = obs[step].cpu().numpy()[rows]
                episode_actions[rows, episode_length[rows]] = actions[step].cpu().numpy()[rows]
                episode_rewards[rows, episode_length[rows]] = reward[rows] * args.reward_scale
            episode_return += reward * stepped
            episode_length += stepped
            for i in np.flatnonzero(ended & stepped):
                finished_returns.append(episode_return[i])
                finished_lengths.append(episode_length[i])
                if "distance" in infos:  # navigation
                    finished_distances.append(float(infos["distance"][i]))
                if memory is not None:
                    length = episode_length[i]
                    memory.add(episode_obs[i, :length].copy(), episode_actions[i, :length].copy(),
                               episode_rewards[i, :length].copy(), args.gamma)
                episode_return[i], episode_length[i] = 0.0, 0
        if finished_returns:
            writer.add_scalar("charts/episodic_return", np.mean(finished_returns[-args.num_envs :]), global_step)
            writer.add_scalar("charts/episodic_length", np.mean(finished_lengths[-args.num_envs :]), global_step)
            if finished_distances:
                writer.add_scalar("charts/final_distance", np.mean(finished_distances[-args.num_envs :]), global_step)

        # bootstrap value if not done
        with torch.no_grad():
            next_value = agent.get_value(next_obs).reshape(1, -1)
            advantages = compute_gae(rewards, values, gae_dones, next_value, next_gae_done, args.gamma, args.gae_lambda)
            returns = advantages + values

        # flatten the batch
        b_obs = obs.reshape((-1,) + obs_space.shape)
        b_logprobs = logprobs.reshape(-1)
        b_actions = actions.reshape(-1)
        b_advantages = advantages.reshape(-1)
        b_returns = returns.reshape(-1)
        b_values = values.reshape(-1)
        b_dones = dones.reshape(-1)
        b_action_masks = None if action_masks is None else action_masks.reshape(-1, action_masks.shape[-1])

        # Optimizing the policy and value network
        b_inds = np.arange(batch_size)
        clipfracs, grad_norms = [], []
        for epoch in range(args.update_epochs):
            np.random.shuffle(b_inds)
            for start in range(0, batch_size, minibatch_size):
                end = start + minibatch_size
                mb_inds = b_inds[start:end]
                _, newlogprob, entropy, newvalue = guard(
                    iteration, agent.get_action_and_value, b_obs[mb_inds], b_actions[mb_inds],
                    action_mask=None if b_action_masks is None else b_action_masks[mb_inds],
                )
                loss, pg_loss, v_loss, entropy_loss, old_approx_kl, approx_kl, clipfrac = ppo_loss(
                    newlogprob, b_logprobs[mb_inds], b_advantages[mb_inds], newvalue.view(-1), b_values[mb_inds],
                    b_returns[mb_inds], entropy, 1.0 - b_dones[mb_inds], args,
                )
                clipfracs.append(clipfrac)

                optimizer.zero_grad()
                loss.backward()
                grad_norms.append(nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm))
                guard(iteration, check_finite, loss=loss, gradient=grad_norms[-1])
                guard(iteration, optimizer_step, optimizer)

            if args.target_kl is not None and approx_kl > args.target_kl:
                break

        # --- navigation: self-imitation (Oh et al. 2018). In the first --sil-fraction of the iterations, a few
        # gradient steps on the SIL loss over the best episodes so far (why: the module docstring).
        if memory is not None and memory.episodes and iteration <= args.sil_fraction * args.num_iterations:
            for _ in range(args.sil_updates):
                sil_obs, sil_actions, sil_returns = memory.sample(args.sil_batch_size, device)
                _, sil_logprob, _, sil_value = guard(iteration, agent.get_action_and_value, sil_obs, sil_actions)
                loss, sil_policy_loss, sil_value_loss = sil_loss(sil_logprob, sil_value.view(-1), sil_returns, args.sil_value_coef)
                optimizer.zero_grad()
                (args.sil_coef * loss).backward()
                sil_grad_norm = nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                guard(iteration, check_finite, sil_loss=loss, sil_gradient=sil_grad_norm)
                guard(iteration, optimizer_step, optimizer)
            writer.add_scalar("losses/sil_policy_loss", sil_policy_loss.item(), global_step)
            writer.add_scalar("losses/sil_value_loss", sil_value_loss.item(), global_step)
            writer.add_scalar("charts/sil_best_return", memory.episodes[0][0] / args.reward_scale, global_step)

        guard(iteration, check_finite, parameters=torch.cat([p.detach().reshape(-1) for p in agent.parameters()]))
        zero_gradient = max(float(g) for g in grad_norms) == 0 if grad_norms else False
        collapse_count = collapse_count + 1 if zero_gradient or entropy_loss.item() < COLLAPSE_ENTROPY else 0
        if args.collapse_patience and collapse_count >= args.collapse_patience and collapsed_at is None:
            collapsed_at = iteration
            tqdm.write(f"warning: the policy has collapsed: a zero gradient norm or an entropy below "
                       f"{COLLAPSE_ENTROPY} for {collapse_count} iterations in a row (iteration {iteration}); "
                       f"usually --learning-rate is too large (or the policy has converged to one action per state)",
                       file=sys.stderr)

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
        if args.env == "nav" and args.image_every and (iteration % args.image_every == 0 or iteration == args.num_iterations):
            positions, greedy_return, greedy_distance = greedy_nav_episode(agent, args, device)
            image = greedy_trajectory_image(positions, args, global_step)
            writer.add_image("charts/greedy_trajectory", image, global_step, dataformats="HWC")
            writer.add_scalar("charts/greedy_final_distance", greedy_distance, global_step)
        recent = np.mean(finished_returns[-100:]) if finished_returns else float("nan")
        distance_text = f" final_distance={np.mean(finished_distances[-100:]):.2f}" if finished_distances else ""
        progress.update(1)
        tqdm.write(f"iteration {iteration}/{args.num_iterations} global_step={global_step} "
                   f"episodic_return={recent:.1f}{distance_text} SPS={sps} {format_progress(progress)}", file=sys.stdout)
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

    wall_time = time.time() - start_time
    summary = {
        **base_summary(args.num_iterations),
        "final_episodic_return": float(np.mean(finished_returns[-100:])) if finished_returns else None,
        "episodes": len(finished_returns),
        "wall_time_s": wall_time,
        "sps": global_step / wall_time,
    }
    if args.env == "nav":
        summary.update(nav_summary(agent, args, device, finished_returns, finished_distances))
    summary["eval_set"] = args.eval_set if args.env == "alchemy" else None
    if args.env == "alchemy" and args.eval_set == "dm_alchemy":
        eval_scores, heuristic = guard(args.num_iterations, eval_set_scores, agent, args, device)
        summary.update(eval_set_summary(eval_scores, heuristic, args, writer, global_step))
    write_json(os.path.join(run_dir, "summary.json"), summary)
    print(f"summary: {run_dir}/summary.json")
    envs.close()
    writer.close()
