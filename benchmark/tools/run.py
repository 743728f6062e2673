"""Run a sweep of a training script (a grid of flag values x seeds) on a pool of workers, resumably, and
collect every run's summary.json into one CSV.

    python -m benchmark.tools.run fomaml_vpg.py --grid inner-steps=1,2,3 --grid obstacles=none,medium \\
        --set num-iterations=400 --seeds 5 --workers 2 --name inner_steps
    python -m benchmark.tools.run fomaml_vpg.py --grid inner-steps=1,3 --seeds 3 --name n13 --print-only > jobs.txt
    python -m benchmark.tools.run fomaml_vpg.py --grid inner-steps=1,3 --seeds 3 --name n13 --collect-only

Run it from the repository root (`python -m` needs the `benchmark` package on the path).

Layout: every run gets its own directory, a pure function of its grid values and seed,

    benchmark/sweeps/<name>/inner-steps=1__obstacles=none/seed=3/

and the script runs with that directory as its working directory, so its runs/{run_name}/summary.json
and TensorBoard event files land there (the training scripts need no change). stdout.log, stderr.log
and command.txt sit beside them; a failed run also gets failure.txt (exit code and stderr tail).
<sweep dir>/sweep.json records the script, the fixed flags and the grid; <sweep dir>/results.csv has
one row per finished run: run_dir, the grid values, seed, and the summary's scalars (nested dicts such
as `args` flattened to `args.seed`, lists as JSON).

A run whose summary.json exists is skipped, so rerunning the same command resumes a crashed sweep and
adding seeds or grid values extends it. Changing the script or the --set flags of an existing sweep
directory is refused: its finished runs would silently mix two settings.

Launchers (`--launcher`): every run is the same child process with the same logs, so results.csv is the
same whichever runs it.
  local (default)  a pool of --workers threads on this machine, each waiting on one child process.
  ray              one Ray task per run (1 CPU each) on the cluster at --ray-address, or on a local Ray
                   instance of --workers CPUs; needs `pip install -r requirements-dev.txt`.
  slurm            one Slurm job array through submitit (--slurm-partition, --slurm-time-min,
                   --slurm-array-parallelism); --submitit-cluster local runs the same array on this machine
                   with submitit's local executor. The sweep directory must be on a file system the nodes share.
Resuming, results.csv, failure.txt and the progress lines work the same way with every launcher.

Flag values: `--grid KEY=V1,V2` and `--set KEY=VALUE` pass `--KEY V`; a value with spaces passes
several tokens (`--set "goal=4.5 1.0"`); `true`/`false` pass tyro's `--KEY`/`--no-KEY`; a bare
`--set KEY` passes `--KEY`. Each child gets OMP_NUM_THREADS=1, MKL_NUM_THREADS=1 and
OPENBLAS_NUM_THREADS=1: W single-threaded runs on W cores beat W runs fighting over every core.
Exit status: 0 when every run of this invocation finished, 1 when any failed, 2 on bad input
(one line on stderr, nothing written), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import importlib.util
import itertools
import json
import os
import pathlib
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

ROOT = pathlib.Path(__file__).resolve().parents[2]  # benchmark/tools/run.py -> the repository root
SWEEPS_DIR = ROOT / "benchmark" / "sweeps"
SINGLE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def child_environment() -> dict[str, str]:
    """A run's environment: single-threaded, with the repository root on the path (a script under benchmark/
    imports the scripts and env modules as a top-level script does)."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, **SINGLE_THREAD_ENV, "PYTHONPATH": path}


FLAG_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
SWEEP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
STDERR_TAIL_LINES = 40
PROG = "python -m benchmark.tools.run"  # how error lines and --help name this tool


class BadInput(Exception):
    """A user error: reported as one line on stderr with exit code 2, before anything is written."""


@dataclass(frozen=True)
class Run:
    """One point of the sweep: grid values (flag -> value, in grid order) and a seed."""

    values: tuple[tuple[str, str], ...]
    seed: int
    run_dir: pathlib.Path

    @property
    def label(self) -> str:
        """The run directory relative to the sweep directory, e.g. `inner-steps=1/seed=2`."""
        return "/".join(self.run_dir.parts[-2:]) if self.values else self.run_dir.name

    def summary_path(self) -> pathlib.Path | None:
        """The run's summary.json (the newest one, should a run directory somehow hold several)."""
        return newest_summary(self.run_dir)


def newest_summary(folder: pathlib.Path) -> pathlib.Path | None:
    """The newest runs/<run>/summary.json under a folder (where the scripts write when run there), or None.
    A run writes it last, when it has finished; one that cannot be read (a kill during the write) does not count."""
    found = sorted(folder.glob("runs/*/summary.json"), key=lambda path: path.stat().st_mtime)
    if not found:
        return None
    try:
        json.loads(found[-1].read_text())
    except (OSError, ValueError):
        return None
    return found[-1]


# ---------------------------------------------------------------------------------------------------
# Parsing flags into argv tokens


def value_tokens(key: str, value: str | None) -> list[str]:
    """argv tokens for one flag: `--key v`, `--key v1 v2` for a value with spaces, `--key`/`--no-key`
    for true/false (tyro's boolean flags), `--key` alone for a bare flag (value None)."""
    if value is None or value.lower() == "true":
        return [f"--{key}"]
    if value.lower() == "false":
        return [f"--no-{key}"]
    return [f"--{key}", *shlex.split(value)]


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, raw_values = item.partition("=")
        values = raw_values.split(",")
        if not sep or not FLAG_NAME.fullmatch(key) or any(not value.strip() for value in values):
            raise BadInput(f"--grid {item!r}: expected KEY=V1,V2,... with a flag name and non-empty values, e.g. --grid inner-steps=1,2,3")
        if key == "seed":
            raise BadInput(f"--grid {item!r}: seeds come from --seeds, not from the grid")
        if key in grid:
            raise BadInput(f"--grid {item!r}: {key} is already in the grid; give each key once, e.g. --grid {key}=1,2")
        if len(set(values)) < len(values):
            raise BadInput(f"--grid {item!r}: repeated value; give each value once")
        grid[key] = values
    return grid


def parse_fixed(items: list[str], grid: dict[str, list[str]]) -> list[tuple[str, str | None]]:
    fixed: list[tuple[str, str | None]] = []
    for item in items:
        key, sep, value = item.partition("=")
        if not FLAG_NAME.fullmatch(key) or (sep and not value.strip()):
            raise BadInput(f"--set {item!r}: expected KEY=VALUE or a bare FLAG, e.g. --set num-iterations=400 or --set vpg")
        if key == "seed" or key in grid:
            raise BadInput(f"--set {item!r}: {key} is already set by {'--seeds' if key == 'seed' else '--grid'}")
        fixed.append((key, value if sep else None))
    return fixed


def parse_seeds(text: str) -> list[int]:
    """`5` -> seeds 1..5; `6-10` -> seeds 6..10 (to extend a sweep)."""
    match = re.fullmatch(r"(\d+)(?:-(\d+))?", text)
    if match:
        first, last = (1, int(match[1])) if match[2] is None else (int(match[1]), int(match[2]))
        if 1 <= last and first <= last:
            return list(range(first, last + 1))
    raise BadInput(f"--seeds {text!r}: expected a count N >= 1 (seeds 1..N) or a range A-B with A <= B, e.g. --seeds 5 or --seeds 6-10")


def dir_component(value: str) -> str:
    """A grid value as a directory-name-safe string: spaces and odd characters become `_`."""
    return re.sub(r"[^A-Za-z0-9._+-]", "_", value)


def resolve_script(script: str) -> pathlib.Path:
    """The training script: a path as given (from the working directory) or relative to the repo root."""
    for candidate in (pathlib.Path(script), ROOT / script):
        if candidate.is_file() and candidate.suffix == ".py":
            return candidate.resolve()
    raise BadInput(f"script {script!r}: no such .py file here or in {ROOT}; give a training script, e.g. fomaml_vpg.py")


def script_display_name(script: pathlib.Path) -> str:
    """The script relative to the repo root when inside it, so sweep.json survives moving the checkout."""
    try:
        return str(script.relative_to(ROOT))
    except ValueError:
        return str(script)


# ---------------------------------------------------------------------------------------------------
# The sweep


@dataclass
class Sweep:
    """What is run: the script, the fixed flags, the grid and the seeds, and where results go."""

    sweep_dir: pathlib.Path
    script: pathlib.Path
    python: str
    fixed: list[tuple[str, str | None]]
    grid: dict[str, list[str]]
    seeds: list[int]

    def runs(self) -> list[Run]:
        """Every (grid point, seed), grid points in the order the values were given, seeds innermost."""
        points = list(itertools.product(*self.grid.values())) if self.grid else [()]
        runs = []
        for point in points:
            values = tuple(zip(self.grid, point))
            base = self.sweep_dir
            if values:
                base = base / "__".join(f"{key}={dir_component(value)}" for key, value in values)
            runs.extend(Run(values, seed, base / f"seed={seed}") for seed in self.seeds)
        return runs

    def argv(self, run: Run) -> list[str]:
        tokens = [self.python, str(self.script), "--seed", str(run.seed)]
        for key, value in run.values:
            tokens += value_tokens(key, value)
        for key, value in self.fixed:
            tokens += value_tokens(key, value)
        return tokens

    def shell_line(self, run: Run) -> str:
        """The run as one self-contained shell line, for a cluster scheduler; it does what this runner does."""
        env = " ".join(f"{name}={value}" for name, value in SINGLE_THREAD_ENV.items())
        directory = shlex.quote(str(run.run_dir))
        return f"mkdir -p {directory} && cd {directory} && {env} {shlex.join(self.argv(run))} > stdout.log 2> stderr.log"

    def manifest(self) -> dict:
        return {
            "script": script_display_name(self.script),
            "fixed_flags": [[key, value] for key, value in self.fixed],
            "grid": self.grid,
            "seeds": self.seeds,
        }


def check_flags_known(sweep: Sweep) -> None:
    """Refuse flags that the script's --help does not list: a typo would otherwise fail every run."""
    with tempfile.TemporaryDirectory() as scratch:  # --help must not write into the repo either
        try:
            result = subprocess.run(
                [sweep.python, str(sweep.script), "--help"], capture_output=True, text=True, cwd=scratch,
                env=child_environment(), timeout=300,
            )
        except OSError as error:
            raise BadInput(f"--python {sweep.python!r}: cannot run it ({error.strerror}); give a Python executable") from None
    if result.returncode != 0:
        last_line = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise BadInput(f"script {sweep.script.name}: `--help` failed ({last_line}); pass --no-check-flags to skip this check")
    known = {name.replace("_", "-") for name in re.findall(r"--([A-Za-z0-9][A-Za-z0-9_-]*)", result.stdout)}
    wanted = [("seed", "1"), *[(key, value) for key, values in sweep.grid.items() for value in values], *sweep.fixed]
    for key, value in wanted:
        flag = value_tokens(key, value)[0]
        if flag[2:].replace("_", "-") not in known:
            raise BadInput(
                f"flag {flag!r}: {sweep.script.name} --help does not list it; use one of its flags "
                f"(tyro booleans as KEY=true/false), or pass --no-check-flags"
            )


def merge_with_existing(sweep: Sweep) -> dict:
    """sweep.json after this invocation: the grid values and seeds of earlier invocations are kept
    (the sweep grows); a different script, fixed flags or grid keys are refused."""
    manifest = sweep.manifest()
    path = sweep.sweep_dir / "sweep.json"
    if not path.exists():
        return manifest
    old = json.loads(path.read_text())
    for field in ("script", "fixed_flags"):
        if old[field] != manifest[field]:
            raise BadInput(
                f"{path}: this sweep was made with {field} {old[field]!r}, not {manifest[field]!r}; "
                f"use another --name/--out or delete the directory"
            )
    if list(old["grid"]) != list(manifest["grid"]):
        raise BadInput(f"{path}: this sweep's grid keys are {list(old['grid'])}, not {list(manifest['grid'])}; use another --name/--out")
    grid = {key: old["grid"][key] + [v for v in values if v not in old["grid"][key]] for key, values in manifest["grid"].items()}
    seeds = sorted(set(old["seeds"]) | set(manifest["seeds"]))
    return {**manifest, "grid": grid, "seeds": seeds}


def check_dir_names_unique(sweep: Sweep) -> None:
    for key, values in sweep.grid.items():
        names = [dir_component(value) for value in values]
        if len(set(names)) < len(names):
            raise BadInput(f"--grid {key}={','.join(values)}: two values map to the same directory name {names}; make them differ in [A-Za-z0-9._+-]")


# ---------------------------------------------------------------------------------------------------
# Running


def execute_run(argv: list[str], run_dir: str, shell_line: str) -> tuple[int, float, str]:
    """Run one training command in its directory (logs beside it); returns (exit code, seconds, failure
    reason or ''). A plain function of plain data, so a Ray task or a Slurm job can run it too."""
    run_dir = pathlib.Path(run_dir)
    # A crashed earlier attempt left a runs/ folder without summary.json; drop it so that its
    # event files are never read as a second copy of this seed.
    shutil.rmtree(run_dir / "runs", ignore_errors=True)
    (run_dir / "failure.txt").unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "command.txt").write_text(shell_line + "\n")
    start = time.monotonic()
    with open(run_dir / "stdout.log", "w") as stdout, open(run_dir / "stderr.log", "w") as stderr:
        try:
            child = subprocess.Popen(argv, cwd=run_dir, stdout=stdout, stderr=stderr, env=child_environment())
        except OSError as error:  # e.g. a --python that does not exist: a failed run, not a crash
            print(f"benchmark.tools.run could not start the run: {error}", file=stderr, flush=True)
            code = 127
        else:
            ACTIVE_CHILDREN.add(child)
            try:
                code = child.wait()
            finally:
                ACTIVE_CHILDREN.discard(child)
    seconds = time.monotonic() - start
    reason = ""
    if code < 0:
        reason = f"killed by signal {-code}"
    elif code != 0:
        reason = f"exit code {code}"
    elif newest_summary(run_dir) is None:
        reason = "exit code 0 but no runs/*/summary.json was written"
    if reason:
        tail = (run_dir / "stderr.log").read_text(errors="replace").splitlines()[-STDERR_TAIL_LINES:]
        (run_dir / "failure.txt").write_text(
            f"{reason}\ncommand: {shell_line}\n"
            f"--- last {STDERR_TAIL_LINES} lines of stderr.log ---\n" + "\n".join(tail) + "\n"
        )
    return code, seconds, reason


ACTIVE_CHILDREN: set[subprocess.Popen] = set()  # the local launcher's children, stopped on Ctrl-C


def launch_local(sweep: Sweep, pending: list[Run], options: argparse.Namespace):
    """Yield (run, code, seconds, reason) as runs finish on a pool of --workers threads."""
    stopping = threading.Event()

    def run_one(run: Run):
        if stopping.is_set():
            return run, -1, 0.0, "not started (interrupted)"
        return (run, *execute_run(sweep.argv(run), str(run.run_dir), sweep.shell_line(run)))

    executor = concurrent.futures.ThreadPoolExecutor(max_workers=options.workers)
    futures = [executor.submit(run_one, run) for run in pending]
    try:
        for future in concurrent.futures.as_completed(futures):
            yield future.result()
    except (KeyboardInterrupt, GeneratorExit):
        stopping.set()
        for child in list(ACTIVE_CHILDREN):
            child.terminate()
        executor.shutdown(wait=True, cancel_futures=True)
        raise
    executor.shutdown()


def launch_ray(sweep: Sweep, pending: list[Run], options: argparse.Namespace):
    """One Ray task (1 CPU) per run, on the cluster at --ray-address or a local instance of --workers CPUs."""
    import ray

    if options.ray_address:
        ray.init(address=options.ray_address, log_to_driver=False)
    else:
        # Ray starts its workers at nice 15: beside any other busy process their runs would get a few percent
        # of a core. The runs are the work here, so the local instance runs them at normal priority.
        os.environ.setdefault("RAY_worker_niceness", "0")
        ray.init(num_cpus=options.workers, include_dashboard=False, log_to_driver=False)
    remote_run = ray.remote(num_cpus=1, max_retries=0)(execute_run)
    refs = {remote_run.remote(sweep.argv(run), str(run.run_dir), sweep.shell_line(run)): run for run in pending}
    try:
        waiting = list(refs)
        while waiting:
            done, waiting = ray.wait(waiting, num_returns=1)
            yield (refs[done[0]], *ray.get(done[0]))
    except (KeyboardInterrupt, GeneratorExit):
        for ref in refs:
            ray.cancel(ref, force=True)
        raise
    finally:
        ray.shutdown()


def launch_slurm(sweep: Sweep, pending: list[Run], options: argparse.Namespace):
    """One Slurm job array through submitit (or the same array on this machine with --submitit-cluster local)."""
    import submitit

    folder = sweep.sweep_dir / "submitit" / "%j"
    executor = submitit.AutoExecutor(folder=folder, cluster=options.submitit_cluster)
    parameters = {"timeout_min": options.slurm_time_min, "cpus_per_task": 1,
                  "slurm_array_parallelism": options.slurm_array_parallelism}
    if options.slurm_partition:
        parameters["slurm_partition"] = options.slurm_partition
    if options.submitit_cluster != "slurm":  # the local executor knows only the generic parameters
        parameters = {"timeout_min": options.slurm_time_min}
    executor.update_parameters(name=f"sweep_{sweep.sweep_dir.name}", **parameters)
    jobs = executor.map_array(execute_run, [sweep.argv(run) for run in pending],
                              [str(run.run_dir) for run in pending], [sweep.shell_line(run) for run in pending])
    log(f"submitted {len(jobs)} jobs (array {jobs[0].job_id.split('_')[0] if jobs else '-'}); logs in {folder.parent}")
    try:
        remaining = dict(zip(jobs, pending))
        while remaining:
            finished = [job for job in remaining if job.done()]
            if not finished:
                time.sleep(0.5)
                continue
            for job in finished:
                run = remaining.pop(job)
                try:
                    yield (run, *job.result())
                except Exception as error:  # the job itself failed (e.g. cancelled or out of time)
                    (run.run_dir / "failure.txt").write_text(f"submitit job {job.job_id} failed: {error}\n")
                    yield run, -1, 0.0, f"submitit job {job.job_id} failed"
    except (KeyboardInterrupt, GeneratorExit):
        for job in remaining:
            job.cancel(check=False)
        raise


LAUNCHERS = {"local": launch_local, "ray": launch_ray, "slurm": launch_slurm}


def run_all(sweep: Sweep, pending: list[Run], skipped: int, options: argparse.Namespace) -> list[Run]:
    """Run everything pending with the chosen launcher, printing progress on stderr; returns the failed runs."""
    total, workers = len(pending) + skipped, options.workers
    failed: list[Run] = []
    start, run_seconds = time.monotonic(), 0.0
    finished_runs = LAUNCHERS[options.launcher](sweep, pending, options)
    for finished, (run, code, seconds, reason) in enumerate(finished_runs, start=1):
        if reason:
            failed.append(run)
        elapsed, run_seconds = time.monotonic() - start, run_seconds + seconds
        # the mean run so far, for each remaining run, `workers` at a time
        eta = run_seconds / finished * (len(pending) - finished) / workers
        status = f"FAILED ({reason}; see {run.run_dir / 'failure.txt'})" if reason else "ok"
        log(
            f"[{skipped + finished}/{total}] {run.label} {status} in {seconds:.1f}s | "
            f"failed {len(failed)}, elapsed {clock(elapsed)}, ETA {clock(eta)}"
        )
    return failed


def clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------
# Collecting


def flatten(summary: dict, prefix: str = "") -> dict[str, object]:
    """Scalar fields as they are, nested dicts as `outer.inner`, lists as JSON text."""
    flat: dict[str, object] = {}
    for key, value in summary.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        elif isinstance(value, (list, tuple)):
            flat[f"{prefix}{key}"] = json.dumps(value)
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def load_sweep_runs(sweep_dir: pathlib.Path) -> tuple[dict, list[Run]]:
    """(sweep.json, every run that sweep.json plans), for tools that read a finished sweep."""
    manifest = json.loads((sweep_dir / "sweep.json").read_text())
    sweep = Sweep(sweep_dir, pathlib.Path(manifest["script"]), "", [], manifest["grid"], manifest["seeds"])
    return manifest, sweep.runs()


def collect(sweep_dir: pathlib.Path) -> tuple[pathlib.Path, int, list[Run]]:
    """Write <sweep dir>/results.csv; returns (its path, rows, runs without a summary)."""
    manifest, runs = load_sweep_runs(sweep_dir)
    rows, missing = [], []
    for run in runs:
        path = run.summary_path()
        if path is None:
            missing.append(run)
            continue
        row: dict[str, object] = {"run_dir": str(run.run_dir.relative_to(sweep_dir)), **dict(run.values), "seed": run.seed}
        summary = flatten(json.loads(path.read_text()))
        # top-level scalars first, nested ones (args.*) after them
        for key in sorted(summary, key=lambda k: "." in k):
            row[key if key not in row else f"summary.{key}"] = summary[key]
        rows.append(row)
    columns = list(dict.fromkeys(["run_dir", *manifest["grid"], "seed", *(key for row in rows for key in row)]))
    out = sweep_dir / "results.csv"
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return out, len(rows), missing


# ---------------------------------------------------------------------------------------------------
# Command line


class OneLineErrorParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would print the usage first: keep errors one line
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def positive_int(text: str) -> int:
    if not re.fullmatch(r"\d+", text) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("script", help="the training script, e.g. fomaml_vpg.py (a path, or relative to the repo root)")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                        help="a flag and its values to sweep; repeat for a cartesian grid (e.g. --grid inner-steps=1,2,3)")
    parser.add_argument("--set", action="append", default=[], dest="fixed", metavar="KEY=VALUE",
                        help="a flag passed to every run (e.g. --set num-iterations=400, --set see-goal=false)")
    parser.add_argument("--seeds", default="1", metavar="N|A-B",
                        help="seeds per grid point: N runs --seed 1..N, A-B runs --seed A..B (default: 1)")
    parser.add_argument("--workers", type=positive_int, default=1, metavar="W",
                        help="runs at a time, each single-threaded; about the number of free cores (default: 1)")
    parser.add_argument("--name", metavar="NAME", help="the sweep's name (default: the script's name without .py)")
    parser.add_argument("--out", metavar="DIR", help="the sweep directory (default: benchmark/sweeps/NAME in the repo)")
    parser.add_argument("--python", default=sys.executable, metavar="EXE",
                        help="the Python that runs the script (default: the one running this runner)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--print-only", action="store_true",
                      help="print the pending runs' commands, one self-contained shell line each (mkdir, cd, env, "
                           "command, logs), and run and write nothing; finished runs are left out")
    mode.add_argument("--collect-only", action="store_true",
                      help="run nothing; record sweep.json and (re)write results.csv from the summaries found, "
                           "e.g. after running --print-only's lines on a cluster")
    parser.add_argument("--launcher", choices=sorted(LAUNCHERS), default="local",
                        help="what runs the runs: local (a worker pool here), ray (Ray tasks) or slurm (a submitit "
                             "job array); default: local")
    parser.add_argument("--ray-address", metavar="ADDRESS",
                        help="ray: the cluster to submit to (e.g. auto, or ray://host:10001); default: start a local "
                             "Ray instance with --workers CPUs")
    parser.add_argument("--submitit-cluster", choices=["slurm", "local"], default="slurm",
                        help="slurm: submit to Slurm (default), or run the array on this machine with submitit's "
                             "local executor")
    parser.add_argument("--slurm-partition", metavar="NAME", help="slurm: the partition (default: the cluster's)")
    parser.add_argument("--slurm-time-min", type=positive_int, default=240, metavar="MIN",
                        help="slurm: the time limit of each run in minutes (default: 240)")
    parser.add_argument("--slurm-array-parallelism", type=positive_int, default=64, metavar="N",
                        help="slurm: how many runs of the array run at once (default: 64)")
    parser.add_argument("--no-check-flags", action="store_true",
                        help="skip checking the flags against the script's --help (that check costs one import of the script)")
    return parser


def make_sweep(args: argparse.Namespace) -> Sweep:
    """Validate everything up front; raises BadInput before anything is written."""
    script = resolve_script(args.script)
    grid = parse_grid(args.grid)
    fixed = parse_fixed(args.fixed, grid)
    seeds = parse_seeds(args.seeds)
    name = args.name if args.name is not None else script.stem
    if not SWEEP_NAME.fullmatch(name):
        raise BadInput(f"--name {name!r}: expected letters, digits, '.', '_' or '-', e.g. --name inner_steps")
    sweep_dir = pathlib.Path(args.out).resolve() if args.out else SWEEPS_DIR / name
    if args.launcher != "ray" and args.ray_address:
        raise BadInput(f"--ray-address {args.ray_address!r} is for --launcher ray, not {args.launcher}")
    slurm_flags = {"--submitit-cluster": args.submitit_cluster != "slurm", "--slurm-partition": bool(args.slurm_partition),
                   "--slurm-time-min": args.slurm_time_min != 240, "--slurm-array-parallelism": args.slurm_array_parallelism != 64}
    given = [flag for flag, is_given in slurm_flags.items() if is_given]
    if args.launcher != "slurm" and given:
        raise BadInput(f"{given[0]} is for --launcher slurm, not {args.launcher}")
    if args.launcher != "local" and not (args.print_only or args.collect_only):
        module = {"ray": "ray", "slurm": "submitit"}[args.launcher]
        if importlib.util.find_spec(module) is None:
            raise BadInput(f"--launcher {args.launcher} needs the {module} package: "
                           f"pip install -r requirements-dev.txt")
    sweep = Sweep(sweep_dir, script, args.python, fixed, grid, seeds)
    check_dir_names_unique(sweep)
    return sweep


def stop_on_sigterm(signum, frame) -> None:
    raise KeyboardInterrupt  # a scheduler's or `kill`'s SIGTERM stops the children like Ctrl-C does


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        sweep = make_sweep(args)
        manifest = merge_with_existing(sweep)
        if not (args.no_check_flags or args.collect_only):
            check_flags_known(sweep)
    except BadInput as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2

    runs = sweep.runs()
    pending = [run for run in runs if run.summary_path() is None]
    if args.print_only:
        for run in pending:
            print(sweep.shell_line(run))
        log(f"{len(pending)} commands printed; {len(runs) - len(pending)} runs already finished, left out")
        return 0

    sweep.sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep.sweep_dir / "sweep.json").write_text(json.dumps(manifest, indent=2) + "\n")
    failed: list[Run] = []
    if not args.collect_only:  # with nothing pending the launcher is not started (no Ray instance, no empty job array)
        where = {"local": f"{args.workers} worker{'s' * (args.workers > 1)}", "slurm": "Slurm",
                 "ray": f"Ray ({args.ray_address or f'a local instance of {args.workers} CPUs'})"}[args.launcher]
        if args.launcher == "slurm" and args.submitit_cluster == "local":
            where = "submitit's local executor"
        log(f"sweep {sweep.sweep_dir}: {len(runs)} runs, {len(runs) - len(pending)} already finished, "
            f"{len(pending)} to run on {where}")
        previous_handler = signal.signal(signal.SIGTERM, stop_on_sigterm)
        try:
            failed = run_all(sweep, pending, len(runs) - len(pending), args) if pending else []
        except KeyboardInterrupt:
            log("interrupted: rerun the same command to resume (finished runs are kept)")
            return 130
        finally:  # main() called from Python (the tests) leaves the caller's handler in place
            signal.signal(signal.SIGTERM, previous_handler)

    csv_path, rows, missing = collect(sweep.sweep_dir)
    log(f"results: {csv_path} ({rows} runs)")
    if missing and args.collect_only:
        log(f"warning: {len(missing)} runs have no summary.json yet, e.g. {missing[0].run_dir}")
    if failed:
        log(f"{len(failed)} of {len(pending)} runs FAILED:")
        for run in failed:
            log(f"  {run.run_dir / 'failure.txt'}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
