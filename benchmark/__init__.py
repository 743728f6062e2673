"""Benchmarks of the training scripts, run from the repository root.

    benchmark/experiments/  the experiments, one shell script each: bash benchmark/experiments/exp1_inner_steps.sh
    benchmark/tools/        the sweep runner and the figure/table tools: python -m benchmark.tools.run --help
    benchmark/*.py          measurements (speed, reference scores, exact optima): python -m benchmark.env_speed

Run everything from the repository root: `python -m` puts it on sys.path, so the envs and the training
scripts (nav_env.py, maml_vpg.py, ...) import as top-level modules.
"""
