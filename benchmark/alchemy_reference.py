"""Scores of the reference bots on symbolic Alchemy: mean episode return +- standard error of the mean.

Bots (alchemy_env): uniform random actions, and dm_alchemy's RandomActionBot (random present stone below
the maximum into a random present potion; when none is left, the positive stones into the cauldron).
Each episode has its own chemistry drawn from the level; all episodes run at once in one
SymbolicAlchemyVectorEnv. dm_alchemy's README reports, on its 1,000 shipped evaluation chemistries of
the no-rotation level, 17.52 +- 0.56 (uniform) and 147.02 +- 1.55 (random heuristic).

    python -m benchmark.alchemy_reference [--episodes 1000] [--seed 0]
"""

import argparse

import numpy as np

import alchemy_env
from benchmark.tools.run import OneLineErrorParser  # errors in one line, as every tool here

BOTS = {
    "uniform random actions": alchemy_env.uniform_random_actions,
    "random heuristic bot": alchemy_env.random_heuristic_actions,
}
LEVELS = (
    "alchemy/perceptual_mapping_randomized_with_random_bottleneck",
    alchemy_env.STANDARD_LEVEL,
)


def episode_returns(level: str, bot, episodes: int, seed: int) -> np.ndarray:
    """Return of `episodes` episodes of `bot`, one chemistry each, all stepped in one vector env."""
    envs = alchemy_env.SymbolicAlchemyVectorEnv(episodes, level=level, autoreset_mode="Disabled")
    observations, _ = envs.reset(seed=seed)
    return alchemy_env.bot_episode_returns(envs, observations, bot, np.random.default_rng(seed))


def main() -> None:
    parser = OneLineErrorParser(
        prog="python -m benchmark.alchemy_reference", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--episodes", type=int, default=1000, help="episodes per bot and level")
    parser.add_argument("--seed", type=int, default=0, help="seed of the chemistries, items and bots")
    args = parser.parse_args()
    if args.episodes < 2:
        parser.error(f"--episodes must be >= 2 (for a standard error), got {args.episodes}")

    print(f"{args.episodes} episodes per row, seed {args.seed}; score = mean episode return +- s.e.m.")
    for level in LEVELS:
        print(level)
        for name, bot in BOTS.items():
            returns = episode_returns(level, bot, args.episodes, args.seed)
            sem = returns.std(ddof=1) / np.sqrt(len(returns))
            print(f"  {name:<24}{returns.mean():8.2f} +- {sem:.2f}")


if __name__ == "__main__":
    main()
