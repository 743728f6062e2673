# MAML (or FOMAML with --first-order) with a policy-gradient inner loop on symbolic Alchemy: a task is a chemistry.
# Docs (usage, logged metrics, measured results with their commands): docs/alchemy_maml.md. The algorithm is
# maml_vpg.py's, on another task family.
"""MAML (Finn et al. 2017, Algorithm 3) with a policy-gradient inner loop on symbolic Alchemy (Wang et al. 2021).

A task is a chemistry of the level (which potion colour does what, which stone features are flipped, which
edges of the cube exist, the rotation). Each meta-iteration, for every chemistry of a meta-batch:
  1. sample K episodes (10 trials of 20 steps; fresh stones and potions every trial) with theta_0 = theta,
  2. take N inner policy-gradient steps theta_{k+1} = theta_k - inner_lr * grad L_in(theta_k), sampling
     K fresh episodes of the same chemistry with theta_k before each step,
  3. sample K validation episodes of the same chemistry with the adapted theta_N; their policy-gradient
     loss L_out(theta_N) is the task's meta-loss.
MAML differentiates the summed meta-losses through all N inner steps; --first-order (FOMAML, the first-order
approximation of Finn et al. 2017, Sec. 5.2, analysed by Nichol et al. 2018) applies the sum of each task's
gradient at theta_N to theta instead, as if d theta_N / d theta were the identity; Duan & Wang compare the two
with this policy-gradient inner loop on navigation (maml_vpg.py, fomaml_vpg.py). The inner loss is ProMP's
low-variance curvature (LVC) surrogate (Rothfuss et al. 2018), sum_t pi/stopgrad(pi) * A: its value and
gradient equal REINFORCE's, and its Hessian has the score-function term that REINFORCE's -log pi * A drops
when differentiated twice.

The policy is a memoryless MLP on the 39-float observation (3 stones, 12 potions): what it knows of the
chemistry comes only from adaptation (or, with --see-chemistry, from the 28-float ground truth appended to
its input, an upper reference). Because every trial brings new items, an action cannot change the rewards
of later trials: returns and GAE stop at the end of each trial (--per-trial-returns), which removes the
noise of the other trials' rewards without biasing the gradient.

Fast: all tasks' episodes run at once in one numpy-batched alchemy_env vector env (tasks x episodes envs),
each step is one forward pass of every task's own (adapted) policy via torch.func.vmap, advantages are a
matrix product, and the meta-gradient is torch.func.grad of a vmap over tasks.
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
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn as nn
import tyro
from torch.func import functional_call, grad, grad_and_value, vmap
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

import alchemy_env


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment"""
    seed: int = 1
    """seed of the experiment (training chemistries, items, actions, network initialisation)"""
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
    first_order: bool = False
    """if toggled, first-order MAML (FOMAML): no differentiation through the inner steps"""

    # Tasks
    level: str = alchemy_env.STANDARD_LEVEL
    """the symbolic Alchemy level whose chemistry prior the tasks are drawn from (alchemy_env.LEVELS)"""
    see_chemistry: bool = False
    """if toggled, the 28-float ground-truth chemistry vector is appended to the observation (an upper
    reference: the task is then visible, and adaptation is not needed to know it)"""
    backend: Literal["fast", "dm_alchemy"] = "fast"
    """`fast`: alchemy_env.py (numpy-batched, bit-exact with dm_alchemy); `dm_alchemy`: DeepMind's package,
    one Python env per episode stepped in a loop (far slower), the same scores for the same flags and seed
    (needs the dm_alchemy package: alchemy_env.DM_ALCHEMY_INSTALL)"""

    # Algorithm (Finn et al. 2017, Algorithm 3). The defaults train on 250 x 20 x 10 x 2 = 100,000 episodes;
    # their scores and run times, with the commands that measured them: docs/alchemy_maml.md
    num_iterations: int = 250
    """the number of meta-iterations (0: only evaluate the initial parameters)"""
    total_episodes: int | None = None
    """the run's length in training episodes, given instead of --num-iterations, which then becomes
    ceil(total_episodes / episodes per iteration), an iteration sampling meta_batch_size times
    episodes_per_task times (inner_steps + 1) episodes; None: the length is --num-iterations"""
    meta_batch_size: int = 20
    """the number of chemistries (tasks) per meta-iteration"""
    episodes_per_task: int = 10
    """K: episodes sampled per chemistry for each inner step and for the validation (outer) loss"""
    inner_steps: int = 1
    """N, the number of inner policy-gradient steps (fresh episodes before each)"""
    inner_lr: float = 1.0
    """the inner (adaptation) SGD step size alpha (Finn et al. 2017, Algorithm 3, line 7); with --norm-adv the
    advantages have unit scale, so its effect does not depend on the size of the rewards"""
    outer_lr: float = 1e-2
    """the meta (outer) learning rate beta (Finn et al. 2017, Algorithm 3, line 10)"""
    outer_optimizer: Literal["sgd", "adam"] = "adam"
    """the meta optimizer (Adam: Kingma & Ba 2015; plain SGD is Algorithm 3's update)"""
    gamma: float = 1.0
    """the discount factor gamma of the returns and advantages (the score is the undiscounted return)"""
    gae_lambda: float = 1.0
    """the lambda of generalised advantage estimation (1.0: return minus the linear baseline)"""
    per_trial_returns: bool = True
    """if toggled, returns and GAE stop at the end of each 20-step trial (items are redrawn every trial, so
    an action cannot change later trials' rewards); --no-per-trial-returns sums to the episode's end"""
    norm_adv: bool = True
    """toggles advantage normalisation (per task and batch), which makes inner_lr scale-free"""
    hidden_size: int = 128
    """width of the policy's two tanh hidden layers"""
    mask_actions: bool = True
    """if toggled, actions that cannot change anything (a stone already in the cauldron, a drunk potion;
    alchemy_env.valid_action_mask) get probability 0 in rollouts and in every loss (invalid-action masking,
    Huang & Ontanon 2020); --no-mask-actions lets the policy choose among all 40"""
    max_grad_norm: float = 1.0
    """clip the meta-gradient to this norm (0: no clipping)"""

    # Evaluation and outputs
    eval_every: int = 50
    """evaluate on the held-out test chemistries every this many iterations (0: only at the end)"""
    num_test_tasks: int = 100
    """the number of held-out test chemistries (each gets episodes_per_task episodes per measurement); the
    chemistries differ in difficulty, so the standard error of a score falls as 1/sqrt(num_test_tasks)"""
    test_seed: int = 0
    """seed of the held-out test chemistries (kept apart from --seed so every run is tested on the same
    ones; training never draws a chemistry equal to one of them)"""
    eval_set: Literal["sampled", "dm_alchemy"] = "sampled"
    """the episodes of the final held-out evaluation: `sampled`, --num-test-tasks chemistries of --level drawn
    with --test-seed, fresh items every episode; `dm_alchemy`, dm_alchemy's 1,000 evaluation episodes
    (chemistries and items as given, level alchemy/perceptual_mapping_randomized_with_random_bottleneck), on
    which its published agents were scored: summary.json then holds their scores on the same episodes and
    the paired difference to each (needs the dm_alchemy package). The evaluations during training stay on
    the sampled chemistries"""
    eval_episodes: int | None = None
    """with --eval-set dm_alchemy, score only the first this many of the 1,000 episodes; None: all of them"""
    eval_inner_steps: int | None = None
    """the final evaluation measures the score after 0..K inner steps (K >= --inner-steps), reported as
    score_after_steps in summary.json; None: K is --inner-steps"""
    save_model: bool = False
    """if toggled, save the meta-parameters to runs/{run_name}/{exp_name}.cleanrl_model"""
    load_model: str | None = None
    """path of saved meta-parameters to start from (None: a fresh initialisation); with --num-iterations 0
    this evaluates them"""

    # Runs that survive: checkpoints, resuming, threads, collapse (docs/runs.md)
    checkpoint_every: int = 10
    """write runs/{run_name}/checkpoint.pt (everything a continuation needs) every this many iterations, and
    always at the start, the end and on Ctrl-C / SIGTERM (0: only those)"""
    resume: str | None = None
    """continue the run in this folder (runs/{run_name}) from its checkpoint, with the flags it was started
    with; only --torch-threads may be given with it (None: start a new run)"""
    torch_threads: int = 1
    """torch's CPU threads (torch.set_num_threads). 1: the work is many small tensor operations, and runs side
    by side (benchmark/) would otherwise each start one thread per core and compete for the cores"""
    collapse_patience: int = 20
    """warn, and set "collapsed" in summary.json, after this many iterations in a row with a zero
    meta-gradient norm or a mean policy entropy below 1e-3 nats (0: never)"""


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


def resolve(args: Args) -> Args:
    """Check every value and fill in what a None stands for (--total-episodes' num_iterations,
    --eval-inner-steps, --eval-episodes), so the saved args are the ones the run used; exit 2 on bad input."""
    if args.level not in alchemy_env.LEVELS:
        fail(f"--level {args.level} is not a symbolic Alchemy level; allowed: {', '.join(alchemy_env.LEVELS)}")
    for name, value in vars(args).items():
        if isinstance(value, float) and not math.isfinite(value):
            fail(f"--{name.replace('_', '-')} must be a finite number, got {value}")
    if not args.track and (args.wandb_project_name != "meta-rl" or args.wandb_entity is not None):
        fail("--wandb-project-name and --wandb-entity are for --track; add --track or drop them")
    if args.track and importlib.util.find_spec("wandb") is None:
        fail("--track needs the wandb package: pip install wandb")
    for name in ("seed", "test_seed"):
        if not 0 <= getattr(args, name) < 2**32:
            fail(f"--{name.replace('_', '-')} must be in [0, 2**32 - 1], got {getattr(args, name)}")
    if "/" in args.exp_name or not args.exp_name:
        fail(f"--exp-name must be a non-empty name without '/', got {args.exp_name!r}")
    if args.total_episodes is not None and args.num_iterations != Args.num_iterations:
        fail(f"--num-iterations {args.num_iterations} and --total-episodes {args.total_episodes} both set the "
             f"length of the run; give one of them")
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
    if args.load_model is not None and not os.path.isfile(args.load_model):
        fail(f"--load-model {args.load_model}: no such file")
    if args.total_episodes is not None:
        if args.total_episodes < 0:
            fail(f"--total-episodes must be >= 0, got {args.total_episodes}")
        args.num_iterations = math.ceil(args.total_episodes / episodes_per_iteration(args))
    if args.eval_set != "dm_alchemy" and args.eval_episodes is not None:
        fail(f"--eval-episodes is for --eval-set dm_alchemy; add it or drop --eval-episodes {args.eval_episodes}")
    if args.eval_set == "dm_alchemy":
        try:
            size = len(alchemy_env.load_dm_alchemy_eval_set()["chemistries"]["rotation"])
        except ImportError as error:
            fail(f"--eval-set dm_alchemy: {error}")
        if args.eval_episodes is None:
            args.eval_episodes = size
        if not 1 <= args.eval_episodes <= size:
            fail(f"--eval-episodes must be in [1, {size}], got {args.eval_episodes}")
    if args.backend == "dm_alchemy":
        try:
            import dm_alchemy.symbolic_alchemy  # noqa: F401
        except ImportError as error:
            fail(f"--backend dm_alchemy needs DeepMind's dm_alchemy package ({error}); install it with "
                 f"`{alchemy_env.DM_ALCHEMY_INSTALL}`, or use --backend fast")
    return args


def episodes_per_iteration(args: Args) -> int:
    """meta_batch_size * episodes_per_task * (inner_steps + 1): the episodes one meta-iteration samples."""
    return args.meta_batch_size * args.episodes_per_task * (args.inner_steps + 1)


# --- runs that survive: checkpoints, atomic writes, signals, divergence --------------------------------
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


# --- tasks and environments ------------------------------------------------------------------------


def task_chemistries(level: str, seeds: np.ndarray) -> dict[str, np.ndarray]:
    """The chemistries of dm_alchemy's `get_symbolic_alchemy_level(level, seed)` for these seeds (its first
    episode's; alchemy_env.sample_episode is seed-exact), batched canonical form plus the "seed" of each.
    Both backends therefore train and test on the same chemistries."""
    chemistries = [alchemy_env.sample_episode(level, int(seed))[0] for seed in seeds]
    batch = {key: np.stack([c[key] for c in chemistries]) for key in
             ("potion_dim_map", "potion_dir_map", "stone_dir_map", "graph_edges", "rotation")}
    batch["seed"] = np.asarray(seeds, dtype=np.int64)
    return batch


def chemistry_keys(chemistries: dict[str, np.ndarray]) -> list[tuple[int, ...]]:
    """One hashable key per chemistry (its four indices), to tell chemistries apart."""
    indices, _ = alchemy_env.chemistry_indices(chemistries)
    return list(zip(*(a.tolist() for a in indices)))


def sample_tasks(level: str, n: int, rng: np.random.Generator, excluded: set) -> dict[str, np.ndarray]:
    """n training chemistries by fresh seeds, redrawing any that equals an excluded (held-out) one."""
    seeds = rng.integers(0, 2**31 - 1, size=n)
    chemistries = task_chemistries(level, seeds)
    redrawn = False
    for i, key in enumerate(chemistry_keys(chemistries)):
        while key in excluded:
            seeds[i] = rng.integers(0, 2**31 - 1)
            key = chemistry_keys(task_chemistries(level, seeds[i : i + 1]))[0]
            redrawn = True
    return task_chemistries(level, seeds) if redrawn else chemistries  # rebuilt only if a seed changed


class DMAlchemyVectorEnv:
    """A batch of DeepMind `dm_alchemy` symbolic envs with the interface rollout() uses (reset with one
    chemistry per env, step with an action array), stepping the envs one by one in Python: a reference to
    check the fast backend against, far slower than it (docs/alchemy_maml.md has both speeds).

    Each env's chemistry is dm_alchemy's own: the one `get_symbolic_alchemy_level(level, seed=s)` draws for
    its task seed s (the "seed" entry of task_chemistries' dicts), or, for an episode of dm_alchemy's
    evaluation set (an "eval_episode" entry), the one in the package's chemistries file. Every trial's items
    come from the same source as the fast backend's: an alchemy_env vector env of the same size, seeded and
    reset the same way, draws them (or takes the evaluation set's). Both backends therefore play the same
    episodes, and with the same seed a run gives the same scores on either.
    """

    def __init__(self, num_envs: int, level: str, see_chemistry: bool, seed: int | None = None):
        from dm_alchemy import io as dm_io
        from dm_alchemy import symbolic_alchemy
        from dm_alchemy.encode import chemistries_pb2, chemistries_proto_conversion
        from dm_alchemy.types import stones_and_potions
        from dm_alchemy.types import utils as dm_utils

        self._symbolic_alchemy, self._stones_and_potions = symbolic_alchemy, stones_and_potions
        self._dm_utils = dm_utils
        eval_set = []  # dm_alchemy's evaluation chemistries file, parsed once when first needed

        def eval_set_chemistry(episode: int):
            if not eval_set:
                eval_set.append(chemistries_pb2.ChemistriesAndItems.FromString(dm_io.read_proto(
                    "chemistries/perceptual_mapping_randomized_with_random_bottleneck/chemistries")))
            return chemistries_proto_conversion.proto_to_chemistry(eval_set[0].chemistries[episode].chemistry)

        self._eval_set_chemistry = eval_set_chemistry
        self.num_envs, self.level, self.see_chemistry = num_envs, level, see_chemistry
        self._see = ({"chemistry": dm_utils.ChemistrySeen(content=dm_utils.ElementContent.GROUND_TRUTH)}
                     if see_chemistry else None)
        self._chemistry_cache = {}
        self._envs = []
        self._item_source = alchemy_env.SymbolicAlchemyVectorEnv(num_envs, level=level, autoreset_mode="Disabled")
        self.single_observation_space = self._item_source.single_observation_space
        self.single_action_space = self._item_source.single_action_space

    @property
    def np_random(self) -> np.random.Generator:
        """The generator the items are drawn from (what a checkpoint saves)."""
        return self._item_source.np_random

    def _chemistry(self, chemistries: dict, row: int):
        """dm_alchemy's chemistry object for row `row` of a batch of chemistries."""
        if "seed" in chemistries:  # the first episode's chemistry of the seeded level env
            key = ("seed", int(chemistries["seed"][row]))
            if key not in self._chemistry_cache:
                level_env = self._symbolic_alchemy.get_symbolic_alchemy_level(self.level, seed=key[1])
                level_env.reset()
                self._chemistry_cache[key] = level_env._chemistry  # no public getter for the episode's chemistry
        elif "eval_episode" in chemistries:
            key = ("eval_episode", int(chemistries["eval_episode"][row]))
            if key not in self._chemistry_cache:
                self._chemistry_cache[key] = self._eval_set_chemistry(key[1])
        else:
            raise ValueError("DMAlchemyVectorEnv takes chemistries with a 'seed' or an 'eval_episode' entry")
        return self._chemistry_cache[key]

    def _episode_items(self, items: dict, row: int) -> list:
        """One env's 10 trials as fresh dm_alchemy TrialItems (its env moves the stones it is given)."""
        sp = self._stones_and_potions
        return [self._dm_utils.TrialItems(
            stones=[sp.LatentStone(np.array(coords)) for coords in items["stones_latent"][row, trial]],
            potions=[sp.LatentPotion(int(axis), int(sign)) for axis, sign in items["potions_latent"][row, trial]])
            for trial in range(alchemy_env.NUM_TRIALS)]

    def _observation(self, timesteps) -> np.ndarray:
        parts = [[t.observation["symbolic_obs"]] + ([t.observation["chemistry"]] if self.see_chemistry else [])
                 for t in timesteps]
        return np.stack([np.concatenate(p) for p in parts]).astype(np.float32)

    def reset(self, *, seed=None, options=None):
        # the same call on the item source as the fast backend's envs get: the same draws, in the same order
        self._item_source.reset(seed=seed, options=options)
        chemistries = (options or {}).get("chemistries")
        if chemistries is None:  # an initial reset without tasks: nothing to start yet
            return None, {}
        items = self._item_source.episode_items
        self._envs = []
        for row in range(self.num_envs):
            trials = self._episode_items(items, row)
            self._envs.append(self._symbolic_alchemy.SymbolicAlchemy(
                chemistry_gen=(lambda chemistry: (lambda: chemistry))(self._chemistry(chemistries, row)),
                reward_weights=None, items_gen=(lambda trials: (lambda trial: trials[trial]))(trials),
                num_trials=alchemy_env.NUM_TRIALS, see_chemistries=self._see, observe_used=True))
        return self._observation([env.reset() for env in self._envs]), {}

    def step(self, actions):
        timesteps = [env.step(int(a)) for env, a in zip(self._envs, actions)]
        rewards = np.array([t.reward for t in timesteps], dtype=np.float64)
        terminated = np.array([t.last() for t in timesteps])
        return self._observation(timesteps), rewards, terminated, np.zeros_like(terminated), {}

    def close(self):
        self._envs = []


def make_envs(args, num_envs: int, seed: int):
    if args.backend == "dm_alchemy":
        envs = DMAlchemyVectorEnv(num_envs, args.level, args.see_chemistry, seed)
    else:  # Disabled autoreset: a rollout starts every episode itself, with its task's chemistry
        envs = alchemy_env.SymbolicAlchemyVectorEnv(num_envs, level=args.level, see_chemistry=args.see_chemistry,
                                                     autoreset_mode="Disabled")
    envs.reset(seed=seed)
    return envs


# --- the policy ------------------------------------------------------------------------------------


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
             f"with the same --hidden-size and --see-chemistry): {lines[1] if len(lines) > 1 else lines[0]}")


# --- losses and the meta-gradient (one task each; vmap runs them over the meta-batch) ---------------
# A batch is a dict of one task's samples: obs (n, obs_dim), actions (n,), advantages (n,) and mask (n,)
# (mask 0 marks steps that are not decisions; every Alchemy episode runs its full 200 steps, so here it is 1),
# and with --mask-actions action_mask (n, actions), the actions the policy could choose at each step.


def masked_logits(logits, action_mask=None):
    """With an action mask, the policy is the softmax over the valid actions only (the others get probability
    0 and no gradient); rollouts and losses both go through here."""
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
    """One inner SGD step on the LVC loss; differentiable w.r.t. params (torch.func nests grads)."""
    grads = grad(inner_loss, argnums=1)(model, params, batch)
    return {name: params[name] - inner_lr * grads[name] for name in params}


def task_meta_loss(model, params, inner_batches, validation_batch, inner_lr: float):
    """MAML's per-task objective: the validation loss after the N inner steps, as a function of params."""
    for batch in inner_batches:
        params = inner_update(model, params, batch, inner_lr)
    return outer_loss(model, params, validation_batch)


def meta_gradient(model, params, adapted_params, inner_batches, validation_batch, inner_lr: float,
                  first_order: bool = False):
    """The meta-gradient of the validation losses summed over tasks. Returns (gradient dict, summed loss).

    MAML: differentiated w.r.t. the meta-parameters through all N inner steps (maml_vpg.py's).
    FOMAML (first_order): each task's gradient at its adapted parameters, summed (fomaml_vpg.py's).
    """
    if first_order:
        task_grads, task_losses = vmap(grad_and_value(outer_loss, argnums=1), in_dims=(None, 0, 0))(
            model, adapted_params, validation_batch
        )
        return {name: g.sum(0) for name, g in task_grads.items()}, task_losses.sum()

    def meta_loss(params):
        task_losses = vmap(task_meta_loss, in_dims=(None, None, 0, 0, None))(
            model, params, inner_batches, validation_batch, inner_lr
        )
        return task_losses.sum()

    return grad_and_value(meta_loss)(params)


# --- sampling, baseline and advantages (batched over tasks, no grad) --------------------------------


def discount_matrix(rate: float, horizon: int, segment: int | None = None) -> torch.Tensor:
    """M[t, u] = rate^(u - t) for u >= t (and, with segment, u in the same segment of that many steps as t),
    else 0; x @ M.T sums the discounted future of x at every t (up to the end of t's segment)."""
    steps = torch.arange(horizon, dtype=torch.float64)
    exponent = steps[None, :] - steps[:, None]
    keep = exponent >= 0
    if segment is not None:
        keep &= (steps[None, :] // segment) == (steps[:, None] // segment)
    return torch.where(keep, rate ** exponent.clamp(min=0), torch.zeros(()))


def linear_baseline(features, returns, mask, reg: float = 1e-5):
    """Per-task ridge regression of returns on features: the linear feature baseline of Duan et al. 2016, which
    Finn et al. 2017 (Sec. 5.3) use for MAML's policy gradients.

    features (tasks, n, F), returns and mask (tasks, n); returns the fitted values (tasks, n).
    """
    weighted = features * mask.unsqueeze(-1)
    gram = weighted.transpose(1, 2) @ features + reg * torch.eye(features.shape[-1], dtype=features.dtype)
    coef = torch.linalg.solve(gram, weighted.transpose(1, 2) @ returns.unsqueeze(-1))
    return (features @ coef).squeeze(-1)


def compute_advantages(obs, rewards, mask, gamma: float, gae_lambda: float, norm_adv: bool,
                       segment: int | None = None):
    """GAE(gamma, lambda) (Schulman et al. 2016) with a per-task linear baseline, as one matrix product.

    obs (tasks, episodes, T, obs_dim) normalised to [-1, 1]; rewards, mask (tasks, episodes, T). The value
    after the episode's last step is 0; with segment (the trial length), so is the value after the last
    step of every segment: returns and advantages then stop at the end of each trial.
    """
    tasks, episodes, horizon = rewards.shape
    rewards, mask = rewards.double(), mask.double()
    returns = rewards @ discount_matrix(gamma, horizon, segment).T
    steps = torch.arange(horizon, dtype=torch.float64)
    time = (steps / horizon).expand(tasks, episodes, horizon).unsqueeze(-1)
    # the time left in the trial drives what a trial's rest can still score, whatever the items
    trial_time = ((steps % segment) / segment if segment else steps / horizon).expand(tasks, episodes, horizon)
    trial_time = trial_time.unsqueeze(-1)
    features = torch.cat([obs.double(), obs.double() ** 2, time, time**2, time**3, trial_time, trial_time**2,
                          trial_time**3, torch.ones_like(time)], dim=-1)
    values = linear_baseline(
        features.reshape(tasks, episodes * horizon, -1), returns.reshape(tasks, -1), mask.reshape(tasks, -1)
    ).reshape(tasks, episodes, horizon) * mask
    continues = torch.ones(horizon, dtype=torch.float64)  # 0 where the next step belongs to another segment
    continues[-1] = 0.0
    if segment is not None:
        continues[segment - 1 :: segment] = 0.0
    next_values = torch.cat([values[..., 1:], torch.zeros_like(values[..., :1])], dim=-1) * continues
    deltas = (rewards + gamma * next_values - values) * mask
    advantages = deltas @ discount_matrix(gamma * gae_lambda, horizon, segment).T
    if norm_adv:
        count = mask.sum(dim=(1, 2), keepdim=True)
        mean = (advantages * mask).sum(dim=(1, 2), keepdim=True) / count
        std = (((advantages - mean) ** 2 * mask).sum(dim=(1, 2), keepdim=True) / count).sqrt()
        advantages = (advantages - mean) / (std + 1e-8)
    return (advantages * mask).float()


def episode_options(chemistries: dict, items: dict | None, episodes: int) -> dict:
    """Reset options that give each task's chemistry (and items, if given) to its `episodes` consecutive envs."""
    options = {"chemistries": {key: np.repeat(value, episodes, axis=0) for key, value in chemistries.items()}}
    if items is not None:
        options["items"] = {key: np.repeat(value, episodes, axis=0) for key, value in items.items()}
    return options


def rollout(envs, model, task_params, chemistries, args, device, items=None):
    """Run args.episodes_per_task full episodes (200 steps) of every task's chemistry in lockstep.

    task_params: parameter dict with a leading task dim (each task's own, possibly adapted, policy).
    items: None (every episode draws fresh items) or canonical items with a leading task dim, which every
    episode of that task then plays. Returns the task-batched samples for the losses and the per-episode
    statistics.
    """
    tasks, episodes, horizon = len(chemistries["rotation"]), args.episodes_per_task, alchemy_env.EPISODE_STEPS
    options = episode_options(chemistries, items, episodes)
    obs_np, _ = envs.reset(options=options)  # the tasks' chemistries, fresh items unless given
    obs = torch.zeros((horizon, tasks * episodes) + envs.single_observation_space.shape)
    actions = torch.zeros((horizon, tasks * episodes), dtype=torch.long)
    rewards = torch.zeros((horizon, tasks * episodes))
    entropies = torch.zeros((horizon, tasks * episodes))
    action_masks = (torch.ones((horizon, tasks * episodes, envs.single_action_space.n), dtype=torch.bool)
                    if args.mask_actions else None)
    policy = vmap(functional_call, in_dims=(None, 0, 0))  # every task's policy in one forward pass
    with torch.no_grad():
        for t in range(horizon):
            obs[t] = torch.as_tensor(obs_np)
            logits = policy(model, task_params, (obs[t].view(tasks, episodes, -1).to(device),))
            logits = logits.reshape(tasks * episodes, -1)
            if action_masks is not None:
                action_masks[t] = torch.as_tensor(alchemy_env.valid_action_mask(obs_np))
                logits = masked_logits(logits, action_masks[t].to(device))
            check_finite(action_logits=logits)
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
    advantages = compute_advantages(normalised_obs, rewards, mask, args.gamma, args.gae_lambda, args.norm_adv,
                                    segment)
    batch = {
        "obs": obs.reshape(tasks, episodes * horizon, -1),
        "actions": actions.reshape(tasks, -1),
        "advantages": advantages.reshape(tasks, -1),
        "mask": mask.reshape(tasks, -1),
    }
    if action_masks is not None:
        batch["action_mask"] = by_task(action_masks).reshape(tasks, episodes * horizon, -1)
    stats = {"scores": rewards.sum(-1).numpy(), "env_steps": tasks * episodes * horizon,  # scores (tasks, episodes)
             "entropy": float(entropies.mean())}  # the policy's mean entropy
    return {k: v.to(device) for k, v in batch.items()}, stats


def sample_and_adapt(envs, model, params, chemistries, num_steps: int, args, device):
    """Steps 1-3 of a meta-iteration for every task at once, without building a graph.

    Returns the batches sampled with theta_0..theta_num_steps, their statistics, and the adapted
    parameters theta_num_steps (with a leading task dim).
    """
    tasks = len(chemistries["rotation"])
    task_params = {name: p.detach().expand((tasks,) + p.shape) for name, p in params.items()}
    batches, stats = [], []
    for step in range(num_steps + 1):
        batch, batch_stats = rollout(envs, model, task_params, chemistries, args, device)
        batches.append(batch)
        stats.append(batch_stats)
        if step < num_steps:
            task_params = vmap(inner_update, in_dims=(None, 0, 0, None))(model, task_params, batch, args.inner_lr)
    return batches, stats, task_params


def evaluate(envs, model, params, chemistries, num_steps: int, args, device):
    """Each test chemistry's mean episode score after 0..num_steps inner steps: a list of (tasks,) arrays."""
    _, stats, _ = sample_and_adapt(envs, model, params, chemistries, num_steps, args, device)
    return [s["scores"].mean(1) for s in stats]


def evaluate_on_items(envs, model, params, chemistries, items, num_steps: int, args, device):
    """Each task's mean score on its given items after 0..num_steps inner steps: a list of (tasks,) arrays.

    Every one of a task's K episodes plays its items (the mean averages out the policy's sampling), while
    each inner step adapts on K fresh episodes of the chemistry, as in training and in `evaluate`: the
    scored episode is never seen before it is scored."""
    tasks = len(chemistries["rotation"])
    task_params = {name: p.detach().expand((tasks,) + p.shape) for name, p in params.items()}
    scores = []
    for step in range(num_steps + 1):
        _, stats = rollout(envs, model, task_params, chemistries, args, device, items=items)
        scores.append(stats["scores"].mean(1))
        if step < num_steps:
            batch, _ = rollout(envs, model, task_params, chemistries, args, device)
            task_params = vmap(inner_update, in_dims=(None, 0, 0, None))(model, task_params, batch, args.inner_lr)
    return scores


def heuristic_scores(envs, chemistries, args, seed: int, items=None) -> np.ndarray:
    """Each chemistry's mean episode score of dm_alchemy's random-heuristic bot (147.0 in dm_alchemy's table of
    reference scores, Wang et al. 2021), on the same chemistries (and items, if given) as the policy: a paired
    reference for the held-out score."""
    tasks, episodes = len(chemistries["rotation"]), args.episodes_per_task
    options = episode_options(chemistries, items, episodes)
    obs, _ = envs.reset(options=options)
    scores = alchemy_env.bot_episode_returns(envs, obs, alchemy_env.random_heuristic_actions,
                                             np.random.default_rng(seed))
    return scores.reshape(tasks, episodes).mean(1)


def mean_and_sem(task_means: np.ndarray) -> tuple[float, float | None]:
    """The mean over chemistries and its standard error (episodes of one chemistry were averaged first)."""
    sem = float(task_means.std(ddof=1) / np.sqrt(len(task_means))) if len(task_means) > 1 else None
    return float(task_means.mean()), sem


def eval_set_episodes(n: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The first n episodes of dm_alchemy's evaluation set: chemistries (with their "eval_episode" index, how
    the dm_alchemy backend finds its own chemistry objects) and items, canonical and batched."""
    data = alchemy_env.load_dm_alchemy_eval_set()
    chemistries = {key: np.array(value[:n]) for key, value in data["chemistries"].items()}
    chemistries["eval_episode"] = np.arange(n)
    return chemistries, {key: np.array(value[:n]) for key, value in data["items"].items()}


def eval_set_scores(args, model, params, num_steps: int, device) -> tuple[list[np.ndarray], np.ndarray]:
    """On the first args.eval_episodes episodes of dm_alchemy's evaluation set: each episode's score after
    0..num_steps inner steps (evaluate_on_items) and the random-heuristic bot's on the same items, both
    (episodes,). --num-test-tasks episodes run at once, which bounds the memory."""
    chemistries, items = eval_set_episodes(args.eval_episodes)
    chunk = min(args.num_test_tasks, args.eval_episodes)
    envs_of_size, scores, heuristic = {}, [], []
    for start in range(0, args.eval_episodes, chunk):
        rows = slice(start, min(start + chunk, args.eval_episodes))
        size = rows.stop - rows.start
        if size not in envs_of_size:
            envs_of_size[size] = make_envs(args, size * args.episodes_per_task, args.test_seed)
        envs = envs_of_size[size]
        part = {key: value[rows] for key, value in chemistries.items()}
        part_items = {key: value[rows] for key, value in items.items()}
        scores.append(evaluate_on_items(envs, model, params, part, part_items, num_steps, args, device))
        heuristic.append(heuristic_scores(envs, part, args, args.test_seed + start, part_items))
    for envs in envs_of_size.values():
        envs.close()
    return [np.concatenate(per_step) for per_step in zip(*scores)], np.concatenate(heuristic)


if __name__ == "__main__":
    cli = tyro_cli(Args(), sys.argv[1:])
    stop = StopRequest()  # from here on Ctrl-C / SIGTERM stop the run cleanly, between iterations
    if cli.resume is not None:  # the run's own flags, and everything its loop carried
        args, checkpoint, run_dir = resume_args(cli)
    else:
        args, checkpoint = resolve(cli), None
        algorithm = "fomaml" if args.first_order else "maml"
        run_dir = f"runs/alchemy-{algorithm}__{args.exp_name}__{args.seed}__{int(time.time())}"
    torch.set_num_threads(args.torch_threads)

    # TRY NOT TO MODIFY: seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    if args.cuda and not torch.cuda.is_available():
        print("--cuda given but no CUDA device is available: running on the CPU")
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    task_rng = np.random.default_rng([0, args.seed])  # training chemistries
    test_chemistries = task_chemistries(args.level, np.random.default_rng([1, args.test_seed]).integers(
        0, 2**31 - 1, size=args.num_test_tasks))
    held_out = set(chemistry_keys(test_chemistries))
    if args.eval_set == "dm_alchemy":  # training never draws one of the evaluation set's chemistries either
        held_out |= set(chemistry_keys(eval_set_episodes(args.eval_episodes)[0]))

    envs = make_envs(args, args.meta_batch_size * args.episodes_per_task, args.seed)
    test_envs = make_envs(args, args.num_test_tasks * args.episodes_per_task, args.test_seed)
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
    # the envs draw every trial's items from their own generator
    generators = {"task_rng": task_rng, "envs": envs.np_random, "test_envs": test_envs.np_random}
    checkpoint_path = os.path.join(run_dir, CHECKPOINT)

    global_step, train_episodes, start_iteration, elapsed_before = 0, 0, 0, 0.0
    iteration_times, iteration_sps = [], []
    collapse_count, collapsed_at = 0, None  # iterations in a row with a zero meta-gradient or entropy; when
    if checkpoint is not None:  # continue where the checkpoint left off, in the run's own folder
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        start_iteration, global_step = checkpoint["iteration"], checkpoint["global_step"]
        train_episodes = checkpoint["train_episodes"]
        iteration_times, iteration_sps = checkpoint["iteration_times"], checkpoint["iteration_sps"]
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
        return {"script": os.path.basename(__file__), "args": asdict(args), "iteration": iteration,
                "global_step": global_step, "train_episodes": train_episodes, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "rng": rng_state(generators), "iteration_times": iteration_times,
                "iteration_sps": iteration_sps, "collapse_count": collapse_count, "collapsed_at": collapsed_at,
                "elapsed_s": time.time() - start_time}

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
                "collapsed_at_iteration": collapsed_at, "iterations": iteration, "env_steps": global_step,
                "train_episodes": train_episodes}

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
            task_means = evaluate(test_envs, model, params, test_chemistries, num_steps, args, device)
        except Diverged as error:
            stop_diverged(iteration, error)
        scores, errors = zip(*(mean_and_sem(m) for m in task_means))
        writer.add_scalar("eval/pre_adaptation_score", scores[0], iteration)
        writer.add_scalar("eval/post_adaptation_score", scores[args.inner_steps], iteration)
        for k, score in enumerate(scores):
            writer.add_scalar(f"eval/score_after_{k}_steps", score, iteration)
        return list(scores), list(errors), task_means

    # elapsed time and ETA on stderr (every 30 s when it is not a terminal), and in the log lines
    progress = tqdm(total=args.num_iterations, initial=start_iteration, unit="it", file=sys.stderr, dynamic_ncols=True,
                    mininterval=0.5 if sys.stderr.isatty() else 30, disable=args.num_iterations == 0)
    completed = start_iteration
    for iteration in range(start_iteration + 1, args.num_iterations + 1):
        if stop.signum is not None:
            break
        iteration_start = time.time()
        chemistries = sample_tasks(args.level, args.meta_batch_size, task_rng, held_out)

        try:
            # ALGO LOGIC: sample, adapt N times and sample validation episodes, for all chemistries at once
            batches, stats, adapted_params = sample_and_adapt(envs, model, params, chemistries, args.inner_steps,
                                                              args, device)
            inner_batches, validation_batch = batches[:-1], batches[-1]

            # ALGO LOGIC: the meta-update (MAML through the inner steps, or FOMAML at the adapted parameters)
            grads, loss = meta_gradient(model, params, adapted_params, inner_batches, validation_batch,
                                        args.inner_lr, first_order=args.first_order)
            for name, p in params.items():
                p.grad = grads[name]
            grad_norm = torch.nn.utils.clip_grad_norm_(params.values(), args.max_grad_norm or float("inf"))
            check_finite(outer_loss=loss, meta_gradient=grad_norm)
            optimizer_step(optimizer)
            check_finite(parameters=torch.cat([p.detach().reshape(-1) for p in params.values()]))
        except Diverged as error:
            stop_diverged(iteration, error)

        iteration_steps = sum(s["env_steps"] for s in stats)
        global_step += iteration_steps
        train_episodes += episodes_per_iteration(args)
        iteration_times.append(time.time() - iteration_start)
        iteration_sps.append(iteration_steps / iteration_times[-1])
        collapse_count = collapse_count + 1 if grad_norm.item() == 0 or stats[0]["entropy"] < COLLAPSE_ENTROPY else 0
        if args.collapse_patience and collapse_count >= args.collapse_patience and collapsed_at is None:
            collapsed_at = iteration
            tqdm.write(f"warning: the policy has collapsed: a zero meta-gradient norm or an entropy below "
                       f"{COLLAPSE_ENTROPY} for {collapse_count} iterations in a row (iteration {iteration}); "
                       f"usually --outer-lr is too large", file=sys.stderr)

        # TRY NOT TO MODIFY: record rewards for plotting purposes (x axis: the meta-iteration, as in maml_vpg.py)
        writer.add_scalar("charts/pre_adaptation_score", stats[0]["scores"].mean(), iteration)
        writer.add_scalar("charts/post_adaptation_score", stats[-1]["scores"].mean(), iteration)
        writer.add_scalar("charts/policy_entropy", stats[0]["entropy"], iteration)
        writer.add_scalar("charts/env_steps", global_step, iteration)
        writer.add_scalar("charts/train_episodes", train_episodes, iteration)
        writer.add_scalar("charts/iteration_time", iteration_times[-1], iteration)
        writer.add_scalar("charts/SPS", int(iteration_sps[-1]), iteration)
        writer.add_scalar("losses/outer_loss", loss.item(), iteration)
        writer.add_scalar("losses/meta_grad_norm", grad_norm.item(), iteration)
        if args.eval_every and iteration % args.eval_every == 0 and iteration < args.num_iterations:
            scores, _, _ = log_evaluation(iteration, args.inner_steps)
            tqdm.write(f"iteration {iteration}: held-out score before adaptation {scores[0]:.1f}, "
                       f"after {args.inner_steps} step(s) {scores[args.inner_steps]:.1f}", file=sys.stdout)
        progress.update(1)
        if iteration % 10 == 0 or iteration in (1, args.num_iterations):
            tqdm.write(f"iteration {iteration}/{args.num_iterations} episodes={train_episodes} "
                       f"pre_adaptation_score={stats[0]['scores'].mean():.1f} "
                       f"post_adaptation_score={stats[-1]['scores'].mean():.1f} SPS={int(iteration_sps[-1])} "
                       f"episodes/s={episodes_per_iteration(args) / iteration_times[-1]:.0f} "
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

    # Final evaluation on the held-out test chemistries (or dm_alchemy's evaluation episodes), after 0..K inner steps
    train_time = time.time() - start_time
    eval_steps = max(args.inner_steps, args.eval_inner_steps)
    eval_set_summary = {"eval_set": args.eval_set}
    if args.eval_set == "dm_alchemy":
        try:
            task_means, heuristic = eval_set_scores(args, model, params, eval_steps, device)
        except Diverged as error:
            stop_diverged(args.num_iterations, error)
        scores, errors = (list(x) for x in zip(*(mean_and_sem(m) for m in task_means)))
        post = task_means[args.inner_steps]
        references, reference_sems, differences = alchemy_env.compare_with_agents(post, heuristic)
        for k, (score, error) in enumerate(zip(scores, errors)):
            writer.add_scalar(f"eval_set/score_after_{k}_steps", score, args.num_iterations)
            if error is not None:
                writer.add_scalar(f"eval_set/score_sem_after_{k}_steps", error, args.num_iterations)
        writer.add_scalar("eval_set/pre_adaptation_score", scores[0], args.num_iterations)
        writer.add_scalar("eval_set/post_adaptation_score", scores[args.inner_steps], args.num_iterations)
        for agent, (difference, difference_sem) in differences.items():
            writer.add_scalar(f"eval_set/reference_{agent}", references[agent], args.num_iterations)
            writer.add_scalar(f"eval_set/post_minus_{agent}", difference, args.num_iterations)
            if difference_sem is not None:
                writer.add_scalar(f"eval_set/post_minus_{agent}_sem", difference_sem, args.num_iterations)
        eval_set_summary.update(eval_episodes=args.eval_episodes, reference_scores=references,
                                reference_score_sems=reference_sems, post_minus_reference=differences,
                                pre_minus_reference=alchemy_env.compare_with_agents(task_means[0], heuristic)[2],
                                post_minus_pre=list(mean_and_sem(post - task_means[0])))
    else:
        scores, errors, task_means = log_evaluation(args.num_iterations, eval_steps)
        heuristic = heuristic_scores(test_envs, test_chemistries, args, args.test_seed)
        eval_set_summary["test_chemistry_seeds"] = test_chemistries["seed"].tolist()
    heuristic_score, heuristic_sem = mean_and_sem(heuristic)
    # paired by chemistry (or episode): their differences in difficulty cancel out of the error
    margin, margin_sem = mean_and_sem(task_means[args.inner_steps] - heuristic)
    summary = {
        **base_summary(args.num_iterations),
        **eval_set_summary,
        "pre_adaptation_score": scores[0],
        "post_adaptation_score": scores[args.inner_steps],
        "adaptation_gain": scores[args.inner_steps] - scores[0],
        "score_after_steps": scores,
        "score_sem_after_steps": errors,
        "heuristic_score": heuristic_score,
        "heuristic_score_sem": heuristic_sem,
        "post_minus_heuristic": margin,
        "post_minus_heuristic_sem": margin_sem,
        "wall_time_s": time.time() - start_time,
        "train_time_s": train_time,
        "sps": global_step / train_time if global_step else None,
        "episodes_per_s": train_episodes / train_time if train_episodes else None,
        "median_iteration_time_s": float(np.median(iteration_times)) if iteration_times else None,
        "median_sps": float(np.median(iteration_sps)) if iteration_sps else None,
    }
    where = "dm_alchemy's evaluation episodes" if args.eval_set == "dm_alchemy" else "held-out chemistries"
    print(f"{where}: " + ", ".join(
        f"after {k} step(s): score {s:.1f} +- {e if e is None else round(e, 1)}"
        for k, (s, e) in enumerate(zip(scores, errors))))
    print(f"random-heuristic bot on the same chemistries: {heuristic_score:.1f}; after {args.inner_steps} step(s) "
          f"minus the bot: {margin:+.1f} +- {margin_sem if margin_sem is None else round(margin_sem, 1)} (paired)")
    if args.eval_set == "dm_alchemy":
        for agent, (difference, difference_sem) in differences.items():
            print(f"  {agent}: {references[agent]:.2f} on the same {args.eval_episodes} episodes; after "
                  f"{args.inner_steps} step(s) minus it: {difference:+.2f} +- "
                  f"{difference_sem if difference_sem is None else round(difference_sem, 2)} (paired)")
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
