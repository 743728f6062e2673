"""PPO on single navigation tasks against the exact optimum: prints a Markdown table.

For each task it runs `ppo_single_task.py` with its defaults (for nav: PPO + self-imitation, 12M steps)
plus the task's flags (the default task also as plain PPO, `--sil-coef 0`), reads the run's
summary.json, and solves the task exactly with nav_optimal.optimal_returns (backward induction), both
unrestricted and restricted to the start's side of the cross (the cross's arms extended to the map
edges). The second number is the local optimum that a learner following the reward's slope can
settle on.

    python -m benchmark.ppo_nav [--seed 1] [--out-dir /tmp/ppo_nav]
"""

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

import nav_env
from benchmark import nav_optimal
from benchmark.tools.run import OneLineErrorParser  # errors in one line, as every tool here

ROOT = pathlib.Path(__file__).resolve().parents[1]

# (label, goal, obstacle level, extra flags)
TASKS = [
    ("behind the cross (default)", (4.5, 1.0), "medium", []),
    ("behind the cross, plain PPO (`--sil-coef 0`)", (4.5, 1.0), "medium", ["--sil-coef", "0"]),
    ("same goal, no obstacles", (4.5, 1.0), "none", []),
    ("beside the cross", (8.0, 2.0), "medium", []),
]


def same_side_optimum(goal, obstacles: str) -> float | None:
    """Best return of a policy that never leaves the start's quadrant (None without a cross)."""
    if obstacles != "medium":
        return None
    walled = "medium_walled"
    nav_env.OBSTACLES[walled] = (((5.0, 0.0), (5.0, 10.0)), ((0.0, 5.0), (10.0, 5.0)))
    try:
        return nav_optimal.optimal_returns([goal], walled)[0][0]
    finally:
        del nav_env.OBSTACLES[walled]
        nav_env.collision_table.cache_clear()


def main() -> None:
    parser = OneLineErrorParser(
        prog="python -m benchmark.ppo_nav", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=1, help="seed passed to ppo_single_task.py")
    parser.add_argument("--out-dir", default=None, help="where the runs go (default: a temporary directory)")
    args = parser.parse_args()
    out_dir = pathlib.Path(args.out_dir or tempfile.mkdtemp(prefix="ppo_nav_"))
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for label, goal, obstacles, flags in TASKS:
        run_dir = out_dir / "_".join([obstacles, str(goal[0]), str(goal[1])] + [flag.strip("-") for flag in flags])
        run_dir.mkdir(exist_ok=True)
        command = [sys.executable, str(ROOT / "ppo_single_task.py"), "--seed", str(args.seed),
                   "--goal", str(goal[0]), str(goal[1]), "--obstacles", obstacles, *flags]
        print("+", " ".join(command[1:]), file=sys.stderr, flush=True)
        subprocess.run(command, cwd=run_dir, check=True, stdout=subprocess.DEVNULL)
        (summary_path,) = sorted(run_dir.glob("runs/*/summary.json"))[-1:]
        summary = json.loads(summary_path.read_text())
        optimum = nav_optimal.optimal_returns([goal], obstacles)[0][0]
        same_side = same_side_optimum(goal, obstacles)
        rows.append(
            f"| {label}: goal {goal}, {obstacles} | {summary['greedy_return']:.1f} | {summary['greedy_final_distance']:.2f} "
            f"| {'yes' if summary['greedy_reached'] else 'no'} | {optimum:.1f} | "
            f"{'-' if same_side is None else f'{same_side:.1f}'} | {summary['wall_time_s']:.0f} s |"
        )
    print("| task | PPO greedy return | final distance | reached | optimum (DP) | best same-side policy (DP) | PPO wall time |")
    print("|---|---:|---:|---|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
