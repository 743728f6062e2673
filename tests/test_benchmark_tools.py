"""benchmark.tools (the sweep runner, plots, trajectories, adaptation curves) and the measurement scripts
with a command line test here (nav_optimal, noisy_optimum), on tiny inputs: a fake training script with
known numbers (resume, --print-only, CSV, failures, bad input, the plotted means and stds, the output
names) and one real sweep of ppo_single_task.py. Bad input is checked in-process through each tool's
main(); each tool family also has one case through its real `python -m` entry point."""

import contextlib
import csv
import importlib
import io
import json
import os
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

import nav_env
from benchmark import nav_optimal, noisy_optimum, profile_meta_iteration
from benchmark.tools import adaptation_curves, plots, trajectories
from benchmark.tools import run as sweep_runner

ROOT = pathlib.Path(__file__).resolve().parents[1]


def call_main(main, argv: list[str]) -> SimpleNamespace:
    """A tool's main(argv) in this process: its exit code (returned or raised), stdout and stderr."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = main(argv)
        except SystemExit as exit_:
            code = exit_.code
    return SimpleNamespace(returncode=0 if code is None else code, stdout=stdout.getvalue(), stderr=stderr.getvalue())


def run_module(module: str, *args, cwd=ROOT) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS` from the repository root: the entry point as a user runs it."""
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def assert_one_line_error(result, *named: str) -> None:
    """Bad input: exit code 2 and one line on stderr that names the bad value."""
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for text in named:
        assert text in result.stderr, result.stderr


# Stands in for a training script: takes --seed and two flags, appends one line per invocation to
# --count-file, fails on --fail-seed, exits 0 without a summary on --no-summary-seed, and otherwise writes
# runs/<name>/summary.json. It imports nothing heavy, so a run costs one Python start.
FAKE_SCRIPT = textwrap.dedent('''
    import argparse, json, os, sys, time
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--fail-seed", type=int, default=-1)
    parser.add_argument("--no-summary-seed", type=int, default=-1)
    parser.add_argument("--count-file", default="")
    args = parser.parse_args()
    if args.count_file:
        with open(args.count_file, "a") as f:
            f.write(f"{os.getcwd()}\\n")
    if args.seed == args.fail_seed:
        sys.exit(f"fake failure for seed {args.seed}")
    if args.seed == args.no_summary_seed:
        sys.exit(0)
    run_dir = f"runs/fake__{args.seed}__{time.time_ns()}"
    os.makedirs(run_dir)
    summary = {"args": vars(args), "score": args.scale * args.seed, "wall_time_s": 0.5 + args.seed,
               "omp_threads": os.environ.get("OMP_NUM_THREADS"), "reached": True,
               "by_quadrant": [args.scale * args.seed, 2 * args.scale * args.seed, None, 0],
               "difficulty_map": [[args.seed, 2 * args.seed], [0, None if args.seed < 3 else 1.5 * args.scale]]}
    with open(f"{run_dir}/summary.json", "w") as f:
        json.dump(summary, f)
''')


@pytest.fixture
def fake_script(tmp_path):
    path = tmp_path / "fake_train.py"
    path.write_text(FAKE_SCRIPT)
    return path


def run_sweep(*args, check_rc: int | None = 0, cli: bool = False):
    """The sweep runner on these arguments: in-process, or with cli=True through `python -m benchmark.tools.run`."""
    if cli:
        result = run_module("benchmark.tools.run", *args)
    else:
        result = call_main(sweep_runner.main, list(map(str, args)))
    if check_rc is not None:
        assert result.returncode == check_rc, result.stderr
    return result


def read_csv(path: pathlib.Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def invocations(count_file: pathlib.Path) -> list[str]:
    return count_file.read_text().splitlines() if count_file.exists() else []


def test_sweep_runs_every_grid_point_and_seed_in_its_own_directory_and_collects_a_csv(fake_script, tmp_path):
    sweep, count = tmp_path / "sweep", tmp_path / "count.txt"
    result = run_sweep(fake_script, "--grid", "scale=1,2.5", "--set", f"count-file={count}", "--seeds", 2,
                       "--workers", 2, "--out", sweep)
    assert "[4/4]" in result.stderr and "failed 0" in result.stderr
    assert sorted(invocations(count)) == sorted(str(sweep / f"scale={s}" / f"seed={k}") for s in ("1", "2.5") for k in (1, 2))
    rows = read_csv(sweep / "results.csv")
    assert [(row["run_dir"], row["scale"], row["seed"]) for row in rows] == [
        ("scale=1/seed=1", "1", "1"), ("scale=1/seed=2", "1", "2"), ("scale=2.5/seed=1", "2.5", "1"), ("scale=2.5/seed=2", "2.5", "2")]
    assert [float(row["score"]) for row in rows] == [1.0, 2.0, 2.5, 5.0]  # scale * seed: each run got its flags
    assert [row["omp_threads"] for row in rows] == ["1"] * 4
    assert list(rows[0])[:5] == ["run_dir", "scale", "seed", "score", "wall_time_s"]
    assert rows[3]["args.seed"] == "2" and rows[3]["args.scale"] == "2.5"  # nested args flattened after the scalars
    assert json.loads((sweep / "sweep.json").read_text())["grid"] == {"scale": ["1", "2.5"]}


def test_rerun_resumes_only_the_runs_without_summary(fake_script, tmp_path):
    sweep, count = tmp_path / "sweep", tmp_path / "count.txt"
    common = [fake_script, "--set", f"count-file={count}", "--seeds", 3, "--out", sweep]
    run_sweep(*common)
    assert len(invocations(count)) == 3
    # A crash: seed 2's summary is missing, its runs/ folder half-written.
    [summary] = (sweep / "seed=2").glob("runs/*/summary.json")
    summary.unlink()
    result = run_sweep(*common)
    assert invocations(count)[3:] == [str(sweep / "seed=2")]
    assert "3 runs, 2 already finished, 1 to run" in result.stderr
    assert len(list((sweep / "seed=2").glob("runs/*"))) == 1  # the crashed attempt's folder is gone
    run_sweep(*common, "--seeds", "2-4")  # extending: only seed 4 is new
    assert invocations(count)[4:] == [str(sweep / "seed=4")]
    assert [row["seed"] for row in read_csv(sweep / "results.csv")] == ["1", "2", "3", "4"]


def test_a_run_whose_summary_cannot_be_read_is_run_again(fake_script, tmp_path):
    sweep, count = tmp_path / "sweep", tmp_path / "count.txt"
    common = [fake_script, "--set", f"count-file={count}", "--seeds", 3, "--out", sweep]
    run_sweep(*common)
    for seed in (1, 3):  # killed while writing its summary
        [summary] = (sweep / f"seed={seed}").glob("runs/*/summary.json")
        summary.write_text(summary.read_text()[:10])
    result = run_sweep(*common)
    assert sorted(invocations(count)[3:]) == [str(sweep / "seed=1"), str(sweep / "seed=3")]
    assert "3 runs, 1 already finished, 2 to run" in result.stderr


def test_print_only_prints_self_contained_commands_and_runs_nothing(fake_script, tmp_path):
    sweep, count = tmp_path / "sweep", tmp_path / "count.txt"
    common = [fake_script, "--grid", "scale=1,3", "--set", f"count-file={count}", "--seeds", 2, "--out", sweep]
    lines = run_sweep(*common, "--print-only", cli=True).stdout.splitlines()  # the runner's `python -m` case
    assert len(lines) == 4 and all("OMP_NUM_THREADS=1" in line and "MKL_NUM_THREADS=1" in line for line in lines)
    assert not sweep.exists() and not count.exists()
    # A scheduler runs the lines from anywhere, with a bare environment; then --collect-only builds the CSV.
    for line in lines:
        subprocess.run(["bash", "-c", line], cwd="/", env={"PATH": os.environ["PATH"]}, check=True, timeout=60)
    assert sorted(invocations(count)) == sorted(str(sweep / f"scale={s}" / f"seed={k}") for s in "13" for k in (1, 2))
    run_sweep(*common, "--collect-only")
    rows = read_csv(sweep / "results.csv")
    assert [float(row["score"]) for row in rows] == [1.0, 2.0, 3.0, 6.0]
    assert [row["omp_threads"] for row in rows] == ["1"] * 4
    assert run_sweep(*common, "--print-only").stdout == ""  # everything finished: nothing left to print


def test_a_failing_run_is_logged_the_others_finish_and_the_exit_code_is_1(fake_script, tmp_path):
    sweep = tmp_path / "sweep"
    result = run_sweep(fake_script, "--set", "fail-seed=2", "--set", "no-summary-seed=3", "--seeds", 4, "--workers", 2,
                       "--out", sweep, check_rc=1)
    assert "failed 2" in result.stderr and "2 of 4 runs FAILED" in result.stderr
    failure = (sweep / "seed=2" / "failure.txt").read_text()
    assert "exit code 1" in failure and "fake failure for seed 2" in failure
    assert "no runs/*/summary.json" in (sweep / "seed=3" / "failure.txt").read_text()
    assert [row["seed"] for row in read_csv(sweep / "results.csv")] == ["1", "4"]
    assert not (sweep / "seed=1" / "failure.txt").exists()


@pytest.mark.parametrize(
    "args, named",
    [
        (["no_such_script.py"], "no_such_script.py"),
        (["FAKE", "--grid", "scale"], "'scale'"),
        (["FAKE", "--grid", "scale="], "'scale='"),
        (["FAKE", "--grid", "scale=1,,2"], "'scale=1,,2'"),
        (["FAKE", "--grid", "=1,2"], "'=1,2'"),
        (["FAKE", "--workers", "0"], "'0'"),
        (["FAKE", "--workers", "two"], "'two'"),
        (["FAKE", "--seeds", "0"], "'0'"),
        (["FAKE", "--grid", "sclae=1,2"], "--sclae"),  # a flag the script does not have
        (["FAKE", "--set", "seed=3"], "seed=3"),
        (["FAKE", "--ray-address", "auto"], "--ray-address 'auto' is for --launcher ray"),
        (["FAKE", "--launcher", "ray", "--slurm-partition", "gpu"], "--slurm-partition is for --launcher slurm"),
        (["FAKE", "--launcher", "kubernetes"], "'kubernetes'"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(fake_script, tmp_path, args, named):
    sweep = tmp_path / "sweep"
    args = [str(fake_script) if arg == "FAKE" else arg for arg in args]
    assert_one_line_error(run_sweep(*args, "--out", sweep, check_rc=None), named)
    assert not sweep.exists()


def test_changing_the_fixed_flags_of_an_existing_sweep_is_refused(fake_script, tmp_path):
    sweep = tmp_path / "sweep"
    run_sweep(fake_script, "--set", "scale=2", "--out", sweep)
    result = run_sweep(fake_script, "--set", "scale=3", "--out", sweep, check_rc=None)
    assert_one_line_error(result, "fixed_flags", "'scale', '3'")
    assert [row["score"] for row in read_csv(sweep / "results.csv")] == ["2.0"]


@pytest.fixture(scope="module")
def fake_event_sweep(tmp_path_factory):
    """scale in {1, 2} x seeds 1..3, made once for the plots tests, with TensorBoard scalars
    charts/score = scale * (seed**2 + step) at steps 1..8 beside each run's summary.json (written here, in
    this process, where torch is already imported, rather than by each fake run)."""
    from torch.utils.tensorboard import SummaryWriter

    tmp = tmp_path_factory.mktemp("events")
    script = tmp / "fake_train.py"
    script.write_text(FAKE_SCRIPT)
    run_sweep(script, "--grid", "scale=1,2", "--seeds", 3, "--workers", 2, "--out", tmp / "fake")
    for summary_path in (tmp / "fake").glob("scale=*/seed=*/runs/*/summary.json"):
        summary = json.loads(summary_path.read_text())
        writer = SummaryWriter(summary_path.parent)
        for step in range(1, 9):
            writer.add_scalar("charts/score", summary["args"]["scale"] * (summary["args"]["seed"] ** 2 + step), step)
        writer.close()
    return tmp / "fake"


def mean_std_cells(markdown: str) -> list[list[tuple[float, float]]]:
    """The `a ± b` cells of each table row, as numbers."""
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and "±" in line]
    return [[(float(a), float(b)) for a, b in re.findall(r"(-?[\d.]+) ± (-?[\d.]+)", row)] for row in rows]


def assert_png(path: pathlib.Path) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width >= 800 and image.height >= 500
        assert len(np.unique(np.asarray(image.convert("L")))) > 10  # something was drawn


def test_windows_table_matches_hand_computed_means_and_stds(fake_event_sweep, tmp_path):
    assert plots.main(["windows", str(fake_event_sweep), "--tag", "charts/score", "--window", "4", "--num-windows", "2",
                       "--xlabel", "iteration", "--out", str(tmp_path / "w.png"), "--table-out", str(tmp_path / "w.md")]) == 0
    assert_png(tmp_path / "w.png")
    markdown = (tmp_path / "w.md").read_text()
    assert "iteration 1–4" in markdown and "iteration 5–8" in markdown
    # score = scale * (seed^2 + step): a seed's mean over steps 1..4 is scale * (seed^2 + 2.5), over 5..8 scale * (seed^2 + 6.5)
    expected = []
    for scale in (1, 2):
        expected.append([])
        for middle in (2.5, 6.5):
            per_seed = [scale * (seed**2 + middle) for seed in (1, 2, 3)]
            expected[-1].append((statistics.mean(per_seed), statistics.stdev(per_seed)))
    assert expected[0][0] == pytest.approx((14 / 3 + 2.5, 4.0415), abs=1e-4)  # the hand computation itself
    cells = mean_std_cells(markdown)
    assert len(cells) == 2
    for row, expected_row in zip(cells, expected):
        for (mean, std), (expected_mean, expected_std) in zip(row, expected_row, strict=True):
            assert mean == pytest.approx(expected_mean, rel=1e-3) and std == pytest.approx(expected_std, rel=1e-3)
    # pooled: std of the 12 logged values of a window, seeds together
    plots.main(["windows", str(fake_event_sweep), "--tag", "charts/score", "--window", "4", "--num-windows", "1",
                "--spread", "pooled", "--where", "scale=1", "--out", str(tmp_path / "p.png"), "--table-out", str(tmp_path / "p.md")])
    pooled = [seed**2 + step for seed in (1, 2, 3) for step in (1, 2, 3, 4)]
    [[(mean, std)]] = mean_std_cells((tmp_path / "p.md").read_text())
    assert (mean, std) == pytest.approx((statistics.mean(pooled), statistics.stdev(pooled)), rel=1e-3)


def test_table_and_bars_of_summary_columns(fake_event_sweep, tmp_path):
    assert plots.main(["table", str(fake_event_sweep), "--columns", "score", "wall_time_s", "--out", str(tmp_path / "t.md")]) == 0
    markdown = (tmp_path / "t.md").read_text()
    assert "| scale | n | score | wall_time_s |" in markdown
    # score = scale * seed, wall_time_s = 0.5 + seed over seeds 1..3: stdev([1, 2, 3]) = 1
    assert mean_std_cells(markdown) == [[(2.0, 1.0), (2.5, 1.0)], [(4.0, 2.0), (2.5, 1.0)]]
    assert plots.main(["bars", str(fake_event_sweep), "--column", "score", "--out", str(tmp_path / "b.png"),
                       "--table-out", str(tmp_path / "b.md")]) == 0
    assert_png(tmp_path / "b.png")
    assert mean_std_cells((tmp_path / "b.md").read_text()) == [[(2.0, 1.0)], [(4.0, 2.0)]]
    # two sweeps (say MAML and FOMAML) are told apart by the `sweep` column
    shutil.copytree(fake_event_sweep, tmp_path / "copy")
    assert plots.main(["table", str(fake_event_sweep), str(tmp_path / "copy"), "--where", "scale=2", "--columns", "score",
                       "--out", str(tmp_path / "two.md")]) == 0
    two = (tmp_path / "two.md").read_text()
    assert "| sweep | n | score |" in two and "| fake | 3 | 4.000 ± 2.000 |" in two and "| copy | 3 | 4.000 ± 2.000 |" in two
    assert_one_line_error(call_main(plots.main, ["table", str(fake_event_sweep), "--where", "scael=2", "--columns", "score",
                                                 "--out", str(tmp_path / "x.md")]), "scael", "scale")
    assert not (tmp_path / "x.md").exists()


def test_table_of_a_list_element_and_the_map_of_a_per_bin_field(fake_event_sweep, tmp_path):
    # by_quadrant[1] = 2 * scale * seed over seeds 1..3: mean 4 * scale, stdev 2 * scale
    assert plots.main(["table", str(fake_event_sweep), "--columns", "by_quadrant[1]", "--out", str(tmp_path / "q.md")]) == 0
    assert mean_std_cells((tmp_path / "q.md").read_text()) == [[(4.0, 2.0)], [(8.0, 4.0)]]
    assert plots.main(["table", str(fake_event_sweep), "--columns", "by_quadrant[1]", "score", "--labels", "Q2", "the score",
                       "--out", str(tmp_path / "l.md")]) == 0
    assert "| scale | n | Q2 | the score |" in (tmp_path / "l.md").read_text()
    assert_one_line_error(call_main(plots.main, ["table", str(fake_event_sweep), "--columns", "score", "--labels", "a", "b",
                                                 "--out", str(tmp_path / "b.md")]), "2 names for 1 --columns")
    assert_one_line_error(call_main(plots.main, ["table", str(fake_event_sweep), "--columns", "by_quadrant[2]",
                                                 "--out", str(tmp_path / "n.md")]), "'by_quadrant[2]'")
    assert not (tmp_path / "n.md").exists()  # a null element is not a number: one line, exit 2, nothing written
    runs, _ = plots.load_runs([fake_event_sweep])
    scale_1 = [run for run in runs if run.values["scale"] == "1"]
    # [[seed, 2 seed], [0, null except seed 3: 1.5 * scale]]: a bin's mean is over the runs that have a value
    np.testing.assert_allclose(plots.mean_map(scale_1, "difficulty_map"), [[2.0, 4.0], [0.0, 1.5]])
    assert plots.main(["map", str(fake_event_sweep), "--out", str(tmp_path / "m.png")]) == 0
    with Image.open(tmp_path / "m.png") as image:
        assert image.format == "PNG" and len(np.unique(np.asarray(image.convert("L")))) > 10
    assert_one_line_error(call_main(plots.main, ["map", str(fake_event_sweep), "--column", "score",
                                                 "--out", str(tmp_path / "x.png")]), "no 'score' map")
    assert not (tmp_path / "x.png").exists()


def test_default_output_names_are_the_sweeps_and_the_subcommand(fake_event_sweep, tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "DOCS_DIR", tmp_path / "docs")
    monkeypatch.setattr(plots, "TABLES_DIR", tmp_path / "docs" / "results")
    shutil.copytree(fake_event_sweep, tmp_path / "other")
    sweeps = [str(fake_event_sweep), str(tmp_path / "other")]
    assert plots.main(["table", *sweeps, "--columns", "score", "wall_time_s"]) == 0
    assert plots.main(["curves", str(fake_event_sweep), "--tag", "charts/score"]) == 0
    assert plots.main(["windows", str(fake_event_sweep), "--tag", "charts/score", "--window", "4", "--num-windows", "2"]) == 0
    # an explicit --out names the windows table too, unless --table-out does
    assert plots.main(["windows", str(fake_event_sweep), "--tag", "charts/score", "--window", "4", "--num-windows", "2",
                       "--out", str(tmp_path / "docs" / "chosen.png")]) == 0
    written = sorted(str(path.relative_to(tmp_path)) for path in tmp_path.glob("docs/**/*.*"))
    assert written == ["docs/chosen.png", "docs/fake_curves.png", "docs/fake_windows.png", "docs/results/chosen.md",
                       "docs/results/fake+other_table.md", "docs/results/fake_windows.md"]
    # the footer names the tool's entry point and the command that made the table
    assert "Made by `python -m benchmark.tools.plots table " in (tmp_path / "docs/results/fake+other_table.md").read_text()


def test_plots_cli_bad_flag_is_one_line_exit_2(fake_event_sweep, tmp_path):
    out = tmp_path / "x.md"
    result = run_module("benchmark.tools.plots", "table", fake_event_sweep, "--columns", "score", "--smooth", "3",
                        "--out", out)
    assert_one_line_error(result, "--smooth")
    assert result.stderr.startswith("python -m benchmark.tools.plots: error:") and not out.exists()


def test_noisy_optimum_reaches_every_reachable_goal_without_noise_and_fewer_with_it(tmp_path):
    out = tmp_path / "noisy.md"
    result = call_main(noisy_optimum.main, ["--num-goals", "8", "--epsilons", "0", "1", "--repeats", "8", "--out", str(out)])
    assert result.returncode == 0, result.stderr
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")[1] for line in out.read_text().splitlines()
            if line.startswith("| ") and "%" in line}
    assert float(rows["0%"]) == 1.0  # the exact optimal policy reaches every goal it is said to reach
    assert float(rows["100%"]) < 0.5  # uniformly random actions rarely end within 0.14 of a goal
    bad = run_module("benchmark.noisy_optimum", "--epsilons", "1.5", "--out", tmp_path / "bad.md")
    assert_one_line_error(bad, "1.5")
    assert not (tmp_path / "bad.md").exists()


def test_curves_average_the_seeds_step_by_step(fake_event_sweep, tmp_path):
    runs, grid = plots.load_runs([fake_event_sweep])
    [(values, members)] = plots.group_runs(plots.select(runs, {"scale": ["2"]}), ["scale"], grid)
    steps, mean, std = plots.mean_std_curve([plots.read_scalar(run, "charts/score") for run in members])
    assert values == ("2",) and steps.tolist() == list(range(1, 9))
    assert mean.tolist() == pytest.approx([2 * (14 / 3 + step) for step in range(1, 9)])
    assert std.tolist() == pytest.approx([2 * statistics.stdev([1, 4, 9])] * 8)
    assert plots.main(["curves", str(fake_event_sweep), "--tag", "charts/score", "--out", str(tmp_path / "c.png")]) == 0
    assert_png(tmp_path / "c.png")
    assert_one_line_error(call_main(plots.main, ["curves", str(fake_event_sweep), "--tag", "charts/nope",
                                                 "--out", str(tmp_path / "x.png")]), "'charts/nope'", "charts/score")
    assert not (tmp_path / "x.png").exists()


def test_real_ppo_sweep_end_to_end(tmp_path):
    sweep = tmp_path / "ppo"
    result = run_sweep("ppo_single_task.py", "--grid", "obstacles=easy", "--set", "total-timesteps=2400",
                       "--set", "num-envs=8", "--set", "num-steps=150",
                       "--seeds", 2, "--workers", 2, "--out", sweep)
    assert "[2/2]" in result.stderr
    rows = read_csv(sweep / "results.csv")
    # the grid value and the seed reached the script: its own record of its Args says so
    assert [(row["obstacles"], row["args.obstacles"], row["seed"], row["args.seed"]) for row in rows] == [
        ("easy", "easy", "1", "1"), ("easy", "easy", "2", "2")]  # easy: not the default (medium)
    assert all(float(row["final_distance"]) >= 0 and float(row["sps"]) > 0 and float(row["wall_time_s"]) > 0 for row in rows)
    assert {row["env_steps"] for row in rows} == {"2400"}
    assert plots.main(["curves", str(sweep), "--tag", "charts/episodic_return", "--out", str(tmp_path / "c.png")]) == 0
    assert_png(tmp_path / "c.png")
    assert plots.main(["table", str(sweep), "--columns", "final_distance", "--out", str(tmp_path / "t.md")]) == 0
    [[(mean, std)]] = mean_std_cells((tmp_path / "t.md").read_text())
    distances = [float(row["final_distance"]) for row in rows]
    assert mean == pytest.approx(statistics.mean(distances), abs=6e-3) and std == pytest.approx(statistics.stdev(distances), abs=6e-3)


@pytest.mark.parametrize("launcher", [
    ["--launcher", "ray", "--workers", "2"],
    ["--launcher", "slurm", "--submitit-cluster", "local"],
])
def test_ray_and_submitit_launchers_give_the_local_results_csv(fake_script, tmp_path, launcher):
    pytest.importorskip({"ray": "ray", "slurm": "submitit"}[launcher[1]],
                        reason="the launcher's package is not installed (pip install -r requirements-dev.txt)")
    sweep = [fake_script, "--grid", "scale=1,2.5", "--seeds", 2]
    run_sweep(*sweep, "--workers", 2, "--out", tmp_path / "local")
    result = run_sweep(*sweep, *launcher, "--out", tmp_path / "other", cli=True)  # Ray and submitit stay out of this process
    assert "[4/4]" in result.stderr
    expected = read_csv(tmp_path / "local" / "results.csv")
    assert [float(row["score"]) for row in expected] == [1.0, 2.0, 2.5, 5.0]  # scale * seed
    assert read_csv(tmp_path / "other" / "results.csv") == expected
    again = run_sweep(*sweep, *launcher, "--out", tmp_path / "other", cli=True)  # resuming skips the finished runs
    assert "4 already finished, 0 to run" in again.stderr


def write_summary(folder: pathlib.Path, **lists) -> None:
    (folder / "runs" / "r").mkdir(parents=True)
    (folder / "runs" / "r" / "summary.json").write_text(json.dumps(lists))


def test_adaptation_curves_tabulate_each_initialisations_lists(tmp_path):
    write_summary(tmp_path / "a", score_after_steps=[10.0, 12.5, 20.0], score_sem_after_steps=[1.0, 1.5, 2.0])
    write_summary(tmp_path / "b", score_after_steps=[3.0, 4.0, 5.25], score_sem_after_steps=[0.5, 0.5, 0.25])
    out, table = tmp_path / "curves.png", tmp_path / "curves.md"
    result = run_module("benchmark.tools.adaptation_curves", "--measure", "score", "--out", out, "--table-out", table,
                        f"meta={tmp_path / 'a'}", f"random={tmp_path / 'b'}")
    assert result.returncode == 0, result.stderr
    rows = [line for line in table.read_text().splitlines() if line.startswith("| meta") or line.startswith("| random")]
    assert rows == ["| meta | 10 ± 1 | 12.5 ± 1.5 | 20 ± 2 |", "| random | 3 ± 0.5 | 4 ± 0.5 | 5.25 ± 0.25 |"]
    assert "Made by `python -m benchmark.tools.adaptation_curves --measure score " in table.read_text()
    assert_png(out)


@pytest.mark.parametrize("args, message", [
    (["--measure", "distance", "x=FOLDER"], "has no distance_after_steps; --measure allowed for it: score"),
    (["--measure", "score", "FOLDER"], "is not LABEL=DIR"),
    (["--measure", "score", "x=/nonexistent"], "no runs/*/summary.json under /nonexistent"),
    (["--measure", "regret", "x=FOLDER"], "'regret'"),
])
def test_adaptation_curves_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, message):
    write_summary(tmp_path / "a", score_after_steps=[1.0, 2.0])
    args = [a.replace("FOLDER", str(tmp_path / "a")) for a in args]
    out = tmp_path / "curves.png"
    result = call_main(adaptation_curves.main, [*args, "--out", str(out), "--table-out", str(tmp_path / "t.md")])
    assert_one_line_error(result, message)
    assert not out.exists() and not (tmp_path / "t.md").exists()


def test_nav_optimal_replays_its_optimal_policy_to_the_optimal_return():
    """The dynamic programme's optimal return is what its policy collects when replayed step by step in the env."""
    result = call_main(nav_optimal.main, ["--goal", "4.5", "1.0"])
    assert result.returncode == 0, result.stderr
    best = float(re.search(r"optimal return (-?[\d.]+), an optimal policy reaches the goal", result.stdout)[1])
    replay = re.search(r"replayed in the env: return (-?[\d.]+), final distance ([\d.]+), reaches the goal after (\d+) steps",
                       result.stdout)
    assert replay, result.stdout
    assert float(replay[1]) == pytest.approx(best, abs=0.05)
    assert float(replay[2]) <= nav_env.GOAL_RADIUS + 0.005 and int(replay[3]) < nav_env.MAX_EPISODE_STEPS
    # a straight line from the start (9.9, 9.9) to (4.5, 1.0) takes at least max(|dx|, |dy|) / 0.1 moves
    assert int(replay[3]) >= round((9.9 - 1.0) / 0.1) - 2
    bad = run_module("benchmark.nav_optimal", "--collision", "original")
    assert_one_line_error(bad, "original")
    assert bad.stderr.startswith("python -m benchmark.nav_optimal: error: ")


def test_trajectories_of_chosen_goals_from_a_saved_model(tmp_path):
    train = subprocess.run([sys.executable, str(ROOT / "maml_vpg.py"), "--num-iterations", "1", "--meta-batch-size", "2",
                            "--episodes-per-task", "2", "--num-test-tasks", "2", "--save-model"],
                           cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert train.returncode == 0, train.stderr
    out = tmp_path / "behind.png"
    result = run_module("benchmark.tools.trajectories", "--goals", "4.5,1.0", "2.0,3.5", "--out", out, tmp_path)
    assert result.returncode == 0, result.stderr
    with Image.open(out) as image:  # 2 panels of 320 pixels; a label above, the legend and the command below
        assert image.width == 2 * 320 and image.height > 320 + 18
    for bad in ("4.5", "4.5,11", "x,1"):
        failed = call_main(trajectories.main, ["--goals", bad, "--out", str(tmp_path / "x.png"), str(tmp_path)])
        assert_one_line_error(failed, bad)
        assert not (tmp_path / "x.png").exists()
    failed = call_main(trajectories.main, ["--out", str(tmp_path / "x.png"), str(tmp_path / "no_run")])
    assert_one_line_error(failed, "no runs/*/summary.json under")


@pytest.mark.parametrize("script", ["maml_vpg.py", "fomaml_vpg.py"])
def test_profile_meta_iteration_times_every_phase_of_the_scripts_own_functions(script, monkeypatch, capsys):
    """The profiler runs each script's own sample_and_adapt and outer_loss as its loop does: every phase it wraps is
    timed, and the phases with the unaccounted rest add up to the whole iteration."""
    monkeypatch.setattr(sys, "argv", ["profile_meta_iteration", "--script", script, "--iterations", "1"])
    profile_meta_iteration.main()
    out = capsys.readouterr().out
    rows = {phase: float(ms) for phase, ms in re.findall(r"^\| ([^|]+?) \| (-?[\d.]+) \| -?\d+% \|$", out, flags=re.M)}
    total = float(re.search(r"([\d.]+) ms per iteration", out).group(1))
    assert set(profile_meta_iteration.PHASES) <= set(rows), rows
    for phase in ("policy forward", "env step", "meta-gradient", "inner updates"):
        assert rows[phase] > 0, (phase, rows)
    assert sum(rows.values()) == pytest.approx(total, abs=0.1 * len(rows))  # each row is rounded to 0.1 ms


@pytest.mark.parametrize("name", ["alchemy_reference", "alchemy_speed", "device_speed", "env_figure", "env_speed",
                                  "maml_speed", "nav_optimal", "ppo_nav", "profile_meta_iteration", "threads"])
def test_every_measurement_script_rejects_an_unknown_flag_in_one_line(name, monkeypatch, capsys):
    module = importlib.import_module(f"benchmark.{name}")
    monkeypatch.setattr(sys, "argv", [name, "--no-such-flag"])
    with pytest.raises(SystemExit) as exit:
        module.main()
    assert exit.value.code == 2
    assert capsys.readouterr().err == (f"python -m benchmark.{name}: error: unrecognized arguments: --no-such-flag "
                                       f"(see --help)\n")
