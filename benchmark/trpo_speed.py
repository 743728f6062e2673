"""Where maml_trpo.py's time goes: HalfCheetah stepping by three methods, then one meta-iteration split into its parts.

1. Env steps per second of HalfCheetah-v5's model with random actions in [-1, 1], --num-envs envs (800: a paper
   meta-batch of 40 tasks x 20 episodes): gymnasium's SyncVectorEnv of HalfCheetah-v5, one MjData per env stepped
   in a Python loop, and mujoco.rollout.Rollout (one call per env step over all envs; nthread 1, as maml_trpo.py,
   and --rollout-threads for comparison). Frame skip 1 (the paper's) and 5 (HalfCheetah-v5's).
2. One meta-iteration of maml_trpo.py in the paper's setting of --env (one thread), timed by phase: sampling (env
   stepping apart), building the linearisations, the meta-gradient, one Fisher-vector product (the KL's
   Hessian-vector product through the inner step, on --fisher-fraction of the tasks as maml_trpo.py's flag; a TRPO
   step makes cg_iters of them), the line search, and the whole TRPO step. The median over --iterations iterations
   after one warm-up.

    python -m benchmark.trpo_speed [--env cheetah-dir] [--steps 200] [--iterations 2] [--skip-envs]
                                   [--fisher-fraction 1.0]
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch
from torch.func import functional_call, vmap

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import maml_trpo  # noqa: E402


def env_speeds(num_envs: int, steps: int, frame_skip: int, rollout_threads: int) -> dict:
    """Env steps per second of each stepping method, random actions drawn before the clock starts."""
    import gymnasium
    import mujoco
    from mujoco import rollout

    actions = np.random.default_rng(0).uniform(-1, 1, (steps, num_envs, 6))
    speeds = {}
    vector = gymnasium.vector.SyncVectorEnv(
        [lambda: gymnasium.make("HalfCheetah-v5", frame_skip=frame_skip) for _ in range(num_envs)])
    vector.reset(seed=0)
    start = time.perf_counter()
    for step_actions in actions:
        vector.step(step_actions)
    speeds["gymnasium SyncVectorEnv"] = steps * num_envs / (time.perf_counter() - start)

    env = maml_trpo.Cheetah("cheetah-dir", frame_skip)
    datas = [mujoco.MjData(env.model) for _ in range(num_envs)]
    start = time.perf_counter()
    for step_actions in actions:
        for data, action in zip(datas, step_actions):
            data.ctrl[:] = action
            mujoco.mj_step(env.model, data, frame_skip)
    speeds["MjData per env, Python loop"] = steps * num_envs / (time.perf_counter() - start)

    for threads in sorted({1, rollout_threads}):
        env.runner = rollout.Rollout(nthread=threads)
        env.data = [mujoco.MjData(env.model) for _ in range(threads)]
        env.reset(np.ones((num_envs, 1)), np.random.default_rng(0))
        start = time.perf_counter()
        for step_actions in actions:
            env.step(step_actions)
        speeds[f"mujoco.rollout, nthread={threads} (maml_trpo.Cheetah{' as used' if threads == 1 else ''})"] = (
            steps * num_envs / (time.perf_counter() - start))
    return speeds


def timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def meta_iteration_phases(env_name: str, seed: int, fisher_fraction: float) -> dict:
    """Seconds of each phase of one maml_trpo.py meta-iteration in the paper's setting of env_name."""
    args = maml_trpo.with_paper_values(maml_trpo.Args(env=env_name, seed=seed, fisher_fraction=fisher_fraction))
    env = maml_trpo.PointNav() if env_name == "point-nav" else maml_trpo.Cheetah(env_name, args.frame_skip)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model = maml_trpo.Policy(env.obs_dim, env.action_dim, args.hidden_size)
    params = dict(model.named_parameters())
    tasks = env.sample_tasks(args.meta_batch_size, rng)
    env_time = 0.0
    env_step = env.step

    def counted_step(actions):
        nonlocal env_time
        start = time.perf_counter()
        result = env_step(actions)
        env_time += time.perf_counter() - start
        return result
    env.step = counted_step
    (batches, stats, adapted), sampling = timed(lambda: maml_trpo.sample_and_adapt(
        env, model, params, tasks, [args.inner_lr] * args.inner_steps, args.episodes_per_task, args, rng))
    old = vmap(functional_call, in_dims=(None, 0, 0))(model, adapted, (batches[-1]["obs"],))
    theta = torch.nn.utils.parameters_to_vector(params.values()).detach()

    def outputs_of(vector, tasks=slice(None)):  # as maml_trpo.py's
        inner = [{key: value[tasks] for key, value in batch.items()} for batch in batches[:-1]]
        return maml_trpo.adapted_outputs(model, maml_trpo.as_params(vector, params), inner, batches[-1]["obs"][tasks],
                                         args.inner_lr, args.first_order)
    fisher_count = max(1, round(args.fisher_fraction * len(tasks)))
    fisher_tasks = torch.from_numpy(rng.permutation(len(tasks))[:fisher_count])
    (outputs, output_vjp, fisher_product), linearise = timed(
        lambda: maml_trpo.linearise(outputs_of, theta, batches[-1]["mask"], 1e-5, fisher_tasks))
    (_, gradient), meta_gradient = timed(lambda: maml_trpo.meta_gradient(outputs, output_vjp, batches[-1], old))
    _, fisher_vector_product = timed(lambda: fisher_product(gradient))
    with torch.no_grad():
        _, objective = timed(lambda: maml_trpo.surrogate_and_kl(outputs_of(theta), batches[-1], old))
    (_, step_stats), trpo_step = timed(
        lambda: maml_trpo.trpo_step(outputs_of, theta, batches[-1], old, args.max_kl, fisher_tasks))
    return {"env steps": sum(s["env_steps"] for s in stats), "sampling": sampling, "env stepping": env_time,
            "policy and advantages (sampling - env stepping)": sampling - env_time,
            "Fisher tasks": fisher_count, "linearise (vjp graphs)": linearise, "meta-gradient": meta_gradient,
            "one Fisher-vector product": fisher_vector_product, "one line-search try (objectives)": objective,
            "line-search tries": step_stats["backtracks"] + 1, "TRPO step (whole)": trpo_step,
            "meta-iteration (sampling + TRPO step)": sampling + trpo_step}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="cheetah-dir", choices=sorted(maml_trpo.PAPER))
    parser.add_argument("--num-envs", type=int, default=800, help="envs stepped together in part 1")
    parser.add_argument("--steps", type=int, default=200, help="vector steps per method in part 1")
    parser.add_argument("--rollout-threads", type=int, default=2, help="mujoco.rollout's threads, for comparison")
    parser.add_argument("--iterations", type=int, default=2, help="timed meta-iterations in part 2, after a warm-up (0: no part 2)")
    parser.add_argument("--skip-envs", action="store_true", help="only part 2")
    parser.add_argument("--fisher-fraction", type=float, default=maml_trpo.Args.fisher_fraction,
                        help="share of the tasks in the Fisher-vector products, as maml_trpo.py's flag")
    cli = parser.parse_args()
    torch.set_num_threads(1)
    if not cli.skip_envs:
        for frame_skip in (1, 5):
            print(f"HalfCheetah-v5 model, {cli.num_envs} envs, frame skip {frame_skip}, random actions: env steps/s")
            for method, speed in env_speeds(cli.num_envs, cli.steps, frame_skip, cli.rollout_threads).items():
                print(f"  {method:<50} {speed:>10,.0f}")
    if cli.iterations == 0:
        sys.exit(0)
    runs = [meta_iteration_phases(cli.env, seed, cli.fisher_fraction) for seed in range(cli.iterations + 1)][1:]
    print(f"maml_trpo.py --env {cli.env} --fisher-fraction {cli.fisher_fraction}, the paper's setting, one thread: "
          f"median of {cli.iterations} meta-iterations after a warm-up")
    for phase in runs[0]:
        value = statistics.median(run[phase] for run in runs)
        unit = "" if phase in ("env steps", "Fisher tasks", "line-search tries") else " s"
        print(f"  {phase:<50} {value:>10,.3f}{unit}" if unit else f"  {phase:<50} {value:>10,.0f}")
    env_steps = statistics.median(run["env steps"] for run in runs)
    iteration = statistics.median(run["meta-iteration (sampling + TRPO step)"] for run in runs)
    print(f"  {'env steps per second of the meta-iteration':<50} {env_steps / iteration:>10,.0f}")
