"""Runs that survive: a run killed at any moment and resumed ends with the summary.json of the same run left
alone (time fields aside); Ctrl-C / SIGTERM stop cleanly; divergence and collapse are caught; the checkpoint
helpers carry every random generator. Every training script is run through its CLI on tiny settings."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
TIME_FIELDS = {"wall_time_s", "train_time_s", "sps", "median_iteration_time_s", "median_sps", "episodes_per_s",
               "median_sampler_time_s"}
MAML_TINY = ["--num-iterations", "8", "--meta-batch-size", "2", "--episodes-per-task", "2", "--num-test-tasks", "2",
             "--hidden-size", "16", "--eval-every", "3", "--checkpoint-every", "1"]
TINY = {  # a case is the script's name, then what sets it apart
    "maml_vpg.py": MAML_TINY,
    "fomaml_vpg.py": MAML_TINY + ["--inner-steps", "2", "--save-model"],
    # the task samplers' learned state (bin scores, staleness, mass) is carried across a kill
    "maml_vpg.py plr": MAML_TINY + ["--task-sampler", "plr", "--sampler-bins", "3"],
    "fomaml_vpg.py cvar": MAML_TINY + ["--task-sampler", "cvar", "--sampler-bins", "3"],
    # held-out evaluations at iterations 3 and 6 draw items from the test envs' generator
    "alchemy_maml.py": MAML_TINY,
    # 50-step rollouts of 100-step episodes: episodes (and SIL's episodes in progress) span iterations
    "ppo_single_task.py": ["--num-iterations", "8", "--num-envs", "8", "--num-steps", "50", "--sil-fraction", "1",
                           "--hidden-size", "16", "--image-every", "3", "--checkpoint-every", "1"],
}
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
HOOK = "META_RL_TEST_KILL_IN_CHECKPOINT"


def run(script, flags, cwd, env=None):
    return subprocess.run([sys.executable, str(ROOT / script), *flags], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env or ENV)


def start(script, flags, cwd):
    return subprocess.Popen([sys.executable, str(ROOT / script), *flags], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)


def the_run(cwd) -> Path:
    (run_dir,) = list(Path(cwd).glob("runs/*"))
    return run_dir


def summary_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def without_time(summary: dict, cwd: Path) -> dict:
    """The summary less its time fields; a saved model's path (its run name holds the start time) becomes the
    saved parameters themselves."""
    kept = {k: v for k, v in summary.items() if k not in TIME_FIELDS}
    if "model_path" in kept:
        state = torch.load(cwd / kept.pop("model_path"), weights_only=True)
        kept["model"] = {name: tensor.tolist() for name, tensor in state.items()}
    return kept


def wait_for_new_checkpoint(process, checkpoint: Path, timeout: float = 120):
    """Block until the process replaces its checkpoint (or ends)."""
    before = checkpoint.stat().st_mtime_ns
    deadline = time.time() + timeout
    while process.poll() is None and checkpoint.stat().st_mtime_ns == before:
        assert time.time() < deadline, "no new checkpoint"
        time.sleep(0.005)


@pytest.mark.parametrize("case", list(TINY))
def test_killed_at_any_moment_and_resumed_ends_like_the_run_left_alone(case, tmp_path):
    script, flags = case.split()[0], TINY[case]
    alone, killed = tmp_path / "alone", tmp_path / "killed"
    alone.mkdir(), killed.mkdir()
    left_alone = start(script, flags, alone)  # side by side with the killed one (2 cores)

    # 1. SIGKILL halfway through writing iteration 3's checkpoint: the one of iteration 2 must stay whole
    result = run(script, flags, killed, env={**ENV, HOOK: "3"})
    assert result.returncode == -signal.SIGKILL
    run_dir = the_run(killed)
    checkpoint = run_dir / "checkpoint.pt"
    assert (run_dir / "checkpoint.pt.tmp").exists() and not (run_dir / "summary.json").exists()
    resume = ["--resume", str(run_dir.relative_to(killed))]

    # 2. resumed, then interrupted as a user would (Ctrl-C / SIGTERM) after its next checkpoint
    signum = signal.SIGINT if script in ("maml_vpg.py", "alchemy_maml.py") else signal.SIGTERM
    process = start(script, resume, killed)
    wait_for_new_checkpoint(process, checkpoint)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr
    last_line = stderr.strip().splitlines()[-1]
    assert last_line.startswith("interrupted at iteration ")
    assert last_line.endswith(f"resume with: python {script} --resume {resume[1]}")
    interrupted = summary_of(run_dir)
    assert interrupted["interrupted"] is True and 3 <= interrupted["iterations"] < 8

    # 3. resumed, then SIGKILLed at a random moment after its next checkpoint (maybe during the final evaluation)
    process = start(script, resume, killed)
    wait_for_new_checkpoint(process, checkpoint)
    time.sleep(random.uniform(0.0, 0.5))
    process.kill()
    process.communicate(timeout=120)

    # 4. resumed to the end
    result = run(script, resume, killed)
    assert result.returncode == 0, result.stderr
    _, stderr = left_alone.communicate(timeout=300)
    assert left_alone.returncode == 0, stderr
    assert without_time(summary_of(run_dir), killed) == without_time(summary_of(the_run(alone)), alone)
    assert summary_of(run_dir)["collapsed"] is False and summary_of(run_dir)["interrupted"] is False
    assert len(list(run_dir.glob("events.out.tfevents.*"))) >= 2  # TensorBoard continued in the run's folder


@pytest.mark.parametrize("script", ["maml_vpg.py"])
def test_collapse_is_flagged_and_divergence_stops_with_exit_3_keeping_the_last_good_checkpoint(script, tmp_path):
    flags = ["--num-iterations", "5", "--meta-batch-size", "2", "--episodes-per-task", "2", "--num-test-tasks", "2",
             "--hidden-size", "16", "--eval-every", "0", "--checkpoint-every", "1", "--collapse-patience", "3"]
    # an outer step of 1e3 saturates the tanh layers: the meta-gradient is 0 from the second iteration on
    (tmp_path / "collapse").mkdir()
    result = run(script, flags + ["--outer-lr", "1e3"], tmp_path / "collapse")
    assert result.returncode == 0, result.stderr
    assert "warning: the policy has collapsed" in result.stderr
    summary = summary_of(the_run(tmp_path / "collapse"))
    assert summary["collapsed"] is True and summary["collapsed_at_iteration"] <= 5

    # an outer step of 1e37 makes the parameters overflow float32 in the policy's logits a few iterations on
    (tmp_path / "diverge").mkdir()
    result = run(script, flags + ["--outer-lr", "1e37"], tmp_path / "diverge")
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("diverged at iteration ") and "non-finite" in line and "--outer-lr" in line
    run_dir = the_run(tmp_path / "diverge")
    summary = summary_of(run_dir)
    assert summary["diverged"] is True and 1 <= summary["diverged_at_iteration"] <= 5
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert checkpoint["iteration"] == summary["diverged_at_iteration"] - 1  # the last good one
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values())
    # 1e38 / (1 - beta1) is beyond float32: Adam's step itself fails
    (tmp_path / "overflow").mkdir()
    result = run(script, flags + ["--outer-lr", "1e38"], tmp_path / "overflow")
    assert result.returncode == 3 and "diverged at iteration 1/5: non-finite optimizer step" in result.stderr


def test_ppo_divergence_stops_with_exit_3_keeping_the_last_good_checkpoint(tmp_path):
    result = run("ppo_single_task.py", ["--num-iterations", "4", "--num-envs", "8", "--num-steps", "50",
                                        "--hidden-size", "16", "--checkpoint-every", "1", "--learning-rate", "1e37"],
                 tmp_path)
    assert result.returncode == 3, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("diverged at iteration ") and "non-finite" in line and "--learning-rate" in line
    run_dir = the_run(tmp_path)
    summary = summary_of(run_dir)
    assert summary["diverged"] is True
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert checkpoint["iteration"] == summary["diverged_at_iteration"] - 1
    assert all(torch.isfinite(v).all() for v in checkpoint["agent"].values())


@pytest.mark.parametrize("env, collision", [("nav", "block"), ("nav", "original"), ("alchemy", "block")])
def test_ppo_env_state_round_trip_continues_the_same_episodes(env, collision):
    """env_state / set_env_state restore a vector env in place (alchemy's batch holds views of its arrays;
    collision="original" keeps float positions and contact flags): after a restore, the same actions give
    the same observations and rewards."""
    import ppo_single_task

    args = ppo_single_task.Args(env=env, num_envs=4, collision=collision)
    envs, options, _ = ppo_single_task.make_envs(args)
    envs.reset(seed=0, options=options)
    rng = np.random.default_rng(0)
    for _ in range(130):  # past an episode's end: autoresets, new trials
        envs.step(rng.integers(0, envs.single_action_space.n, 4))
    state, generator = ppo_single_task.env_state(envs), envs.np_random.bit_generator.state
    actions = rng.integers(0, envs.single_action_space.n, (150, 4))

    def play():
        return [np.concatenate([np.ravel(x) for x in envs.step(a)[:3]]) for a in actions]

    first = play()
    ppo_single_task.set_env_state(envs, state)
    envs.np_random.bit_generator.state = generator
    np.testing.assert_array_equal(np.array(play()), np.array(first))


@pytest.mark.parametrize("module_name", ["maml_vpg", "fomaml_vpg", "alchemy_maml", "ppo_single_task"])
def test_rng_state_round_trip_restores_every_generator(module_name):
    """What rng_state captures, set_rng_state restores: python's, numpy's global, torch's and the Generators."""
    module = __import__(module_name)
    generators = {"a": np.random.default_rng(1), "b": np.random.default_rng(2)}
    state = module.rng_state(generators)

    def draws():
        return (random.random(), np.random.random(), torch.rand(1).item(),
                *(g.random() for g in generators.values()))

    first = draws()
    module.set_rng_state(state, generators)
    assert draws() == first


@pytest.mark.parametrize("module_name", ["maml_vpg", "fomaml_vpg", "alchemy_maml", "ppo_single_task"])
def test_resume_rejects_other_flags_a_missing_checkpoint_and_a_foreign_file(module_name, tmp_path, monkeypatch, capsys):
    module = __import__(module_name)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "r").mkdir(parents=True)

    def rejected(argv: list[str]) -> str:
        monkeypatch.setattr(sys, "argv", [f"{module_name}.py", *argv])
        with pytest.raises(SystemExit) as exit:
            module.resume_args(module.Args(resume="runs/r"))
        assert exit.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        return err

    assert "--seed cannot be given with it (only --torch-threads can)" in rejected(["--resume", "runs/r", "--seed", "3"])
    assert "no checkpoint.pt in it" in rejected(["--resume", "runs/r"])
    (tmp_path / "runs" / "r" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert "is not a readable checkpoint (UnpicklingError)" in rejected(["--resume=runs/r", "--torch-threads", "2"])
    torch.save({"script": "another.py"}, tmp_path / "runs" / "r" / "checkpoint.pt")
    assert f"is not a checkpoint of {module_name}.py" in rejected(["--resume", "runs/r"])
    assert os.listdir(tmp_path / "runs" / "r") == ["checkpoint.pt"]
