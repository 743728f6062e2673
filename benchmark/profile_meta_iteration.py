"""Where the time of a meta-iteration of maml_vpg.py or fomaml_vpg.py goes.

Runs the script's own functions (sample_and_adapt, outer_loss) as its loop does, with its default flags, for
--iterations meta-iterations after one warm-up, single-threaded, and times each phase by wrapping the
function that does it:

| phase | what is timed |
|---|---|
| policy forward | `task_logits` in `rollout`: every task's policy on its envs' observations, once per env step |
| action sampling | the Gumbel-max argmax (`Tensor.argmax`), once per env step |
| env step | `NavigationVectorEnv.step` |
| rollout, other | the rest of `rollout`: buffers, numpy/torch copies, per-episode statistics |
| advantages | `compute_advantages`: the linear baseline fit and GAE, once per rollout |
| inner updates | `inner_update` as `sample_and_adapt` calls it (all tasks at once; MAML's keeps its graph) |
| meta-gradient | the loop's `outer_loss` at theta_N and its backward to theta (MAML: through the inner steps' graph) |
| optimizer | clipping and the outer optimizer's step |

    python -m benchmark.profile_meta_iteration [--script maml_vpg.py] [--inner-steps 3] [--iterations 20]
"""

import collections
import importlib.util
import pathlib
import time

import numpy as np
import torch

import nav_env
from benchmark.tools.run import OneLineErrorParser  # errors in one line, as every tool here

ROOT = pathlib.Path(__file__).resolve().parents[1]

PHASES = ("policy forward", "action sampling", "env step", "rollout, other", "advantages", "inner updates",
          "meta-gradient", "optimizer")


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), ROOT / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # the scripts' training loop sits under `if __name__ == "__main__"`
    return module


class Timers:
    """Accumulated seconds per phase; `wrap` times a function into a phase, except while a phase named
    in `unless_inside` runs (the losses call the policy's forward pass)."""

    def __init__(self):
        self.seconds = collections.defaultdict(float)
        self.enabled = False
        self.active: list[str] = []

    def wrap(self, phase: str, function, unless_inside: tuple[str, ...] = ()):
        def timed(*args, **kwargs):
            counted = self.enabled and not set(unless_inside) & set(self.active)
            self.active.append(phase)
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.active.pop()
                if counted:
                    self.seconds[phase] += time.perf_counter() - start
        return timed


def main() -> None:
    parser = OneLineErrorParser(
        prog="python -m benchmark.profile_meta_iteration", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--script", choices=["maml_vpg.py", "fomaml_vpg.py"], default="maml_vpg.py")
    parser.add_argument("--inner-steps", type=int, default=1, help="N (default 1)")
    parser.add_argument("--iterations", type=int, default=20, help="timed meta-iterations (default 20)")
    options = parser.parse_args()
    if options.inner_steps < 1 or options.iterations < 1:
        parser.error(f"--inner-steps and --iterations must be >= 1, got {options.inner_steps}, {options.iterations}")
    torch.set_num_threads(1)
    script = load_script(options.script)
    args = script.Args(inner_steps=options.inner_steps)
    script.check(args)
    device = torch.device("cpu")
    torch.manual_seed(1)
    envs = nav_env.NavigationVectorEnv(args.meta_batch_size * args.episodes_per_task, obstacles=args.obstacles,
                                       see_goal=args.see_goal, collision=args.collision, autoreset_mode="Disabled")
    envs.reset(seed=1)
    space = envs.single_observation_space
    model = script.Policy(space.shape[0], int(envs.single_action_space.n), args.hidden_size, space.low, space.high)
    params = dict(model.named_parameters())
    optimizer = torch.optim.Adam(params.values(), lr=args.outer_lr)
    task_rng = np.random.default_rng(1)

    timers = Timers()
    # Inner phases first: the rollout's total then has them taken out.
    envs.step = timers.wrap("env step", envs.step)
    script.task_logits = timers.wrap("policy forward", script.task_logits, ("inner updates", "meta-gradient"))
    argmax = torch.Tensor.argmax
    torch.Tensor.argmax = timers.wrap("action sampling", argmax)
    for function, phase in (("compute_advantages", "advantages"), ("rollout", "rollout"),
                            ("inner_update", "inner updates")):
        setattr(script, function, timers.wrap(phase, getattr(script, function)))

    def meta_gradient(adapted, validation_batch):  # the scripts' loop: the validation losses at theta_N, to theta
        optimizer.zero_grad()
        script.outer_loss(model, adapted, validation_batch).backward()
    meta_gradient = timers.wrap("meta-gradient", meta_gradient)

    iteration_seconds = []
    for iteration in range(options.iterations + 1):
        timers.enabled = iteration > 0  # the first iteration warms up
        start = time.perf_counter()
        goals = nav_env.sample_goals(args.targets, args.meta_batch_size, task_rng)
        batches, _, adapted = script.sample_and_adapt(envs, model, params, goals, args.inner_steps, args, device)
        meta_gradient(adapted, batches[-1])
        step_start = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params.values(), args.max_grad_norm)
        optimizer.step()
        if timers.enabled:
            timers.seconds["optimizer"] += time.perf_counter() - step_start
            iteration_seconds.append(time.perf_counter() - start)
    torch.Tensor.argmax = argmax

    seconds = dict(timers.seconds)
    # The advantages are computed inside rollout; the inner updates run inside sample_and_adapt.
    inside_rollout = sum(seconds.get(phase, 0.0) for phase in ("policy forward", "action sampling", "env step",
                                                                "advantages"))
    seconds["rollout, other"] = seconds.pop("rollout") - inside_rollout
    per_iteration = {phase: seconds.get(phase, 0.0) / options.iterations * 1e3 for phase in PHASES}
    total = float(np.mean(iteration_seconds)) * 1e3
    steps = (options.inner_steps + 1) * envs.num_envs * nav_env.MAX_EPISODE_STEPS
    print(f"{options.script}, N = {options.inner_steps}, defaults ({args.meta_batch_size} tasks x "
          f"{args.episodes_per_task} episodes, hidden {args.hidden_size}), single-threaded, mean of "
          f"{options.iterations} meta-iterations: {total:.1f} ms per iteration, "
          f"{steps / total * 1e3:,.0f} env steps/s (horizon steps, including those of ended episodes)\n")
    print("| phase | ms per iteration | share |")
    print("|---|---:|---:|")
    for phase in PHASES:
        print(f"| {phase} | {per_iteration[phase]:.1f} | {per_iteration[phase] / total:.0%} |")
    unaccounted = total - sum(per_iteration.values())
    print(f"| (task sampling, loop) | {unaccounted:.1f} | {unaccounted / total:.0%} |")


if __name__ == "__main__":
    main()
