"""Adaptation curves: a held-out measure after 0, 1, ..., K inner steps, one line per initialisation (the
Alchemy paper's Figure 1c,d). Reads the `<measure>_after_steps` lists that maml_vpg.py, fomaml_vpg.py and
alchemy_maml.py write to summary.json, so evaluate each initialisation first, e.g.

    python maml_vpg.py --load-model <run>/maml_vpg.cleanrl_model --num-iterations 0 --inner-steps 5

then give one LABEL=DIR per initialisation, DIR holding runs/<run>/summary.json (the newest is used):

    python -m benchmark.tools.adaptation_curves --measure distance --out docs/initialisations_nav.png \\
        meta-learned=benchmark/sweeps/init_nav/eval_meta random=benchmark/sweeps/init_nav/eval_random

Writes the PNG and a Markdown table (default: docs/results/<png name>.md). Run it from the repository root.
"""

import json
import pathlib
import shlex
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402

from benchmark.tools import run as sweep_runner  # noqa: E402  (where a run folder's summary.json is found)

ROOT = sweep_runner.ROOT
PROG = "python -m benchmark.tools.adaptation_curves"  # how errors, --help and the table's footer name this tool
MEASURES = ("return", "distance", "score")  # maml_vpg/fomaml_vpg: return, distance; alchemy_maml: score


def fail(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    sys.exit(2)


def load_curve(label_dir: str, measure: str) -> tuple[str, list[float], list[float] | None, pathlib.Path]:
    """(label, values after 0..K steps, their standard errors or None, summary path) of one LABEL=DIR."""
    label, sep, directory = label_dir.partition("=")
    if not sep or not label or not directory:
        fail(f"{label_dir!r} is not LABEL=DIR (e.g. meta-learned=benchmark/sweeps/init_nav/eval_meta)")
    summary_path = sweep_runner.newest_summary(pathlib.Path(directory))
    if summary_path is None:
        fail(f"no runs/*/summary.json under {directory}")
    summary = json.loads(summary_path.read_text())
    key = f"{measure}_after_steps"
    if key not in summary:
        found = [k[: -len("_after_steps")] for k in summary if k.endswith("_after_steps")]
        fail(f"{summary_path} has no {key}; --measure allowed for it: {', '.join(found) or 'none'}")
    errors = summary.get(f"{measure}_sem_after_steps")
    return label, summary[key], errors, summary_path


def markdown(curves, measure: str, command: str) -> str:
    steps = max(len(values) for _, values, _, _ in curves)
    lines = [f"**Held-out {measure} after k inner steps**", "",
             "| initialisation | " + " | ".join(f"k = {k}" for k in range(steps)) + " |",
             "|---|" + "---:|" * steps]
    for label, values, errors, _ in curves:
        cells = [f"{v:.4g}" + (f" ± {errors[k]:.2g}" if errors and errors[k] is not None else "")
                 for k, v in enumerate(values)]
        lines.append(f"| {label} | " + " | ".join(cells + [""] * (steps - len(cells))) + " |")
    sources = "; ".join(f"{label}: `{path}`" for label, _, _, path in curves)
    lines += ["", f"*Summaries: {sources}. Made by `{command}`.*", ""]
    return "\n".join(lines)


def build_parser() -> sweep_runner.OneLineErrorParser:
    parser = sweep_runner.OneLineErrorParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="LABEL=DIR", help="an initialisation's label and evaluation folder")
    parser.add_argument("--measure", choices=MEASURES, required=True,
                        help="which <measure>_after_steps list of summary.json to plot")
    parser.add_argument("--out", type=pathlib.Path, required=True, help="PNG to write")
    parser.add_argument("--table-out", type=pathlib.Path, help="Markdown path (default: docs/results/<png stem>.md)")
    parser.add_argument("--title", help="figure title (default: says what is shown)")
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.out.suffix.lower() != ".png":
        fail(f"--out {args.out} must end in .png")
    curves = [load_curve(item, args.measure) for item in args.runs]

    fig, ax = plt.subplots(figsize=(6.5, 4.2), constrained_layout=True)
    for label, values, errors, _ in curves:
        steps = list(range(len(values)))
        if errors and all(e is not None for e in errors):
            ax.errorbar(steps, values, yerr=errors, marker="o", capsize=3, label=label)
        else:
            ax.plot(steps, values, marker="o", label=label)
    ax.set_xlabel("inner steps on the held-out task")
    ax.set_ylabel(f"held-out {args.measure}")
    ax.set_title(args.title or f"Adaptation from each initialisation: held-out {args.measure}")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=150)
    plt.close(fig)
    table_out = args.table_out or ROOT / "docs" / "results" / f"{args.out.stem}.md"
    table_out.parent.mkdir(parents=True, exist_ok=True)
    command = f"{PROG} {shlex.join(argv)}"
    table_out.write_text(markdown(curves, args.measure, command))
    print(f"wrote {args.out}\nwrote {table_out}")


if __name__ == "__main__":
    main()
