"""Training speed of maml_vpg.py and fomaml_vpg.py: env steps per second of full meta-iterations
(sampling + N inner steps + validation sampling + meta-update) and the FOMAML/MAML time ratio, for
N = 1, 3, 5 inner steps. Prints a Markdown table.

Each cell runs the real script through its CLI for --iterations meta-iterations with its defaults
(meta-batch 8 tasks x 20 episodes x 100 steps, hidden 64) and reads the median iteration time from its
summary.json; env steps per second are its env steps per iteration over that median time. MAML and FOMAML runs alternate, and
each figure is the median over --repeats runs. An env step is a step of a running episode (episodes
that reached their goal early stop counting). Every run is single-threaded (OMP_NUM_THREADS=1).

With --baseline REV the same cells are also measured for the scripts (and nav_env.py) of the git
revision REV, interleaved with the current ones, and the table shows both: a before/after comparison
from one run on one machine. Run it on a quiet machine:

    python -m benchmark.maml_speed [--iterations 30] [--repeats 3] [--inner-steps 1 3 5] [--baseline REV] [-- extra script flags]
"""

import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile

from benchmark.tools.run import OneLineErrorParser  # errors in one line, as every tool here

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = ("maml_vpg.py", "fomaml_vpg.py")


def run_once(code_dir: pathlib.Path, script: str, inner_steps: int, iterations: int, extra: list[str],
             workdir: str) -> dict:
    """One training run of `script` from code_dir; returns its summary.json."""
    run_dir = tempfile.mkdtemp(dir=workdir)
    flags = ["--inner-steps", str(inner_steps), "--num-iterations", str(iterations), "--eval-every", "0",
             "--num-test-tasks", "1", "--seed", "1", *extra]
    result = subprocess.run([sys.executable, str(code_dir / script), *flags], cwd=run_dir, capture_output=True,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
                                            "PYTHONPATH": str(code_dir)})
    if result.returncode != 0:
        sys.exit(f"{code_dir / script} {' '.join(flags)} failed:\n{result.stderr}")
    (summary,) = pathlib.Path(run_dir).glob("runs/*/summary.json")
    return json.loads(summary.read_text())


def checkout(revision: str, folder: pathlib.Path) -> None:
    """The two scripts and nav_env.py as they are at a git revision, written into folder."""
    for name in (*SCRIPTS, "nav_env.py"):
        shown = subprocess.run(["git", "-C", str(ROOT), "show", f"{revision}:{name}"], capture_output=True, text=True)
        if shown.returncode != 0:
            sys.exit(f"--baseline {revision}: cannot read {name} there ({shown.stderr.strip()})")
        (folder / name).write_text(shown.stdout)


def main() -> None:
    parser = OneLineErrorParser(prog="python -m benchmark.maml_speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=30, help="meta-iterations per run (default 30)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per cell; the figure is their median")
    parser.add_argument("--inner-steps", type=int, nargs="+", default=[1, 3, 5], help="values of N")
    parser.add_argument("--baseline", metavar="REV", help="also measure the scripts of this git revision")
    parser.add_argument("extra", nargs="*", help="flags passed to both scripts, after --")
    args = parser.parse_args()
    if args.iterations < 1 or args.repeats < 1 or min(args.inner_steps) < 1:
        parser.error(f"--iterations, --repeats and --inner-steps must be >= 1, got {args.iterations}, "
                     f"{args.repeats}, {args.inner_steps}")

    with tempfile.TemporaryDirectory() as workdir:
        versions = {"current": ROOT}
        if args.baseline:
            versions = {args.baseline: pathlib.Path(workdir) / "baseline", "current": ROOT}
            versions[args.baseline].mkdir()
            checkout(args.baseline, versions[args.baseline])
        rows = []
        for n in args.inner_steps:
            cells = {(version, script): ([], []) for version in versions for script in SCRIPTS}
            for repeat in range(args.repeats):
                for (version, script), (times, sps) in cells.items():
                    summary = run_once(versions[version], script, n, args.iterations, args.extra, workdir)
                    times.append(summary["median_iteration_time_s"])
                    sps.append(summary["env_steps"] / summary["iterations"] / summary["median_iteration_time_s"])
                    print(f"N={n} {version} {script} run {repeat + 1}/{args.repeats}: "
                          f"{summary['median_iteration_time_s']:.3f} s/iteration, {sps[-1]:,.0f} "
                          f"env steps/s", file=sys.stderr, flush=True)
            for version in versions:
                (maml_t, maml_s), (fomaml_t, fomaml_s) = (
                    (statistics.median(cells[version, s][0]), statistics.median(cells[version, s][1])) for s in SCRIPTS
                )
                rows.append((n, version, maml_s, maml_t, fomaml_s, fomaml_t))

    print(f"\n{args.iterations} meta-iterations per run, median of {args.repeats} runs, single-threaded; "
          f"extra flags: {' '.join(args.extra) or 'none'}\n")
    version_column = "| code " if args.baseline else ""
    print(f"| inner steps N {version_column}| MAML env steps/s | MAML s/iteration | FOMAML env steps/s "
          f"| FOMAML s/iteration | FOMAML time / MAML time |")
    print("|---" * (6 + bool(args.baseline)) + "|")
    for n, version, maml_sps, maml_time, fomaml_sps, fomaml_time in rows:
        version_cell = f"| {version} " if args.baseline else ""
        print(f"| {n} {version_cell}| {maml_sps:,.0f} | {maml_time:.3f} | {fomaml_sps:,.0f} | {fomaml_time:.3f} "
              f"| {fomaml_time / maml_time:.2f} |")


if __name__ == "__main__":
    main()
