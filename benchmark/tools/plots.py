"""Figures (PNG, under docs/) and Markdown tables (under docs/results/) from sweeps made by
benchmark.tools.run. Run it from the repository root:

    python -m benchmark.tools.plots curves benchmark/sweeps/inner_steps --tag charts/post_adaptation_distance \\
        --where inner-steps=1,3,4,5 --xlabel iteration
    python -m benchmark.tools.plots windows benchmark/sweeps/inner_steps --tag charts/post_adaptation_distance \\
        --window 100 --num-windows 4 --xlabel iteration
    python -m benchmark.tools.plots table benchmark/sweeps/difficulty --columns post_adaptation_distance adaptation_gain
    python -m benchmark.tools.plots bars benchmark/sweeps/maml benchmark/sweeps/fomaml --column median_iteration_time_s

Subcommands: `curves` (a TensorBoard scalar against its step, mean and std over seeds, one line per
group), `windows` (a scalar averaged over consecutive windows of steps, per group: the inner-steps
paper's Figure 2, as bars with error bars and a table), `table` (summary.json columns per group) and
`bars` (one summary.json column per group, seeds as dots). Runs are grouped by their grid values;
with several sweeps (e.g. MAML and FOMAML), by sweep too. Unless --group-by says otherwise, the keys
that take one value only are left out of the labels. Spread is the sample standard deviation over
seeds (n-1 in the denominator); with one seed there is none.

Output names: --out (and, for windows, --table-out) name the files; without them a figure is
docs/<sweeps>_<subcommand>.png and a table docs/results/<sweeps>_<subcommand>.md, where <sweeps> are the
sweep directories' names joined by `+` (e.g. docs/results/maml+fomaml_table.md). windows writes its table
beside its figure's name: --out docs/inner_steps_windows.png gives docs/results/inner_steps_windows.md.

Each piece is a function (load_runs, select, group_runs, read_scalar, mean_std_curve, window_stats,
column_stats, markdown_table, plot_curves, plot_windows, plot_bars) for scripts that need another
figure; main() only wires them to the command line.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import re
import shlex
import sys
import textwrap
from dataclasses import dataclass
from functools import lru_cache

import matplotlib
import matplotlib.patches

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tensorboard.backend.event_processing import event_accumulator  # noqa: E402

import nav_env  # noqa: E402  (the obstacle segments drawn on the difficulty maps)
from benchmark.tools import run as sweep_runner  # noqa: E402  (the sweep layout is defined there only)

ROOT = sweep_runner.ROOT
PROG = "python -m benchmark.tools.plots"  # how error lines, --help and the tables' footers name this tool
DOCS_DIR = ROOT / "docs"
TABLES_DIR = DOCS_DIR / "results"
SWEEP_KEY = "sweep"  # pseudo grid key: the sweep directory's name, for comparing sweeps
FIGURE_SIZE = (7.5, 4.5)
DPI = 150


class PlotError(Exception):
    """Bad input or data that cannot make the requested figure: one line on stderr, exit code 2."""


@dataclass
class RunData:
    """A finished run: its sweep, grid values (including `sweep`), seed and summary.json."""

    sweep_dir: pathlib.Path
    values: dict[str, str]
    seed: int
    summary_path: pathlib.Path
    summary: dict

    @property
    def log_dir(self) -> pathlib.Path:
        """The TensorBoard log directory: the one that holds summary.json (not a crashed attempt's)."""
        return self.summary_path.parent


# ---------------------------------------------------------------------------------------------------
# Loading and grouping


def load_runs(sweep_dirs: list[pathlib.Path]) -> tuple[list[RunData], dict[str, list[str]]]:
    """Every finished run of the sweeps, and the grid (key -> values in sweep order, `sweep` first)."""
    runs: list[RunData] = []
    grid: dict[str, list[str]] = {SWEEP_KEY: []}
    for sweep_dir in sweep_dirs:
        if not (sweep_dir / "sweep.json").is_file():
            raise PlotError(f"{sweep_dir}: no sweep.json; give a sweep directory made by benchmark.tools.run")
        manifest, planned = sweep_runner.load_sweep_runs(sweep_dir)
        grid[SWEEP_KEY].append(sweep_dir.name)
        for key, values in manifest["grid"].items():
            grid.setdefault(key, [])
            grid[key] += [value for value in values if value not in grid[key]]
        for run in planned:
            path = run.summary_path()
            if path is not None:
                values = {SWEEP_KEY: sweep_dir.name, **dict(run.values)}
                runs.append(RunData(sweep_dir, values, run.seed, path, json.loads(path.read_text())))
    if not runs:
        raise PlotError(f"no finished runs (runs/*/summary.json) in {', '.join(map(str, sweep_dirs))}")
    return runs, grid


def select(runs: list[RunData], where: dict[str, list[str]]) -> list[RunData]:
    """The runs whose grid value for each key in `where` is one of the listed values."""
    chosen = [run for run in runs if all(run.values.get(key) in allowed for key, allowed in where.items())]
    if not chosen:
        raise PlotError(f"no finished run matches --where {where}")
    return chosen


def default_group_keys(runs: list[RunData], grid: dict[str, list[str]]) -> list[str]:
    """The grid keys (and `sweep`) that take more than one value among these runs."""
    return [key for key in grid if len({run.values.get(key) for run in runs}) > 1]


def group_runs(runs: list[RunData], keys: list[str], grid: dict[str, list[str]]) -> list[tuple[tuple[str, ...], list[RunData]]]:
    """[(values of `keys`, runs)], in the grid's order; runs that differ in other keys are pooled."""
    groups: dict[tuple[str, ...], list[RunData]] = {}
    for run in runs:
        groups.setdefault(tuple(run.values.get(key, "") for key in keys), []).append(run)

    def grid_position(group_values: tuple[str, ...]) -> tuple[int, ...]:
        return tuple(grid[key].index(value) if value in grid.get(key, []) else -1 for key, value in zip(keys, group_values))

    return [(values, groups[values]) for values in sorted(groups, key=grid_position)]


def group_label(keys: list[str], values: tuple[str, ...]) -> str:
    return ", ".join(values) if keys else "all runs"


def legend_title(keys: list[str]) -> str | None:
    return ", ".join(keys) if keys else None


# ---------------------------------------------------------------------------------------------------
# Numbers


@lru_cache(maxsize=None)
def _scalars(log_dir: pathlib.Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    accumulator = event_accumulator.EventAccumulator(
        str(log_dir), size_guidance={event_accumulator.SCALARS: 0, event_accumulator.IMAGES: 1, event_accumulator.TENSORS: 1}
    )
    accumulator.Reload()
    series = {}
    for tag in accumulator.Tags()["scalars"]:
        by_step = {event.step: event.value for event in accumulator.Scalars(tag)}  # a repeated step: last wins
        steps = np.array(sorted(by_step), dtype=np.int64)
        series[tag] = (steps, np.array([by_step[step] for step in steps], dtype=np.float64))
    return series


def read_scalar(run: RunData, tag: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one TensorBoard scalar of one run, sorted by step."""
    series = _scalars(run.log_dir)
    if tag not in series:
        raise PlotError(f"tag {tag!r} is not in {run.log_dir}; its scalar tags: {', '.join(sorted(series)) or 'none'}")
    return series[tag]


def mean_std(samples) -> tuple[float, float, int]:
    """(mean, sample std with n-1, n); the std is nan for a single sample."""
    samples = np.asarray(samples, dtype=np.float64)
    std = float(np.std(samples, ddof=1)) if samples.size > 1 else math.nan
    return float(np.mean(samples)), std, int(samples.size)


def smooth(values: np.ndarray, width: int) -> np.ndarray:
    """Trailing moving average over `width` points (fewer at the start)."""
    if width <= 1:
        return values
    sums = np.cumsum(np.insert(values, 0, 0.0))
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(0, ends - width)
    return (sums[ends] - sums[starts]) / (ends - starts)


def mean_std_curve(series: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean, std) over runs. Runs that logged the same steps are averaged step by step;
    otherwise each is linearly interpolated onto the union of steps within the range they all cover."""
    if all(np.array_equal(series[0][0], steps) for steps, _ in series):
        steps = series[0][0]
        stacked = np.stack([values for _, values in series])
    else:
        low, high = max(steps[0] for steps, _ in series), min(steps[-1] for steps, _ in series)
        steps = np.unique(np.concatenate([s[(s >= low) & (s <= high)] for s, _ in series]))
        if steps.size == 0:
            raise PlotError("the runs' logged steps do not overlap")
        stacked = np.stack([np.interp(steps, s, v) for s, v in series])
    std = stacked.std(axis=0, ddof=1) if len(series) > 1 else np.full(steps.shape, math.nan)
    return steps, stacked.mean(axis=0), std


def window_bounds(first_step: int, window: int, num_windows: int) -> list[tuple[int, int]]:
    """[(first, last)] steps of each window, inclusive."""
    return [(first_step + k * window, first_step + (k + 1) * window - 1) for k in range(num_windows)]


def window_stats(
    series: list[tuple[np.ndarray, np.ndarray]], bounds: list[tuple[int, int]], spread: str = "seeds"
) -> list[tuple[float, float, int]]:
    """(mean, std, n) per window. spread="seeds": each run's mean over the window, then mean and std of
    those over runs (n = runs); spread="pooled": mean and std of every logged value in the window of
    every run (n = values)."""
    stats = []
    for first, last in bounds:
        per_run = []
        for steps, values in series:
            inside = values[(steps >= first) & (steps <= last)]
            if inside.size == 0:
                raise PlotError(f"a run logged nothing in steps {first}..{last} (it logged {steps[0]}..{steps[-1]})")
            per_run.append(inside)
        samples = [chunk.mean() for chunk in per_run] if spread == "seeds" else np.concatenate(per_run)
        stats.append(mean_std(samples))
    return stats


def column_stats(runs: list[RunData], column: str) -> tuple[float, float, int]:
    """(mean, std, n) of a numeric summary.json field over runs (`args.x` reaches into `args`, `key[i]` takes
    element i of a list field such as `post_adaptation_success_rate_by_quadrant[2]`)."""
    samples = []
    indexed = re.fullmatch(r"(.+)\[(\d+)\]", column)  # `key[i]`: element i of a list field
    for run in runs:
        value = sweep_runner.flatten(run.summary).get(indexed.group(1) if indexed else column)
        if indexed and isinstance(value, str) and value.startswith("["):
            value = json.loads(value)  # flatten keeps lists as JSON text, as results.csv does
        if indexed and isinstance(value, list):
            value = value[int(indexed.group(2))] if int(indexed.group(2)) < len(value) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            available = [k for k, v in sweep_runner.flatten(run.summary).items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
            raise PlotError(f"column {column!r} is not a number in {run.summary_path}; numeric fields: {', '.join(available)}")
        samples.append(value)
    return mean_std(samples)


def format_number(value: float, decimals: int) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.{decimals}f}"


def format_mean_std(mean: float, std: float, significant: int = 4) -> str:
    """`mean ± std` with `significant` digits in the mean and the std to the same decimal place."""
    if not math.isfinite(mean):
        return "n/a"
    magnitude = math.floor(math.log10(abs(mean))) if mean != 0 else 0
    decimals = min(max(0, significant - 1 - magnitude), 8)
    text = format_number(mean, decimals)
    return text if not math.isfinite(std) else f"{text} ± {format_number(std, decimals)}"


def markdown_table(header: list[str], rows: list[list[str]], title: str | None = None, caption: str | None = None) -> str:
    right = ["---:" if any(re.match(r"^-?[\d.]", row[i]) for row in rows) else "---" for i in range(len(header))]
    lines = [f"**{title}**", ""] if title else []
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join(right) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    if caption:
        lines += ["", f"*{caption}*"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------
# Figures


def new_axes(title: str, xlabel: str, ylabel: str):
    fig, ax = plt.subplots(figsize=FIGURE_SIZE, layout="constrained")
    ax.set_title(textwrap.fill(title, 80))  # long titles wrap instead of running off the figure
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return fig, ax


def set_group_ticks(ax, x: np.ndarray, labels: list[str]) -> None:
    """Group names under the bars, slanted when they would run into each other."""
    crowded = sum(len(label) for label in labels) > 70
    ax.set_xticks(x, labels, rotation=25 if crowded else 0, ha="right" if crowded else "center")


def plot_curves(curves: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]], title: str, xlabel: str, ylabel: str,
                legend: str | None = None):
    """[(label, steps, mean, std)] as lines with a shaded ±std band."""
    fig, ax = new_axes(title, xlabel, ylabel)
    for label, steps, mean, std in curves:
        (line,) = ax.plot(steps, mean, label=label, linewidth=1.6)
        if np.isfinite(std).any():
            ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.legend(title=legend, fontsize="small")
    return fig


def plot_windows(labels: list[str], window_names: list[str], stats: list[list[tuple[float, float, int]]], title: str,
                 ylabel: str, xlabel: str, legend: str | None = None):
    """Grouped bars: one cluster per group (x), one bar per window, ±std error bars."""
    fig, ax = new_axes(title, xlabel, ylabel)
    x = np.arange(len(labels))
    width = 0.8 / len(window_names)
    colors = plt.get_cmap("viridis")(np.linspace(0.15, 0.85, len(window_names)))
    for k, (name, color) in enumerate(zip(window_names, colors)):
        means = [group[k][0] for group in stats]
        stds = [group[k][1] for group in stats]
        ax.bar(x + (k - (len(window_names) - 1) / 2) * width, means, width, yerr=np.nan_to_num(stds), capsize=3,
               label=name, color=color)
    set_group_ticks(ax, x, labels)
    ax.legend(title=legend, fontsize="small")
    ax.grid(alpha=0.3, axis="y")
    ax.grid(False, axis="x")
    return fig


def plot_bars(labels: list[str], samples: list[list[float]], title: str, ylabel: str, xlabel: str,
              categories: list[str] | None = None, legend: str | None = None):
    """One bar per group (mean, ±std error bar), every run as a dot, the mean written above. Bars of
    the same `categories` entry (e.g. the sweep: MAML or FOMAML) share a colour, named in the legend."""
    fig, ax = new_axes(title, xlabel, ylabel)
    x = np.arange(len(labels))
    stats = [mean_std(group) for group in samples]
    means, stds = [s[0] for s in stats], [s[1] for s in stats]
    names = list(dict.fromkeys(categories)) if categories else []
    colors = [f"C{names.index(c) % 10}" for c in categories] if categories else "tab:blue"
    bars = ax.bar(x, means, 0.6, yerr=np.nan_to_num(stds), capsize=4, color=colors, alpha=0.75)
    if len(names) > 1:
        ax.legend(handles=[matplotlib.patches.Patch(color=f"C{i % 10}", alpha=0.75, label=n) for i, n in enumerate(names)],
                  title=legend, fontsize="small")
    for position, group in zip(x, samples):
        ax.plot(np.full(len(group), position), group, "o", color="black", markersize=3.5, alpha=0.7)
    ax.bar_label(bars, labels=[format_mean_std(m, s) for m, s in zip(means, stds)], padding=3, fontsize="small")
    set_group_ticks(ax, x, labels)
    ax.grid(False, axis="x")
    ax.margins(y=0.15)
    return fig


def save_figure(fig, path: pathlib.Path) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def save_text(text: str, path: pathlib.Path) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------------------
# Command line


def parse_where(items: list[str]) -> dict[str, list[str]]:
    where = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key or not all(values.split(",")):
            raise PlotError(f"--where {item!r}: expected KEY=V1,V2,... e.g. --where inner-steps=1,3")
        where[key] = values.split(",")
    return where


def provenance(args: argparse.Namespace, argv: list[str]) -> str:
    """Where the numbers come from: the sweeps' scripts and fixed flags, and the command that made them."""
    parts = []
    for sweep_dir in args.sweeps:
        manifest = json.loads((sweep_dir / "sweep.json").read_text())
        flags = " ".join(shlex.join(sweep_runner.value_tokens(k, v)) for k, v in manifest["fixed_flags"])
        parts.append(f"`{display_path(sweep_dir)}` (`{manifest['script']}{' ' + flags if flags else ''}`)")
    return f"Sweeps: {'; '.join(parts)}. Made by `{PROG} {shlex.join(argv)}`."


def display_path(path: pathlib.Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def short_name(text: str) -> str:
    """A tag's last part, for titles and axis labels: `charts/post_adaptation_distance` -> `post_adaptation_distance`."""
    return text.rsplit("/", 1)[-1]


def default_stem(args: argparse.Namespace) -> str:
    """The default output name: the sweeps' names and the subcommand, e.g. `maml+fomaml_table`."""
    return f"{'+'.join(sweep_dir.name for sweep_dir in args.sweeps)}_{args.command}"


SPREAD_NOTE = "Mean ± standard deviation over seeds (sample std, n-1); n: runs per row."


def command_curves(args, runs, keys, grid, argv) -> None:
    curves = []
    for values, members in group_runs(runs, keys, grid):
        series = [read_scalar(run, args.tag) for run in members]
        series = [(steps, smooth(values_, args.smooth)) for steps, values_ in series]
        label = f"{group_label(keys, values)} (n={len(members)})"
        curves.append((label, *mean_std_curve(series)))
    smoothing = f", moving average of {args.smooth}" if args.smooth > 1 else ""
    title = args.title or f"{short_name(args.tag)}: mean ± std over seeds{smoothing}"
    fig = plot_curves(curves, title, args.xlabel, args.ylabel or short_name(args.tag), legend_title(keys))
    report(save_figure(fig, args.out or DOCS_DIR / f"{default_stem(args)}.png"))


def command_windows(args, runs, keys, grid, argv) -> None:
    groups = group_runs(runs, keys, grid)
    first_step = args.first_step
    if first_step is None:  # the earliest logged step: 0 or 1 depending on how the script counts
        first_step = int(min(read_scalar(run, args.tag)[0][0] for run in runs))
    bounds = window_bounds(first_step, args.window, args.num_windows)
    window_names = [f"{args.xlabel} {first}–{last}" for first, last in bounds]
    stats = [window_stats([read_scalar(run, args.tag) for run in members], bounds, args.spread) for _, members in groups]
    labels = [group_label(keys, values) for values, _ in groups]
    spread = "seeds" if args.spread == "seeds" else "all logged values"
    title = args.title or f"{short_name(args.tag)} per window of {args.window} {args.xlabel}s (mean ± std over {spread})"
    fig = plot_windows(labels, window_names, stats, title, args.ylabel or short_name(args.tag),
                       legend_title(keys) or "", legend="window")
    figure = report(save_figure(fig, args.out or DOCS_DIR / f"{default_stem(args)}.png"))
    header = [*keys, "n", *window_names]
    rows = [[*values, str(group[0][2]), *(format_mean_std(m, s) for m, s, _ in group)] for (values, _), group in zip(groups, stats)]
    note = SPREAD_NOTE if args.spread == "seeds" else (
        "Mean ± standard deviation of every logged value in the window, all seeds pooled (n-1); n: values per window.")
    text = markdown_table(header, rows, title, f"{note} {provenance(args, argv)}")
    report(save_text(text, args.table_out or TABLES_DIR / f"{figure.stem}.md"))


def command_table(args, runs, keys, grid, argv) -> None:
    if args.labels is not None and len(args.labels) != len(args.columns):
        raise PlotError(f"--labels gives {len(args.labels)} names for {len(args.columns)} --columns; give one per column")
    header = [*keys, "n", *(args.labels or args.columns)]
    rows = []
    for values, members in group_runs(runs, keys, grid):
        rows.append([*values, str(len(members)), *(format_mean_std(*column_stats(members, c)[:2]) for c in args.columns)])
    text = markdown_table(header, rows, args.title, f"{SPREAD_NOTE} {provenance(args, argv)}")
    print(text)
    report(save_text(text, args.out or TABLES_DIR / f"{default_stem(args)}.md"))


def command_bars(args, runs, keys, grid, argv) -> None:
    groups = group_runs(runs, keys, grid)
    samples = [[column_stats([run], args.column)[0] for run in members] for _, members in groups]
    labels = [group_label(keys, values) for values, _ in groups]
    title = args.title or f"{args.column}: mean ± std over seeds, dots = runs"
    # with two or more keys, the first one (e.g. the sweep) colours the bars
    categories = [values[0] for values, _ in groups] if len(keys) > 1 else None
    fig = plot_bars(labels, samples, title, args.ylabel or args.column, args.xlabel or legend_title(keys) or "",
                    categories, keys[0] if keys else None)
    report(save_figure(fig, args.out or DOCS_DIR / f"{default_stem(args)}.png"))
    if args.table_out:
        rows = [[*values, str(len(group)), format_mean_std(*mean_std(group)[:2])] for (values, _), group in zip(groups, samples)]
        report(save_text(markdown_table([*keys, "n", args.column], rows, args.title, f"{SPREAD_NOTE} {provenance(args, argv)}"), args.table_out))


def report(path: pathlib.Path) -> pathlib.Path:
    print(f"wrote {path}", file=sys.stderr)
    return path


def mean_map(runs: list[RunData], column: str) -> np.ndarray:
    """The mean over runs of a per-bin map field (a list of rows; null for a bin without a value -> NaN)."""
    maps = []
    for run in runs:
        rows = run.summary.get(column)
        if not isinstance(rows, list) or not rows or not all(isinstance(row, list) for row in rows):
            raise PlotError(f"{run.summary_path} has no {column!r} map (runs with --task-sampler plr, cvar or frontier have one)")
        maps.append(np.array([[math.nan if v is None else v for v in row] for row in rows], dtype=float))
    if len({m.shape for m in maps}) > 1:
        raise PlotError(f"the runs' {column!r} maps differ in shape: {sorted({m.shape for m in maps})}")
    stacked = np.stack(maps)
    counts = np.isfinite(stacked).sum(0)
    return np.where(counts > 0, np.nansum(stacked, 0) / np.maximum(counts, 1), math.nan)


def command_map(args, runs, keys, grid, argv) -> None:
    """summary.json's `difficulty_map` (rows are y bins from the bottom) averaged over each group's runs, one
    panel per group, with the obstacles drawn over it."""
    panels = [(f"{group_label(keys, values)} (n={len(members)})", mean_map(members, args.column),
               members[0].summary.get("args", {}).get("obstacles", "none"))
              for values, members in group_runs(runs, keys, grid)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels) + 1.5, 4.8), layout="constrained", squeeze=False)
    finite = [m[np.isfinite(m)] for _, m, _ in panels]
    vmax = max((float(v.max()) for v in finite if v.size), default=1.0)
    for ax, (label, values, obstacles) in zip(axes[0], panels):
        image = ax.imshow(values, origin="lower", extent=(0, nav_env.MAP_SIZE, 0, nav_env.MAP_SIZE), cmap="magma",
                          vmin=0, vmax=vmax)
        for index, ((x0, y0), (x1, y1)) in enumerate(nav_env.OBSTACLES.get(obstacles, ())):
            ax.plot([x0, x1], [y0, y1], color="#3cb4ff", linewidth=3, label="obstacle" if index == 0 else None)
        ax.plot(*nav_env.START, marker="s", color="#2ca02c", markersize=9, linestyle="none", label="start")
        ax.set_title(textwrap.fill(label, 40), fontsize=9)
        ax.set_xlabel("goal x")
        ax.set_ylabel("goal y")
        ax.legend(loc="upper left", fontsize=7)
    fig.colorbar(image, ax=axes[0].tolist(), label=args.ylabel or args.column.replace("_", " "), shrink=0.8)
    fig.suptitle(textwrap.fill(args.title or f"{args.column}: mean over each group's runs (blank: no value in the bin)", 90))
    fig.get_layout_engine().set(rect=(0, 0.05, 1, 0.95))  # room under the axes for the provenance line
    fig.text(0.01, 0.002, textwrap.fill(provenance(args, argv), 200), fontsize=5, color="#555555")
    report(save_figure(fig, args.out or DOCS_DIR / f"{default_stem(args)}.png"))


def build_parser() -> argparse.ArgumentParser:
    parser = sweep_runner.OneLineErrorParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("sweeps", nargs="+", type=pathlib.Path, metavar="SWEEP_DIR",
                         help="sweep directories made by benchmark.tools.run (several: compare them, e.g. MAML and FOMAML)")
        sub.add_argument("--where", action="append", default=[], metavar="KEY=V1,V2",
                         help="keep only runs with these grid values (repeatable; `sweep` names a sweep directory)")
        sub.add_argument("--group-by", nargs="+", metavar="KEY",
                         help="grid keys (or `sweep`) that make the groups; runs that differ in other keys are pooled "
                              "(default: every key that takes more than one value)")
        sub.add_argument("--title", help="figure or table title (default: says what is shown)")
        sub.add_argument("--ylabel", help="y-axis label (default: the tag's last part or the column)")
        return sub

    curves = add("curves", "a TensorBoard scalar against its step, mean ± std over seeds, one line per group")
    curves.add_argument("--tag", required=True, help="scalar tag, e.g. charts/post_adaptation_distance")
    curves.add_argument("--smooth", type=int, default=1, metavar="N", help="moving average over N logged points per run first (default: 1, none)")
    curves.add_argument("--xlabel", default="step", help="x-axis label: what the scripts log as step (default: step)")
    curves.add_argument("--out", type=pathlib.Path, help="PNG path (default: docs/<sweeps>_curves.png)")

    windows = add("windows", "a scalar's mean ± std per window of steps, per group: bars and a Markdown table")
    windows.add_argument("--tag", required=True, help="scalar tag, e.g. charts/post_adaptation_distance")
    windows.add_argument("--window", type=int, required=True, metavar="STEPS", help="window length in steps, e.g. 100")
    windows.add_argument("--num-windows", type=int, required=True, metavar="K", help="number of consecutive windows, e.g. 4")
    windows.add_argument("--first-step", type=int, metavar="STEP", help="first step of the first window (default: the earliest logged step)")
    windows.add_argument("--spread", choices=["seeds", "pooled"], default="seeds",
                         help="seeds: std over runs of each run's window mean; pooled: std of all logged values in the window (default: seeds)")
    windows.add_argument("--xlabel", default="step", help="what a step is, used in window names, e.g. iteration (default: step)")
    windows.add_argument("--out", type=pathlib.Path, help="PNG path (default: docs/<sweeps>_windows.png)")
    windows.add_argument("--table-out", type=pathlib.Path, help="Markdown path (default: docs/results/<the PNG's name>.md)")

    table = add("table", "summary.json columns, mean ± std over seeds per group, as a Markdown table (also printed)")
    table.add_argument("--columns", nargs="+", required=True, metavar="COLUMN",
                       help="numeric summary fields, e.g. post_adaptation_distance adaptation_gain (args.x for an argument)")
    table.add_argument("--labels", nargs="+", metavar="LABEL", help="column headers, one per --columns (default: the columns)")
    table.add_argument("--out", type=pathlib.Path, help="Markdown path (default: docs/results/<sweeps>_table.md)")

    bars = add("bars", "one summary.json column per group as bars (mean ± std, runs as dots)")
    bars.add_argument("--column", required=True, help="numeric summary field, e.g. median_iteration_time_s")
    bars.add_argument("--xlabel", help="x-axis label (default: the group keys)")
    bars.add_argument("--out", type=pathlib.Path, help="PNG path (default: docs/<sweeps>_bars.png)")
    bars.add_argument("--table-out", type=pathlib.Path, help="also write the numbers as a Markdown table here")

    difficulty = add("map", "a per-goal-bin map of the task samplers (summary.json's difficulty_map) over the map, per group")
    difficulty.add_argument("--column", default="difficulty_map", help="the map field (default: difficulty_map)")
    difficulty.add_argument("--out", type=pathlib.Path, help="PNG path (default: docs/<sweeps>_map.png)")
    return parser


COMMANDS = {"curves": command_curves, "windows": command_windows, "table": command_table, "bars": command_bars,
            "map": command_map}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        for name in ("window", "num_windows", "smooth"):
            if getattr(args, name, 1) < 1:
                raise PlotError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
        runs, grid = load_runs(args.sweeps)
        where = parse_where(args.where)
        unknown = [key for key in where if key not in grid]
        if unknown:
            raise PlotError(f"--where {unknown[0]}=...: not a grid key; the keys are {', '.join(grid)}")
        runs = select(runs, where)
        keys = args.group_by if args.group_by is not None else default_group_keys(runs, grid)
        unknown = [key for key in keys if key not in grid]
        if unknown:
            raise PlotError(f"--group-by {' '.join(unknown)}: not a grid key; the keys are {', '.join(grid)}")
        COMMANDS[args.command](args, runs, keys, grid, argv)
    except PlotError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
