"""Experiment 7's task samplers: MAML or FOMAML meta-trained on a difficulty-aware task distribution (Duan & Wang's
suggestion C) instead of the target distribution itself. The meta-learner is the script's own code (--script), run
by a loop of its own that draws each meta-batch from a TaskSampler:

  uniform  the target distribution (nav_env.sample_goals), exactly as the script itself draws it;
  plr      Prioritized Level Replay (Jiang, Grefenstette, Rocktaschel 2021) over a grid of goal bins, scored by the
           return gap R* - return after adaptation of their training tasks: rank prioritisation with staleness;
  cvar     RoML (Greenberg, Mannor, Chechik, Meirom 2023): the hardest bins holding a fraction alpha of the target's
           mass oversampled, the rest of the target kept in play with weight --cvar-uniform.
  frontier goals of intermediate difficulty (GoalGAN: Florensa, Held, Geng, Abbeel 2018): the bins whose
           post-adaptation success rate lies in --frontier-band, the rest of the target kept in play with weight
           --frontier-uniform.

Every flag of the script is a flag here, with the same default; the run folder holds the script's TensorBoard tags
and summary.json, the held-out figures against the exact optimum (benchmark.nav_optimal.held_out_outcomes: eval/ tags
of success on the reachable goals and the return gap, overall and per quadrant), and the sampler's:
charts/difficulty_map (the learned return gap per goal bin, an image), charts/sampled_share_q1..q4,
charts/sampler_time, and sampled_share_by_quadrant, difficulty_map, success_map (the learned success rate per goal
bin) and median_sampler_time_s in summary.json. --task-sampler uniform gives the script's own run, figure for figure.

    python -m benchmark.curriculum --script maml_vpg.py --task-sampler plr
    python -m benchmark.curriculum --script fomaml_vpg.py --inner-steps 3 --task-sampler frontier --num-iterations 500
    python -m benchmark.tools.run benchmark/curriculum.py --set script=maml_vpg.py --grid task-sampler=uniform,frontier
"""

import importlib
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
import tyro
from torch.utils.tensorboard import SummaryWriter

import maml_vpg  # Args: the two scripts' flags are the same
import nav_env
from benchmark import nav_optimal


@dataclass
class Args(maml_vpg.Args):
    exp_name: str = "curriculum"
    """the name of this experiment"""
    script: Literal["maml_vpg.py", "fomaml_vpg.py"] = "maml_vpg.py"
    """the meta-learner whose functions (rollout, adaptation, meta-gradient) the loop runs"""
    task_sampler: Literal["uniform", "plr", "cvar", "frontier"] = "uniform"
    """uniform: the target distribution; plr, cvar, frontier: a goal bin per task by what they learned, then a goal"""
    sampler_bins: int = 10
    """plr / cvar / frontier: the goal bins are a grid of this many bins per axis over the map"""
    sampler_ema: float = 0.3
    """plr / cvar / frontier: the weight of an iteration's figures in their bin's (an exponential moving average)"""
    plr_temperature: float = 0.1
    """plr: beta of the rank prioritisation P_S(bin) ~ rank(score)^(-1/beta) (PLR's default)"""
    plr_staleness: float = 0.1
    """plr: rho, the weight of the staleness distribution P_C(bin) ~ iterations since last trained on (PLR's default)"""
    cvar_alpha: float = 0.2
    """cvar: alpha, the tail: the hardest bins holding this fraction of the target distribution"""
    cvar_uniform: float = 0.2
    """cvar: the share of training tasks still drawn from the whole target distribution (the rest from the tail)"""
    frontier_band: tuple[float, float] = (0.1, 0.9)
    """frontier: the bins whose post-adaptation success rate lies in [low, high] get the training tasks (GoalGAN's)"""
    frontier_uniform: float = 0.2
    """frontier: the share of training tasks still drawn from the whole target distribution (the rest from the band)"""
    frontier_grow: bool = False
    """frontier: the band also takes each bin below it that borders a bin at or above its low end (a reverse
    curriculum's growth outward from what is solved, Florensa et al. 2017)"""
    checkpoint_every: tyro.conf.Suppress[int] = 0  # these runs start over when killed: no checkpoint, no --resume
    resume: tyro.conf.Suppress[str | None] = None


def check(args: Args) -> None:
    """The script's checks, then the sampler's: exit code 2 and one line naming the flag."""
    maml_vpg.check(args)
    rules = [  # (flag, the value is fine, what it must be); nan fails every comparison
        *[(flag, getattr(args, flag) > 0, "> 0") for flag in ("sampler_bins", "plr_temperature")],
        *[(flag, 0 < getattr(args, flag) <= 1, "in (0, 1]")
          for flag in ("sampler_ema", "cvar_alpha", "cvar_uniform", "frontier_uniform")],
        ("plr_staleness", 0 <= args.plr_staleness <= 1, "in [0, 1]"),
        ("frontier_band", 0 <= args.frontier_band[0] <= args.frontier_band[1] <= 1, "low high, 0 <= low <= high <= 1"),
        ("task_sampler", args.task_sampler == "uniform" or args.collision != "original",
         "uniform with --collision original (the samplers score tasks by their gap to the exact optimum, "
         "which benchmark.nav_optimal computes for block and stick)"),
        *[(flag, flag.startswith(args.task_sampler) or getattr(args, flag) == getattr(Args, flag),  # none ignored
           f"left at its default without --task-sampler {flag.split('_')[0]}") for flag in (
            "plr_temperature", "plr_staleness", "cvar_alpha", "cvar_uniform", "frontier_band", "frontier_uniform",
            "frontier_grow")],
    ]
    for flag, fine, must in rules:
        if not fine:
            maml_vpg.stop(2, f"--{flag.replace('_', '-')} must be {must}, got {getattr(args, flag)!r}")


class TaskSampler:
    """The training goals of each meta-iteration, and what the sampler learned about where tasks are hard.

    `uniform` draws the meta-batch from the target distribution (nav_env.sample_goals). `plr`, `cvar` and
    `frontier` pick each task's bin from probabilities(), then take the first goal in that bin among goals drawn from
    the target distribution (in rounds of ROUND goals): the batch's bins follow probabilities() exactly,
    and inside a bin the goals follow the target distribution, so the support stays the target's (weighting
    a fixed pool of a few candidates per task could give a bin no more than its few candidates). A bin's
    score is an exponential moving average of the return gap R* - return after adaptation of its training
    tasks; a bin with no score yet counts as the hardest until it is trained on. Its success is the same
    average of its training tasks' success rate after adaptation (the share of their episodes that reach the goal).
    `mass` counts the goals
    drawn per bin: the target distribution's share of each bin, estimated as training goes.
    """

    ROUND = 512  # goals drawn from the target distribution at a time
    MAX_ROUNDS = 100  # a bin these rounds miss (the target almost never reaches it) gets a goal of any bin

    def __init__(self, args):
        self.kind, self.bins, self.args = args.task_sampler, args.sampler_bins, args
        num_bins = self.bins**2
        self.score = np.zeros(num_bins)  # EMA of the return gap, valid where visits > 0
        self.success = np.zeros(num_bins)  # EMA of the success rate, valid where visits > 0
        self.visits = np.zeros(num_bins, dtype=np.int64)  # training tasks per bin
        self.last_trained = np.zeros(num_bins, dtype=np.int64)  # PLR's C_i: the iteration it was last trained on
        self.mass = np.zeros(num_bins, dtype=np.int64)  # candidates drawn per bin
        self.iteration = 0  # PLR's c
        self.quadrant_counts = np.zeros(len(nav_env.QUADRANTS), dtype=np.int64)  # training tasks per quadrant

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
        mass, and every bin u times its mass (u = --cvar-uniform, which keeps every goal in play). frontier
        (GoalGAN's goals of intermediate difficulty, Florensa et al. 2018): the bins whose success lies in
        [low, high] share 1 - u in proportion to their mass, and every bin gets u times its mass (u =
        --frontier-uniform); a bin with no success rate yet is outside the band, and with no bin in it the
        target distribution is drawn from as it is. --frontier-grow adds to the band the bins below its low end
        (or with no success rate yet) that border, side or corner, a bin at or above it.
        """
        support = self.mass > 0
        if not support.any():
            return np.full(len(self.mass), 1 / len(self.mass))
        mass = np.where(support, self.mass, 0) / self.mass.sum()
        if self.kind == "uniform":
            return mass
        if self.kind == "frontier":
            low, high = self.args.frontier_band
            band = support & (self.visits > 0) & (low <= self.success) & (self.success <= high)
            if self.args.frontier_grow:  # a bin next to (or at) a reached one: any reached bin in its 3 x 3 window
                reached = ((self.visits > 0) & (self.success >= low)).reshape(self.bins, self.bins)
                padded, n = np.pad(reached, 1), self.bins
                near = np.any([padded[dx : dx + n, dy : dy + n] for dx in range(3) for dy in range(3)], axis=0)
                band |= support & (near & ~reached).ravel()
            u = self.args.frontier_uniform
            return u * mass + (1 - u) * np.where(band, mass, 0) / mass[band].sum() if band.any() else mass
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
        self.quadrant_counts += np.bincount(nav_optimal.goal_quadrants(goals), minlength=len(self.quadrant_counts))
        return goals

    def update(self, goals, gaps, successes, iteration: int) -> None:
        """Fold this iteration's return gaps and success rates (one per goal) into their bins' averages."""
        bins, ema = self.bin_of(goals), self.args.sampler_ema
        for b in np.unique(bins):
            for average, values in ((self.score, gaps), (self.success, successes)):
                value = float(np.mean(np.asarray(values)[bins == b]))
                average[b] = value if self.visits[b] == 0 else (1 - ema) * average[b] + ema * value
            self.visits[b] += int((bins == b).sum())
            self.last_trained[b] = iteration

    def difficulty_map(self, values=None) -> np.ndarray:
        """The bins' scores (or other values per bin) as (bins, bins), row y_bin from the bottom, column x_bin (NaN: not
        trained on yet)."""
        values = np.where(self.visits > 0, self.score if values is None else values, np.nan)
        return values.reshape(self.bins, self.bins).T


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
    heat_map = np.minimum(base, heat.astype(np.uint8))  # the map's lines and obstacles are darker than the heat

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
    return np.concatenate([heat_map, np.asarray(legend)], axis=0)


def none_if_nan(values) -> list:
    """A nested list with NaN as None (null in JSON)."""
    return [none_if_nan(v) if np.ndim(v) else (None if np.isnan(v) else float(v)) for v in values]


def main() -> None:
    args = tyro.cli(Args)
    check(args)
    algo = importlib.import_module(args.script.removesuffix(".py"))  # the meta-learner: maml_vpg or fomaml_vpg
    torch.set_num_threads(args.torch_threads)
    run_dir = f"runs/nav-{args.obstacles}-{args.targets}__{args.exp_name}__{args.seed}__{int(time.time())}"

    # as the script's __main__, in the same order (the same random draws), with the sampler's goals and records
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if args.cuda else "cpu")
    task_rng = np.random.default_rng([0, args.seed])  # training goals
    test_goals = nav_env.sample_goals(args.targets, args.num_test_tasks, np.random.default_rng([1, args.test_seed]))
    test_optimum = (None if args.collision == "original"  # the DP models block and stick
                    else nav_optimal.optimal_returns(test_goals, args.obstacles, args.collision))
    kwargs = dict(obstacles=args.obstacles, see_goal=args.see_goal, collision=args.collision, autoreset_mode="Disabled")
    envs = nav_env.NavigationVectorEnv(args.meta_batch_size * args.episodes_per_task, **kwargs)
    test_envs = nav_env.NavigationVectorEnv(args.num_test_tasks * args.episodes_per_task, **kwargs)
    envs.reset(seed=args.seed)
    test_envs.reset(seed=args.test_seed)
    space = envs.single_observation_space
    model = algo.Policy(space.shape[0], int(envs.single_action_space.n), args.hidden_size, space.low, space.high)
    if args.load_model is not None:
        try:
            model.load_state_dict(torch.load(args.load_model, map_location="cpu"))
        except Exception as error:  # not a file torch.save wrote, or another network (its first mismatch named)
            maml_vpg.stop(2, f"--load-model must be a .cleanrl_model of this --hidden-size and --see-goal, got "
                             f"{args.load_model!r} ({(str(error).splitlines()[1:] or [str(error)])[0].strip()[:150]})")
    model = model.to(device)
    params = dict(model.named_parameters())
    optimizer = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}[args.outer_optimizer](params.values(), args.outer_lr)
    try:
        os.makedirs(run_dir)
    except OSError as error:  # a file named runs, a folder this process cannot write in
        maml_vpg.stop(2, f"cannot create the run folder {run_dir} ({error.strerror}): runs/ must be a writable folder")
    if args.track:
        import wandb
        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True, config=vars(args),
                   name=os.path.basename(run_dir), save_code=True)
    writer = SummaryWriter(run_dir)
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n"
                    + "\n".join(f"|{key}|{value}|" for key, value in vars(args).items()))
    sampler = TaskSampler(args)
    sampler_times, iteration_times, global_step = [], [], 0

    def log_evaluation(iteration: int) -> dict:
        figures = algo.evaluate(writer, iteration, test_envs, model, params, test_goals, args, device)
        if test_optimum is not None:  # the same figures against the exact optimum, a quadrant's as eval/<name>_q1..q4
            outcomes = nav_optimal.held_out_outcomes(figures | {"args": asdict(args)}, test_optimum)
            for key, value in outcomes.items():
                for q, v in enumerate(value, 1) if key.endswith("_by_quadrant") else [(0, value)]:
                    if isinstance(v, float):
                        writer.add_scalar(f"eval/{key.removesuffix('_by_quadrant')}" + (f"_q{q}" if q else ""), v,
                                          iteration)
            figures |= outcomes
        if sampler.kind != "uniform":
            title = f"{args.task_sampler}: return gap per goal bin ({args.sampler_bins} x {args.sampler_bins})"
            writer.add_image("charts/difficulty_map", difficulty_image(sampler.difficulty_map(), args.obstacles, title),
                             iteration, dataformats="HWC")
        return figures

    start_time = time.time()
    for iteration in range(1, args.num_iterations + 1):
        iteration_start = time.time()
        goals = sampler.sample(args.meta_batch_size, task_rng, iteration)
        sampler_time = time.time() - iteration_start
        batches, stats, adapted_params = algo.sample_and_adapt(envs, model, params, goals, args.inner_steps, args,
                                                               device)
        loss = algo.outer_loss(model, adapted_params, batches[-1])  # the script's meta-update, as its loop takes it
        optimizer.zero_grad()
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params.values(), args.max_grad_norm or math.inf)
        if not torch.isfinite(loss + grad_norm):
            maml_vpg.stop(3, f"non-finite outer loss at iteration {iteration}: the run diverged; lower --outer-lr or "
                             f"--inner-lr")
        optimizer.step()
        if sampler.kind != "uniform":  # the training tasks' own post-adaptation gaps to their optimum, and success
            scoring_start = time.time()
            optimal_return = nav_optimal.optimal_returns(goals, args.obstacles, args.collision)[0]
            post = stats[-1]
            sampler.update(goals, optimal_return - post["returns"].mean(1), post["reached"].mean(1), iteration)
            sampler_time += time.time() - scoring_start
        sampler_times.append(sampler_time)
        global_step += sum(s["env_steps"] for s in stats)
        iteration_times.append(time.time() - iteration_start)
        sps = int(sum(s["env_steps"] for s in stats) / iteration_times[-1])

        writer.add_scalar("charts/pre_adaptation_return", stats[0]["returns"].mean(), iteration)
        writer.add_scalar("charts/post_adaptation_return", stats[-1]["returns"].mean(), iteration)
        writer.add_scalar("charts/pre_adaptation_distance", stats[0]["distances"].mean(), iteration)
        writer.add_scalar("charts/post_adaptation_distance", stats[-1]["distances"].mean(), iteration)
        writer.add_scalar("charts/env_steps", global_step, iteration)
        writer.add_scalar("charts/iteration_time", iteration_times[-1], iteration)
        writer.add_scalar("charts/SPS", sps, iteration)
        writer.add_scalar("losses/outer_loss", loss.item(), iteration)
        writer.add_scalar("losses/meta_grad_norm", grad_norm.item(), iteration)
        writer.add_scalar("charts/sampler_time", sampler_time, iteration)
        for q, share in enumerate(np.bincount(nav_optimal.goal_quadrants(goals), minlength=4) / len(goals)):
            writer.add_scalar(f"charts/sampled_share_q{q + 1}", share, iteration)
        if iteration % 10 == 0 or iteration in (1, args.num_iterations):
            print(f"iteration {iteration}/{args.num_iterations} global_step={global_step} pre/post-adaptation return "
                  f"{stats[0]['returns'].mean():.1f} -> {stats[-1]['returns'].mean():.1f} SPS={sps}")
        if args.eval_every and iteration % args.eval_every == 0 and iteration < args.num_iterations:
            log_evaluation(iteration)

    train_time = time.time() - start_time
    figures = log_evaluation(args.num_iterations)
    counts = sampler.quadrant_counts
    summary = {"args": asdict(args), "iterations": args.num_iterations, "env_steps": global_step, **figures,
               # what the task sampler did: the share of training tasks per quadrant, and its scores per goal bin
               "sampled_share_by_quadrant": (counts / counts.sum()).tolist() if counts.sum() else None,
               **{key: none_if_nan(sampler.difficulty_map(values)) if sampler.kind != "uniform" else None
                  for key, values in (("difficulty_map", None), ("success_map", sampler.success))},
               "median_sampler_time_s": float(np.median(sampler_times)) if sampler_times else None,
               "wall_time_s": time.time() - start_time, "train_time_s": train_time,
               "median_iteration_time_s": float(np.median(iteration_times)) if iteration_times else None}
    if args.save_model:
        summary["model_path"] = f"{run_dir}/{args.exp_name}.cleanrl_model"
        torch.save(model.state_dict(), summary["model_path"])
        print(f"model saved to {summary['model_path']}")
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"summary: {run_dir}/summary.json")
    writer.close()


if __name__ == "__main__":
    main()
