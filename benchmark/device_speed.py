"""Seconds per meta-iteration of maml_vpg.py and alchemy_maml.py on the CPU and with --cuda, at each script's
default meta-batch and at a large one. Prints a Markdown table.

Each cell runs the real script through its CLI for --iterations meta-iterations (no intermediate evaluation,
one held-out task) and takes the median of its charts/iteration_time scalars; the first iterations (CUDA's
start-up, the allocator's warm-up) do not move a median of 20. CPU runs are single-threaded
(OMP_NUM_THREADS=1, --torch-threads 1), as the scripts' defaults are. A device this machine lacks is reported
and skipped. Run it on a quiet machine:

    python -m benchmark.device_speed [--iterations 20] [--devices cpu cuda] [--large-meta-batch 160]
"""

import os
import pathlib
import statistics
import subprocess
import sys
import tempfile

from tensorboard.backend.event_processing import event_accumulator

from benchmark.tools.run import OneLineErrorParser  # errors in one line, as every tool here

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_META_BATCH = {"maml_vpg.py": 8, "alchemy_maml.py": 20}  # the scripts' Args defaults


def iteration_time(script: str, meta_batch: int, device: str, iterations: int, workdir: str) -> float:
    """The median seconds per meta-iteration of one run of script."""
    run_dir = tempfile.mkdtemp(dir=workdir)
    flags = ["--num-iterations", str(iterations), "--eval-every", "0", "--num-test-tasks", "1",
             "--meta-batch-size", str(meta_batch), "--seed", "1"] + (["--cuda"] if device == "cuda" else [])
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))  # carried packages stay found
    result = subprocess.run([sys.executable, str(ROOT / script), *flags], cwd=run_dir, capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path})
    if result.returncode != 0:
        sys.exit(f"{script} {' '.join(flags)} failed:\n{result.stderr}")
    (run,) = pathlib.Path(run_dir).glob("runs/*")
    events = event_accumulator.EventAccumulator(str(run), size_guidance={event_accumulator.SCALARS: 0})
    events.Reload()
    return statistics.median(event.value for event in events.Scalars("charts/iteration_time"))


def main() -> None:
    parser = OneLineErrorParser(prog="python -m benchmark.device_speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=20, help="meta-iterations per run (default 20)")
    parser.add_argument("--devices", nargs="+", choices=["cpu", "cuda"], default=["cpu", "cuda"],
                        help="where to run (default: cpu cuda)")
    parser.add_argument("--large-meta-batch", type=int, default=160, help="the large meta-batch (default 160 tasks)")
    parser.add_argument("--scripts", nargs="+", choices=list(DEFAULT_META_BATCH), default=list(DEFAULT_META_BATCH),
                        help="the scripts to time (default: both)")
    args = parser.parse_args()
    if args.iterations < 1 or args.large_meta_batch < 1:
        parser.error(f"--iterations and --large-meta-batch must be >= 1, got {args.iterations} and "
                     f"{args.large_meta_batch}")
    devices = list(args.devices)
    if "cuda" in devices:
        import torch

        if not torch.cuda.is_available():
            print("no CUDA device here: the cuda column is skipped", file=sys.stderr)
            devices.remove("cuda")
        else:
            print(f"cuda: {torch.cuda.get_device_name()}", file=sys.stderr)

    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for script in args.scripts:
            for meta_batch in (DEFAULT_META_BATCH[script], args.large_meta_batch):
                times = {}
                for device in devices:
                    times[device] = iteration_time(script, meta_batch, device, args.iterations, workdir)
                    print(f"{script} meta-batch {meta_batch} {device}: {times[device]:.3f} s/iteration",
                          file=sys.stderr, flush=True)
                rows.append((script, meta_batch, times))

    print(f"\nmedian seconds per meta-iteration over {args.iterations} iterations (seed 1, no intermediate "
          f"evaluation)\n")
    print("| script | meta-batch (tasks) | " + " | ".join(f"{d} s/iteration" for d in devices)
          + (" | cpu / cuda |" if len(devices) == 2 else " |"))
    print("|---|---|" + "---|" * (len(devices) + (len(devices) == 2)))
    for script, meta_batch, times in rows:
        ratio = f" | {times['cpu'] / times['cuda']:.2f}" if len(devices) == 2 else ""
        print(f"| {script} | {meta_batch} | " + " | ".join(f"{times[d]:.3f}" for d in devices) + ratio + " |")


if __name__ == "__main__":
    main()
