"""Training speed of maml_vpg.py and fomaml_vpg.py: env steps per second of full meta-iterations
(sampling + N inner steps + validation sampling + meta-update) and the FOMAML/MAML time ratio, for
N = 1, 3, 5 inner steps. Prints a Markdown table.

Each cell runs the real script through its CLI for --iterations meta-iterations with its defaults
(meta-batch 8 tasks x 20 episodes x 100 steps, hidden 64) and reads the median iteration time and
median per-iteration env steps per second from its summary.json. MAML and FOMAML runs alternate, and
each figure is the median over --repeats runs. An env step is a step of a running episode (episodes
that reached their goal early stop counting). Run it on a quiet machine:

    python benchmark/maml_speed.py [--iterations 30] [--repeats 3] [--inner-steps 1 3 5] [-- extra script flags]
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_once(script: str, inner_steps: int, iterations: int, extra: list[str], workdir: str) -> dict:
    """One training run of `script`; returns its summary.json."""
    run_dir = tempfile.mkdtemp(dir=workdir)
    flags = ["--inner-steps", str(inner_steps), "--num-iterations", str(iterations), "--eval-every", "0",
             "--num-test-tasks", "1", "--seed", "1", *extra]
    result = subprocess.run([sys.executable, str(ROOT / script), *flags], cwd=run_dir, capture_output=True,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if result.returncode != 0:
        sys.exit(f"{script} {' '.join(flags)} failed:\n{result.stderr}")
    (summary,) = pathlib.Path(run_dir).glob("runs/*/summary.json")
    return json.loads(summary.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=30, help="meta-iterations per run (default 30)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per cell; the figure is their median")
    parser.add_argument("--inner-steps", type=int, nargs="+", default=[1, 3, 5], help="values of N")
    parser.add_argument("extra", nargs="*", help="flags passed to both scripts, after --")
    args = parser.parse_args()
    if args.iterations < 1 or args.repeats < 1 or min(args.inner_steps) < 1:
        parser.error(f"--iterations, --repeats and --inner-steps must be >= 1, got {args.iterations}, "
                     f"{args.repeats}, {args.inner_steps}")

    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for n in args.inner_steps:
            times = {"maml": [], "fomaml": []}
            sps = {"maml": [], "fomaml": []}
            for repeat in range(args.repeats):
                for name in ("maml", "fomaml"):
                    summary = run_once(f"{name}_vpg.py", n, args.iterations, args.extra, workdir)
                    times[name].append(summary["median_iteration_time_s"])
                    sps[name].append(summary["median_sps"])
                    print(f"N={n} {name} run {repeat + 1}/{args.repeats}: {summary['median_iteration_time_s']:.3f} "
                          f"s/iteration, {summary['median_sps']:,.0f} env steps/s", file=sys.stderr, flush=True)
            med = {name: (statistics.median(times[name]), statistics.median(sps[name])) for name in times}
            rows.append((n, med["maml"], med["fomaml"]))

    print(f"\n{args.iterations} meta-iterations per run, median of {args.repeats} runs; "
          f"extra flags: {' '.join(args.extra) or 'none'}\n")
    print("| inner steps N | MAML env steps/s | MAML s/iteration | FOMAML env steps/s | FOMAML s/iteration "
          "| FOMAML time / MAML time |")
    print("|---|---|---|---|---|---|")
    for n, (maml_time, maml_sps), (fomaml_time, fomaml_sps) in rows:
        print(f"| {n} | {maml_sps:,.0f} | {maml_time:.3f} | {fomaml_sps:,.0f} | {fomaml_time:.3f} "
              f"| {fomaml_time / maml_time:.2f} |")


if __name__ == "__main__":
    main()
