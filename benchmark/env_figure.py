"""Render docs/nav_env.png: the four obstacle levels, with goals from each target distribution and the
paths of a greedy agent (each step takes the move that most reduces the distance to its goal; a
blocked move leaves it where it was). Only nav_env's own renderer is used.

    python -m benchmark.env_figure [--out docs/nav_env.png] [--seed 0]
"""

import argparse
import pathlib

import numpy as np
from PIL import Image

import nav_env
from benchmark.tools.run import OneLineErrorParser  # errors in one line, as every tool here


def greedy_paths(obstacles: str, goals: np.ndarray) -> list[np.ndarray]:
    """Roll out the greedy policy in a vector env; return each env's positions until its episode ends."""
    envs = nav_env.NavigationVectorEnv(len(goals), obstacles=obstacles, autoreset_mode="Disabled")
    envs.reset(options={"goals": goals})
    paths, lengths = [envs.positions.copy()], np.full(len(goals), nav_env.MAX_EPISODE_STEPS + 1)
    for t in range(1, nav_env.MAX_EPISODE_STEPS + 1):
        next_positions = envs.positions[:, None, :] + nav_env.ACTION_DELTAS / nav_env.CELLS_PER_UNIT
        actions = ((next_positions - goals[:, None, :]) ** 2).sum(-1).argmin(1)
        _, _, terminated, truncated, _ = envs.step(actions)
        paths.append(envs.positions.copy())
        lengths = np.where((terminated | truncated) & (lengths > t), t + 1, lengths)
    positions = np.stack(paths, 1)
    return [path[:length] for path, length in zip(positions, lengths)]


def main() -> None:
    parser = OneLineErrorParser(
        prog="python -m benchmark.env_figure", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="docs/nav_env.png", help="where to write the PNG")
    parser.add_argument("--seed", type=int, default=0, help="seed of the goal sampler")
    parser.add_argument("--size", type=int, default=360, help="pixels per panel side")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    rows = []
    for targets in nav_env.TARGETS:
        goals = nav_env.sample_goals(targets, 4, rng)
        panels = [
            nav_env.render_trajectories(
                greedy_paths(level, goals), goals, obstacles=level, size=args.size,
                title=f"obstacles={level}  targets={targets}",
            )
            for level in nav_env.OBSTACLES
        ]
        rows.append(np.concatenate(panels, axis=1))
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
