"""Torch CPU threads and runs side by side: the median meta-iteration time of maml_vpg.py (its defaults:
8 tasks x 20 episodes x 100 steps, hidden 64) run alone and as two processes at once, with --torch-threads 1
and with torch's default (one thread per core). Prints a Markdown table.

Each run is the real script through its CLI for --iterations meta-iterations, without held-out evaluations;
the figure is the median_iteration_time_s of its summary.json (of two runs side by side, the slower one's).
OMP_NUM_THREADS and MKL_NUM_THREADS are removed from the runs' environment, so that torch's default is its
own. Run it on an otherwise quiet machine:

    python -m benchmark.threads [--iterations 8] [-- extra maml_vpg.py flags]
"""

import json
import os
import pathlib
import subprocess
import sys
import tempfile

from benchmark.tools.run import OneLineErrorParser  # errors in one line, as every tool here

ROOT = pathlib.Path(__file__).resolve().parents[1]
ENV = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}


def default_threads() -> int:
    """torch's default number of intra-op threads in a fresh process (no OMP_NUM_THREADS)."""
    code = "import torch; print(torch.get_num_threads())"
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV,
                              check=True).stdout)


def side_by_side(copies: int, threads: int, iterations: int, extra: list[str], workdir: str) -> float:
    """Start `copies` runs at once; return the slowest one's median iteration time (s)."""
    flags = ["--num-iterations", str(iterations), "--eval-every", "0", "--num-test-tasks", "1",
             "--torch-threads", str(threads), *extra]
    run_dirs = [tempfile.mkdtemp(dir=workdir) for _ in range(copies)]
    processes = [subprocess.Popen([sys.executable, str(ROOT / "maml_vpg.py"), *flags], cwd=d, env=ENV,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for d in run_dirs]
    times = []
    for process, run_dir in zip(processes, run_dirs):
        _, stderr = process.communicate()
        if process.returncode != 0:
            sys.exit(f"maml_vpg.py {' '.join(flags)} failed:\n{stderr}")
        (summary,) = pathlib.Path(run_dir).glob("runs/*/summary.json")
        times.append(json.loads(summary.read_text())["median_iteration_time_s"])
    return max(times)


def main() -> None:
    parser = OneLineErrorParser(prog="python -m benchmark.threads", description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=8, help="meta-iterations per run")
    parser.add_argument("extra", nargs="*", help="flags passed on to maml_vpg.py (after --)")
    args = parser.parse_args()
    default = default_threads()
    print(f"{os.cpu_count()} CPUs; torch's default: {default} threads", file=sys.stderr)
    print("| --torch-threads | one run alone (s / iteration) | two runs side by side (s / iteration) | slowdown |")
    print("|-|-|-|-|")
    with tempfile.TemporaryDirectory() as workdir:
        for threads in sorted({1, default}):
            alone = side_by_side(1, threads, args.iterations, args.extra, workdir)
            pair = side_by_side(2, threads, args.iterations, args.extra, workdir)
            label = f"{threads}" + (" (torch's default)" if threads == default else "")
            print(f"| {label} | {alone:.3f} | {pair:.3f} | {pair / alone:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
