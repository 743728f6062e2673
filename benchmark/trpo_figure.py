"""The MAML paper's Figs. 4-5 for maml_trpo.py's runs: held-out return after 0..K inner steps, one line per method
(MAML, pretrained, oracle, random initialisation), mean and standard error over the runs (seeds) of each method.

A run's method comes from its summary.json: --see-task is the oracle, --inner-steps 0 pretrained, --num-iterations 0
the random initialisation (without --load-model), else MAML.

    python -m benchmark.trpo_figure --runs runs --env point-nav --out docs/maml_trpo_point_nav.png
"""

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def method(args: dict) -> str:
    if args["see_task"]:
        return "oracle"
    if args["num_iterations"] == 0 and args["load_model"] is None:
        return "random"
    return "pretrained" if args["inner_steps"] == 0 else "MAML"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs", help="the folder of the run folders")
    parser.add_argument("--env", default="point-nav")
    parser.add_argument("--out", required=True, help="the PNG to write")
    cli = parser.parse_args()
    curves = {}
    for path in sorted(Path(cli.runs).glob("*/summary.json")):
        summary = json.loads(path.read_text())
        if summary["args"]["env"] == cli.env and summary["args"]["load_model"] is None:
            curves.setdefault(method(summary["args"]), []).append(summary["return_after_steps"])
    figure, axis = plt.subplots(figsize=(5, 3.5))
    for name in ("MAML", "pretrained", "random", "oracle"):
        if name not in curves:
            continue
        returns = np.array(curves[name])
        mean = returns.mean(0)
        error = returns.std(0, ddof=1) / np.sqrt(len(returns)) if len(returns) > 1 else np.zeros_like(mean)
        steps = np.arange(len(mean))
        runs = f"{len(returns)} run" + ("s" if len(returns) > 1 else "")
        if name == "oracle":  # the oracle is not adapted: its return before any step, as the paper draws it
            axis.axhline(mean[0], linestyle="--", color="black", label=f"oracle ({runs})")
        else:
            axis.errorbar(steps, mean, yerr=error, marker="o", capsize=3, label=f"{name} ({runs})")
    axis.set_xlabel("number of gradient steps")
    axis.set_ylabel("average return")
    axis.set_xticks(range(4))
    axis.set_title(f"maml_trpo.py --env {cli.env}: 40 held-out tasks")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(cli.out, dpi=120)
    print(f"wrote {cli.out}")
