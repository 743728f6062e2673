"""Trajectories of meta-trained policies on two held-out goals, before and after adaptation (the
papers' Figure 3a): one row per run, columns "before adaptation" and "after N inner steps".

Each argument is a run folder of a sweep (or any folder holding runs/<run>/summary.json and a model
saved with --save-model). The goals are the first two of the run's held-out test goals, or those given
with --goals; each panel shows 3 sampled episodes per goal, the adapted ones after the run's own number
of inner steps. The command that made the figure is written under it.

    python -m benchmark.tools.trajectories --out docs/maml_vs_fomaml_trajectories.png RUN_DIR [RUN_DIR ...]
    python -m benchmark.tools.trajectories --goals 4.5,1.0 2.0,3.5 --out behind_the_cross.png RUN_DIR

Run it from the repository root (the run folders may be anywhere).
"""

import argparse
import json
import pathlib
import shlex
import sys
import textwrap

import numpy as np
import torch
from PIL import Image, ImageDraw

import maml_vpg  # rollout and adaptation are the same code in maml_vpg.py and fomaml_vpg.py
import nav_env
from benchmark.tools import run as sweep_runner  # where a run folder's summary.json is found

PROG = "python -m benchmark.tools.trajectories"  # how --help and the figure's footer name this tool
EPISODES_SHOWN = 3


def fail(message: str) -> None:
    """Bad input: one line on stderr, exit code 2."""
    print(f"{PROG}: error: {message}", file=sys.stderr)
    sys.exit(2)


class PathRecorder(nav_env.NavigationVectorEnv):
    """A NavigationVectorEnv that keeps the positions of every env since each reset: paths[r] is (T + 1, num_envs, 2)
    for the r-th reset, so the rollouts of maml_vpg.sample_and_adapt (one reset each) can be drawn."""

    paths: list

    def reset(self, *, seed=None, options=None):
        result = super().reset(seed=seed, options=options)
        self.paths = getattr(self, "paths", []) + [[self.positions]]
        return result

    def step(self, actions):
        result = super().step(actions)
        self.paths[-1].append(self.positions)
        return result


def load_run(run_dir: pathlib.Path):
    summary_path = sweep_runner.newest_summary(run_dir)
    if summary_path is None:
        fail(f"no runs/*/summary.json under {run_dir}")
    summary = json.loads(summary_path.read_text())
    if "model_path" not in summary:
        fail(f"{summary_path} has no saved model (train with --save-model)")
    return summary, run_dir / summary["model_path"]


def parse_goal(text: str) -> tuple[float, float]:
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a goal is X,Y (two numbers in [0, 10]), got {text!r}") from None
    if not (0 <= x <= nav_env.MAP_SIZE and 0 <= y <= nav_env.MAP_SIZE):
        raise argparse.ArgumentTypeError(f"a goal is X,Y with both in [0, 10], got {text!r}")
    return x, y


def panels(summary: dict, model_path: pathlib.Path, seed: int, size: int, goals=None) -> list[np.ndarray]:
    args = maml_vpg.Args(**{k: v for k, v in summary["args"].items() if k in maml_vpg.Args.__dataclass_fields__})
    args.episodes_per_task = EPISODES_SHOWN
    goals = np.array(summary["test_goals"][:2] if goals is None else goals)
    torch.manual_seed(seed)
    envs = PathRecorder(len(goals) * EPISODES_SHOWN, obstacles=args.obstacles, see_goal=args.see_goal,
                        collision=args.collision, autoreset_mode="Disabled")
    envs.reset(seed=seed)
    space = envs.single_observation_space
    model = maml_vpg.Policy(space.shape[0], 8, args.hidden_size, space.low, space.high)
    model.load_state_dict(torch.load(model_path, map_location="cpu"))
    params = dict(model.named_parameters())
    envs.paths = []  # the seeding reset above is no rollout
    maml_vpg.sample_and_adapt(envs, model, params, goals, args.inner_steps, args, torch.device("cpu"))
    images = []
    for title, rollout_paths in (("before adaptation", envs.paths[0]),
                                 (f"after {args.inner_steps} inner step(s)", envs.paths[-1])):
        positions = np.stack(rollout_paths)  # (T + 1, envs, 2)
        paths = [positions[:, i] for i in range(len(goals) * EPISODES_SHOWN)]
        colours = [nav_env._PALETTE[i // EPISODES_SHOWN] for i in range(len(paths))]
        goal_per_path = [goal for goal in goals for _ in range(EPISODES_SHOWN)]  # goal i drawn in path i's colour
        images.append(nav_env.render_trajectories(paths, goal_per_path, obstacles=args.obstacles, size=size,
                                                  title=title, colors=colours))
    return images


def build_parser() -> sweep_runner.OneLineErrorParser:
    parser = sweep_runner.OneLineErrorParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", type=pathlib.Path, help="run folders with a saved model")
    parser.add_argument("--out", type=pathlib.Path, required=True, help="PNG to write")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampled episodes")
    parser.add_argument("--size", type=int, default=320, help="pixels per panel")
    parser.add_argument("--goals", nargs="+", type=parse_goal, metavar="X,Y",
                        help="the goals to show, e.g. 4.5,1.0 2.0,3.5 (default: the run's first two test goals)")
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    rows = []
    for run_dir in args.run_dirs:
        summary, model_path = load_run(run_dir)
        row = np.concatenate(panels(summary, model_path, args.seed, args.size, args.goals), axis=1)
        label = Image.new("RGB", (row.shape[1], 18), (255, 255, 255))
        ImageDraw.Draw(label).text((6, 3), f"{summary['args']['exp_name']}  ({run_dir})", fill=(0, 0, 0))
        rows.append(np.concatenate([np.asarray(label), row], axis=0))
    figure = np.concatenate(rows, axis=0)
    legend = (f"green square: the start {nav_env.START}; circles: the goals; each line one sampled episode, in its "
              f"goal's colour ({EPISODES_SHOWN} per goal); dark lines: the obstacles; the map is {nav_env.MAP_SIZE:g} x "
              f"{nav_env.MAP_SIZE:g}, grid lines every 1")
    command = f"{PROG} {shlex.join(argv)}"
    width = max(20, figure.shape[1] // 6)  # characters per footer line (the default font is about 6 pixels wide)
    lines = textwrap.wrap(legend, width) + textwrap.wrap(command, width)
    footer = Image.new("RGB", (figure.shape[1], 12 * len(lines) + 6), (255, 255, 255))
    for index, line in enumerate(lines):
        ImageDraw.Draw(footer).text((6, 3 + 12 * index), line, fill=(0, 0, 0) if index < len(lines) - len(
            textwrap.wrap(command, width)) else (90, 90, 90))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate([figure, np.asarray(footer)], axis=0)).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
