"""maml_vpg.py and fomaml_vpg.py: meta-gradients against exact answers and independent implementations, the held-out
figures of summary.json, the command line, and runs killed and resumed."""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from copy import deepcopy
from pathlib import Path

import numpy as np
import pytest
import torch
import tyro

from meta_gradient_oracles import (assert_first_order_matches_per_task_gradients, assert_meta_gradient_matches_classic,
                                   estimated_meta_gradients, exact_meta_gradient, task_slice)

import fomaml_vpg
import maml_vpg
import nav_env
from benchmark import nav_optimal

ROOT = Path(__file__).resolve().parents[1]

# --- the bandit of tests/meta_gradient_oracles.py: the script's pipeline against the exact meta-gradient -------

def loop_meta_gradient(module, model, params, adapted, validation):
    """The meta-gradient as the scripts' loop takes it: the validation losses at theta_N, differentiated back to theta
    through whatever graph the script's inner_update left (MAML's second-order one, FOMAML's identity)."""
    loss = module.outer_loss(model, adapted, validation)
    return dict(zip(params, torch.autograd.grad(loss, list(params.values())))), loss


def pipeline_gradient(module, model, params, inner_batches, validation, lr):
    """sample_and_adapt's inner steps from theta expanded over the tasks, then the loop's meta-gradient."""
    adapted = {name: p.expand((len(validation["obs"]),) + p.shape) for name, p in params.items()}
    for batch in inner_batches:
        adapted = module.inner_update(model, adapted, batch, lr)
    return loop_meta_gradient(module, model, params, adapted, validation)


def maml_pipeline_gradient(model, params, adapted, inner, validation, lr):
    return loop_meta_gradient(maml_vpg, model, params, adapted, validation)


def fomaml_pipeline_gradient(model, params, adapted, inner, validation, lr):
    return loop_meta_gradient(fomaml_vpg, model, params, adapted, validation)


@pytest.mark.parametrize("num_steps", [1, 2])
def test_maml_meta_gradient_matches_the_exact_gradient_on_a_bandit(num_steps):
    estimates = estimated_meta_gradients(maml_vpg.inner_update, maml_pipeline_gradient, num_steps, groups=20, tasks=500, samples=400)
    mean, sem = estimates.mean(0), estimates.std(0) / np.sqrt(len(estimates))
    exact, first_order = exact_meta_gradient(num_steps), exact_meta_gradient(num_steps, first_order=True)
    # the test can tell MAML from its first-order approximation: they differ by many standard errors
    assert ((exact - first_order).abs() > 10 * sem).any()
    # 5 standard errors, plus a little for the O(1/samples) bias of adapting on sampled gradients
    assert torch.all((mean - exact).abs() < 5 * sem + 2e-3), (mean, exact, sem)


def test_fomaml_estimates_the_gradient_at_the_adapted_parameters_on_a_bandit():
    estimates = estimated_meta_gradients(fomaml_vpg.inner_update, fomaml_pipeline_gradient, 1, groups=20, tasks=500, samples=400)
    mean, sem = estimates.mean(0), estimates.std(0) / np.sqrt(len(estimates))
    assert torch.all((mean - exact_meta_gradient(1, first_order=True)).abs() < 5 * sem + 2e-3)
    assert ((mean - exact_meta_gradient(1)).abs() > 5 * sem).any()  # and is not MAML's gradient


# --- the real policy on random batches, against plain autograd, one task at a time -----------------


def nav_policy(hidden=16, see_goal=True):
    space = nav_env._observation_space(see_goal, "block")
    torch.manual_seed(0)
    return maml_vpg.Policy(space.shape[0], 8, hidden, space.low, space.high)


def random_batch(tasks: int, samples: int, seed: int, obs_dim: int = 4) -> dict:
    generator = torch.Generator().manual_seed(seed)
    mask = (torch.rand(tasks, samples, generator=generator) < 0.8).float()
    return {
        "obs": 10 * torch.rand(tasks, samples, obs_dim, generator=generator),
        "actions": torch.randint(0, 8, (tasks, samples), generator=generator),
        "advantages": torch.randn(tasks, samples, generator=generator) * mask,
        "mask": mask,
    }


def reinforce_loss(model, batch):
    """-mean log pi(a|s) * A written with plain autograd-able module calls (independent of torch.func)."""
    logp = torch.log_softmax(model(batch["obs"]), -1).gather(-1, batch["actions"][:, None]).squeeze(-1)
    return -(logp * batch["advantages"] * batch["mask"]).sum() / batch["mask"].sum()


def with_params(model, params):
    """A copy of model holding the given (detached) parameter values as its own leaves."""
    copy = deepcopy(model)
    with torch.no_grad():
        for name, p in copy.named_parameters():
            p.copy_(params[name])
    return copy


@pytest.mark.parametrize("module", [maml_vpg, fomaml_vpg])
def test_inner_step_is_sgd_on_the_reinforce_loss(module):
    model, batch = nav_policy(), random_batch(2, 50, seed=1)
    torch.manual_seed(3)  # two tasks at different parameters: each must step along its own gradient
    task_params = {name: (p.detach() + 0.1 * torch.randn((2,) + p.shape)).requires_grad_()
                   for name, p in model.named_parameters()}
    adapted = module.inner_update(model, task_params, batch, 0.3)
    for task in range(2):
        own = with_params(model, {name: value[task] for name, value in task_params.items()})
        reinforce_loss(own, task_slice(batch, task)).backward()
        for name, p in own.named_parameters():
            torch.testing.assert_close(adapted[name][task], p.detach() - 0.3 * p.grad)


@pytest.mark.parametrize("num_steps", [1, 2])
def test_fomaml_update_is_the_policy_gradient_at_the_adapted_parameters(num_steps):
    """Through FOMAML's inner steps the meta-gradient flows as through the identity: it is the sum of the tasks'
    plain policy gradients at theta_N (the test fails if inner_update kept a second-order graph)."""
    model, tasks, lr = nav_policy(), 3, 0.5
    params = dict(model.named_parameters())
    inner_batches = [random_batch(tasks, 30, seed=20 + k) for k in range(num_steps)]
    validation = random_batch(tasks, 40, seed=2)
    adapted = {name: p.expand((tasks,) + p.shape) for name, p in params.items()}
    for batch in inner_batches:
        adapted = fomaml_vpg.inner_update(model, adapted, batch, lr)
    grads, loss = loop_meta_gradient(fomaml_vpg, model, params, adapted, validation)
    adapted = {name: p.detach() for name, p in adapted.items()}
    assert_first_order_matches_per_task_gradients(grads, loss, model, adapted, validation, reinforce_loss)


@pytest.mark.parametrize("num_steps", [1, 3])
def test_maml_over_all_tasks_at_once_equals_a_per_task_loop_with_create_graph(num_steps):
    """maml_vpg's task-batched meta-gradient against classic higher-order autograd, one task at a time."""
    model, tasks, lr = nav_policy(), 3, 0.5
    inner_batches = [random_batch(tasks, 30, seed=10 + k) for k in range(num_steps)]
    validation = random_batch(tasks, 30, seed=99)
    assert_meta_gradient_matches_classic(lambda *inputs: pipeline_gradient(maml_vpg, model, *inputs),
                                         model, inner_batches, validation, lr)


# --- advantages, baseline, rollouts ---------------------------------------------------------------


def test_discount_matrix_by_hand():
    expected = torch.tensor([[1.0, 0.5, 0.25], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(maml_vpg.discount_matrix(0.5, 3), expected)


def test_linear_baseline_is_a_per_task_masked_least_squares_fit():
    rng = np.random.default_rng(0)
    features, returns = rng.normal(size=(2, 30, 4)), rng.normal(size=(2, 30))
    mask = (rng.random((2, 30)) < 0.7).astype(float)
    fitted = maml_vpg.linear_baseline(*(torch.as_tensor(x) for x in (features, returns, mask)), reg=0.0).numpy()
    for task in range(2):
        rows = mask[task] > 0
        coef, *_ = np.linalg.lstsq(features[task][rows], returns[task][rows], rcond=None)
        np.testing.assert_allclose(fitted[task], features[task] @ coef, rtol=1e-8, atol=1e-8)


def test_advantages_equal_the_gae_recursion_with_the_fitted_baseline():
    rng = np.random.default_rng(1)
    tasks, episodes, horizon, gamma, lam = 2, 3, 7, 0.9, 0.8
    obs = torch.as_tensor(rng.uniform(-1, 1, (tasks, episodes, horizon, 2)))
    rewards = torch.as_tensor(rng.normal(size=(tasks, episodes, horizon)))
    lengths = rng.integers(1, horizon + 1, (tasks, episodes))
    lengths[0, 0] = horizon  # one episode runs to the horizon, where the value after the last step is 0
    mask = torch.as_tensor(np.arange(horizon) < lengths[..., None], dtype=torch.float64)
    rewards = rewards * mask
    advantages = maml_vpg.compute_advantages(obs, rewards, mask, gamma, lam, norm_adv=False).double()

    # independent: returns by the backward recursion, the baseline by numpy least squares, GAE by its loop
    time = np.arange(horizon) / horizon
    for task in range(tasks):
        rows, targets, feats = [], [], []
        for e in range(episodes):
            ret, returns = 0.0, np.zeros(horizon)
            for t in reversed(range(lengths[task, e])):
                ret = rewards[task, e, t].item() + gamma * ret
                returns[t] = ret
            for t in range(lengths[task, e]):
                o = obs[task, e, t].numpy()
                feats.append(np.concatenate([o, o**2, [time[t], time[t] ** 2, time[t] ** 3, 1.0]]))
                targets.append(returns[t])
                rows.append((e, t))
        coef = np.linalg.solve(np.array(feats).T @ np.array(feats) + 1e-5 * np.eye(len(feats[0])),
                               np.array(feats).T @ np.array(targets))
        values = np.zeros((episodes, horizon + 1))
        for (e, t), f in zip(rows, feats):
            values[e, t] = f @ coef
        for e in range(episodes):
            gae = 0.0
            for t in reversed(range(lengths[task, e])):
                delta = rewards[task, e, t].item() + gamma * values[e, t + 1] - values[e, t]
                gae = delta + gamma * lam * gae
                assert advantages[task, e, t].item() == pytest.approx(gae, rel=1e-4, abs=1e-4)
            assert torch.all(advantages[task, e, lengths[task, e]:] == 0)


def test_normalised_advantages_have_zero_mean_unit_std_per_task_over_valid_steps():
    rng = np.random.default_rng(2)
    obs = torch.as_tensor(rng.uniform(-1, 1, (3, 4, 10, 2)))
    mask = torch.as_tensor(np.arange(10) < rng.integers(2, 11, (3, 4, 1)), dtype=torch.float64)
    rewards = torch.as_tensor(rng.normal(size=(3, 4, 10)) * 50) * mask
    advantages = maml_vpg.compute_advantages(obs, rewards, mask, 0.99, 1.0, norm_adv=True).double()
    for task in range(3):
        valid = advantages[task][mask[task] > 0]
        assert abs(valid.mean().item()) < 1e-5 and valid.std(unbiased=False).item() == pytest.approx(1.0, rel=1e-4)


class RolloutArgs:
    episodes_per_task, gamma, gae_lambda, norm_adv = 3, 0.99, 1.0, False


@pytest.mark.parametrize("module", [maml_vpg, fomaml_vpg])
def test_task_logits_equal_each_tasks_policy_through_functional_call(module):
    from torch.func import functional_call

    model = nav_policy(hidden=16)
    torch.manual_seed(4)
    task_params = {name: p.detach() + 0.3 * torch.randn((3,) + p.shape) for name, p in model.named_parameters()}
    obs = torch.rand(3, 5, 4) * 10
    logits = module.task_logits(model, module.task_layers(model, task_params), obs)
    for task in range(3):
        own = {name: value[task] for name, value in task_params.items()}
        torch.testing.assert_close(logits[task], functional_call(model, own, (obs[task],)), rtol=1e-6, atol=1e-6)


def test_rollout_matches_the_single_env_replayed_with_the_same_actions():
    goals = np.array([[9.5, 9.5], [9.0, 8.8]])  # near the start: random episodes sometimes end early
    envs = nav_env.NavigationVectorEnv(6, obstacles="easy", autoreset_mode="Disabled")
    envs.reset(seed=0)
    model = nav_policy()
    torch.manual_seed(3)
    task_params = {name: p.detach().expand((2,) + p.shape) for name, p in model.named_parameters()}
    batch, stats = maml_vpg.rollout(envs, model, task_params, goals, RolloutArgs, torch.device("cpu"))
    assert stats["env_steps"] == int(batch["mask"].sum())
    lengths_seen = set()
    for task in range(2):
        for e in range(3):
            steps = slice(e * 100, (e + 1) * 100)
            mask, actions = batch["mask"][task, steps], batch["actions"][task, steps]
            length = int(mask.sum())
            assert torch.all(mask[:length] == 1) and torch.all(mask[length:] == 0)  # valid steps form a prefix
            lengths_seen.add(length)
            env = nav_env.NavigationEnv(obstacles="easy")
            obs, _ = env.reset(options={"goal": tuple(goals[task])})
            total = 0.0
            for t in range(length):
                np.testing.assert_array_equal(batch["obs"][task, e * 100 + t].numpy(), obs)
                obs, reward, terminated, truncated, info = env.step(int(actions[t]))
                total += reward
            assert terminated or truncated
            assert stats["reached"][task, e] == terminated
            assert stats["returns"][task, e] == pytest.approx(total, rel=1e-5)
            assert stats["distances"][task, e] == pytest.approx(info["distance"])
    assert min(lengths_seen) < 100  # some episode reached its goal, so the early-end path was exercised


# --- the command line ---------------------------------------------------------------------------------

TINY = ["--num-iterations", "2", "--meta-batch-size", "2", "--episodes-per-task", "2", "--num-test-tasks", "2",
        "--eval-every", "1"]


def run_script(name, flags, cwd):
    return subprocess.run([sys.executable, str(ROOT / name), *flags], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def read_summary(cwd) -> dict:
    (path,) = list(Path(cwd).glob("runs/*/summary.json"))
    return json.loads(path.read_text())


def check_held_out_keys(summary: dict, inner_steps: int) -> None:
    """The held-out figures: per goal and per inner step 0..N, their means over goals (every goal has the same number
    of episodes), the figures before and after adaptation, and no return above each goal's exact optimum."""
    goals = len(summary["test_goals"])
    for name in ("return", "distance", "success"):
        by_goal = np.array(summary[f"{name}_by_goal_after_steps"])
        assert by_goal.shape == (inner_steps + 1, goals)
        np.testing.assert_allclose(summary[f"{name}_after_steps"], by_goal.mean(1), rtol=1e-6)
    success = np.array(summary["success_by_goal_after_steps"])
    assert ((0 <= success) & (success <= 1)).all()
    assert (success * 2 == np.round(success * 2)).all()  # the share of a goal's 2 episodes that reached it
    for when, k in (("pre_adaptation", 0), ("post_adaptation", inner_steps)):
        assert summary[f"{when}_return"] == summary["return_after_steps"][k]
        assert summary[f"{when}_distance"] == summary["distance_after_steps"][k]
        assert summary[f"{when}_success_rate"] == summary["success_after_steps"][k]
    optimal_return, _ = nav_optimal.optimal_returns(summary["test_goals"], summary["args"]["obstacles"])
    assert (np.array(summary["return_by_goal_after_steps"]) <= optimal_return + 1e-6).all()  # no policy beats R*


@pytest.mark.parametrize("script", ["maml_vpg.py", "fomaml_vpg.py"])
def test_smoke_through_the_cli_save_and_evaluate(script, tmp_path):
    train, evaluate = tmp_path / "train", tmp_path / "evaluate"
    train.mkdir(), evaluate.mkdir()
    result = run_script(script, TINY + ["--inner-steps", "2", "--no-see-goal", "--save-model"], train)
    assert result.returncode == 0, result.stderr
    assert "iteration 2/2" in result.stdout
    summary = read_summary(train)
    for key in ["pre_adaptation_return", "post_adaptation_return", "pre_adaptation_distance",
                "post_adaptation_distance", "adaptation_gain", "wall_time_s", "env_steps", "median_iteration_time_s"]:
        assert summary[key] is not None, key
    assert summary["args"]["inner_steps"] == 2 and len(summary["return_after_steps"]) == 3
    assert summary["adaptation_gain"] == pytest.approx(summary["post_adaptation_return"] - summary["pre_adaptation_return"])
    # 2 iterations x 2 tasks x 2 episodes x (2 inner + 1 validation) batches of at most 100 steps
    assert 0 < summary["env_steps"] <= 2 * 2 * 2 * 3 * 100
    assert -20000 < summary["post_adaptation_return"] <= 0 and 0 <= summary["post_adaptation_distance"] <= 15
    assert len(list(train.glob("runs/*/events.out.tfevents.*"))) == 1
    check_held_out_keys(summary, inner_steps=2)

    model_path = train / summary["model_path"]
    result = run_script(script, TINY[2:] + ["--num-iterations", "0", "--no-see-goal", "--load-model", str(model_path),
                                            "--inner-steps", "3"], evaluate)  # the saved policy after 0..3 steps
    assert result.returncode == 0, result.stderr
    reloaded = read_summary(evaluate)
    assert len(reloaded["return_after_steps"]) == 4 and reloaded["env_steps"] == 0
    check_held_out_keys(reloaded, inner_steps=3)


def test_same_seed_same_run(tmp_path):
    results = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        result = run_script("fomaml_vpg.py", TINY + ["--seed", "7"], tmp_path / name)
        assert result.returncode == 0, result.stderr
        summary = read_summary(tmp_path / name)
        results.append((summary["return_by_goal_after_steps"], summary["env_steps"]))
    assert results[0] == results[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="--cuda is a valid request where a CUDA device is available")
@pytest.mark.parametrize("module", [maml_vpg, fomaml_vpg])
def test_cuda_without_a_cuda_device_exits_2_naming_the_flag(module, capsys):
    with pytest.raises(SystemExit) as exit:
        module.check(module.Args(cuda=True))
    assert exit.value.code == 2
    assert capsys.readouterr().err == "error: --cuda must be given only where a CUDA device is available, got True\n"


def shown_defaults(module, capsys) -> dict:
    """The default --help shows for each flag, from an in-process --help."""
    with pytest.raises(SystemExit) as exit:
        tyro.cli(module.Args, args=["--help"])
    assert exit.value.code == 0
    text = " ".join(re.sub("[│╭╮╰╯─]", " ", capsys.readouterr().out).split())  # the box and its wrapping gone
    flag = r"(--[a-z][a-z-]*)(?:, --no-[a-z-]+| [A-Z]+| \{[^}]*\}\S*)"  # --x, --no-x / --x METAVAR / --x {choices}
    return dict(re.findall(flag + r" .*?\(default: ([^)]*)\)", text))


@pytest.mark.parametrize("module", [maml_vpg, fomaml_vpg])
def test_help_shows_every_flag_with_its_real_default(module, capsys):
    shown = shown_defaults(module, capsys)
    assert len(shown) == len(module.Args.__dataclass_fields__)
    assert {flag: shown[flag] for flag in ("--inner-lr", "--outer-lr", "--outer-optimizer", "--hidden-size",
                                           "--collision", "--seed", "--num-iterations")} == {
        "--inner-lr": "1.0", "--outer-lr": "0.001", "--outer-optimizer": "adam", "--hidden-size": "64",
        "--collision": "block", "--seed": "1", "--num-iterations": "500"}
    # None only where its meaning is in the flag's one-line help
    assert {flag for flag, value in shown.items() if value == "None"} == {
        "--wandb-entity", "--load-model", "--resume"}


@pytest.mark.parametrize("values, message", [
    (dict(inner_lr=-0.1), "--inner-lr must be a finite number > 0, got -0.1"),
    (dict(inner_lr=float("nan")), "--inner-lr must be a finite number > 0, got nan"),
    (dict(outer_lr=float("inf")), "--outer-lr must be in (0, 1e37), got inf"),
    (dict(meta_batch_size=0), "--meta-batch-size must be > 0, got 0"),
    (dict(gamma=1.5), "--gamma must be in [0, 1], got 1.5"),
    (dict(load_model="no/such/file.pt"), "--load-model must be an existing file, got 'no/such/file.pt'"),
    (dict(seed=-1), "--seed must be in [0, 2**32), got -1"),
    (dict(test_seed=2**32), "--test-seed must be in [0, 2**32), got 4294967296"),
    (dict(max_grad_norm=float("nan")), "--max-grad-norm must be a finite number >= 0, got nan"),
    (dict(checkpoint_every=-1), "--checkpoint-every must be >= 0, got -1"),
    (dict(torch_threads=0), "--torch-threads must be > 0, got 0"),
    (dict(exp_name="a/b"), "--exp-name must be a name without '/', got 'a/b'"),
    (dict(wandb_entity="me"), "--wandb-entity must be left alone without --track, got 'me'"),
])
@pytest.mark.parametrize("module", [maml_vpg, fomaml_vpg])
def test_bad_values_exit_2_with_one_line_naming_the_flag(module, values, message, capsys):
    with pytest.raises(SystemExit) as exit:
        module.check(module.Args(**values))
    assert exit.value.code == 2
    assert capsys.readouterr().err == f"error: {message}\n"


@pytest.mark.parametrize("module", [maml_vpg, fomaml_vpg])
def test_good_values_pass_the_checks(module, capsys):
    module.check(module.Args(inner_steps=3, seed=2**32 - 1, gamma=1.0, gae_lambda=0.0,
                             max_grad_norm=0.0, outer_lr=1e36))
    assert capsys.readouterr().err == ""


def test_a_flag_typo_gets_tyros_own_message_and_exit_2(tmp_path):
    result = run_script("maml_vpg.py", ["--inner-step", "3"], tmp_path)
    assert result.returncode == 2 and "--inner-steps" in result.stderr and not any(tmp_path.iterdir())


@pytest.mark.parametrize("script", ["maml_vpg.py", "fomaml_vpg.py"])
def test_a_file_that_is_not_a_saved_policy_or_runs_as_a_file_exit_2_with_one_line(script, tmp_path):
    (tmp_path / "garbage.pt").write_bytes(b"this is not a torch file")
    space = nav_env._observation_space(True, "block")
    torch.save(maml_vpg.Policy(space.shape[0], 8, 16, space.low, space.high).state_dict(), tmp_path / "small.pt")
    for model_file, detail in (("garbage.pt", "Error)"), ("small.pt", "size mismatch")):  # its type, or the mismatch
        result = run_script(script, ["--load-model", model_file, "--num-iterations", "0"], tmp_path)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith(f"error: --load-model must be a {script[:-3]}.cleanrl_model")
        assert detail in result.stderr and result.stdout == ""
    assert sorted(os.listdir(tmp_path)) == ["garbage.pt", "small.pt"]  # nothing written
    (tmp_path / "runs").write_text("a file named runs")
    result = run_script(script, TINY, tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: cannot create the run folder runs/")
    assert (tmp_path / "runs").read_text() == "a file named runs"


# --- runs that survive: a kill at any moment after a checkpoint, --resume, divergence ----------------------------

RESUMABLE = ["--num-iterations", "8", "--meta-batch-size", "2", "--episodes-per-task", "2", "--num-test-tasks", "2",
             "--hidden-size", "16", "--eval-every", "3", "--checkpoint-every", "1"]
TIME_FIELDS = {"wall_time_s", "train_time_s", "sps", "median_iteration_time_s", "median_sps"}


def start_script(name, flags, cwd):
    return subprocess.Popen([sys.executable, str(ROOT / name), *flags], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def without_time(run_dir: Path) -> dict:
    """summary.json less its time fields; a saved model's path (its run name holds the start time) becomes the
    saved parameters themselves."""
    summary = {k: v for k, v in json.loads((run_dir / "summary.json").read_text()).items() if k not in TIME_FIELDS}
    if "model_path" in summary:
        state = torch.load(run_dir / Path(summary.pop("model_path")).name, weights_only=True)
        summary["model"] = {name: tensor.tolist() for name, tensor in state.items()}
    return summary


@pytest.mark.parametrize("script, flags", [("maml_vpg.py", []), ("fomaml_vpg.py", ["--inner-steps", "2", "--save-model"])])
def test_killed_at_a_random_moment_and_resumed_ends_like_the_run_left_alone(script, flags, tmp_path):
    alone, killed = tmp_path / "alone", tmp_path / "killed"
    alone.mkdir(), killed.mkdir()
    left_alone = start_script(script, RESUMABLE + flags, alone)  # side by side with the killed one
    process = start_script(script, RESUMABLE + flags, killed)
    deadline = time.time() + 240
    while not list(killed.glob("runs/*/checkpoint.pt")):  # the first checkpoint, then a random moment
        assert process.poll() is None and time.time() < deadline, process.communicate()
        time.sleep(0.01)
    time.sleep(random.uniform(0.0, 1.5))
    process.send_signal(signal.SIGKILL)
    process.communicate()
    (run_dir,) = killed.glob("runs/*")
    resumed = run_script(script, ["--resume", str(run_dir.relative_to(killed)), "--torch-threads", "1"], killed)
    assert resumed.returncode == 0, resumed.stderr
    assert left_alone.wait(timeout=300) == 0, left_alone.stderr.read()
    (alone_dir,) = alone.glob("runs/*")
    assert without_time(run_dir) == without_time(alone_dir)
    assert len(list(run_dir.glob("events.out.tfevents.*"))) >= 1


def test_resume_without_a_checkpoint_of_this_script_or_with_other_flags_exits_2_naming_resume(tmp_path):
    (tmp_path / "runs" / "r").mkdir(parents=True)
    result = run_script("maml_vpg.py", ["--resume", "runs/r"], tmp_path)
    assert result.returncode == 2 and result.stderr == (
        "error: --resume must be a run folder with a checkpoint.pt of maml_vpg.py, got 'runs/r'\n")
    (tmp_path / "runs" / "r" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert run_script("maml_vpg.py", ["--resume", "runs/r"], tmp_path).stderr.startswith("error: --resume must be")
    result = run_script("fomaml_vpg.py", RESUMABLE[:2] + ["--meta-batch-size", "2", "--episodes-per-task", "2",
                                                          "--num-test-tasks", "2", "--hidden-size", "16"], tmp_path)
    assert result.returncode == 0, result.stderr
    (fomaml_run,) = [path for path in (tmp_path / "runs").iterdir() if path.name != "r"]
    files = sorted((path.name, path.stat().st_mtime_ns) for path in fomaml_run.iterdir())
    foreign = run_script("maml_vpg.py", ["--resume", f"runs/{fomaml_run.name}"], tmp_path)  # FOMAML's checkpoint
    assert foreign.returncode == 2 and "checkpoint.pt of maml_vpg.py" in foreign.stderr
    other = run_script("fomaml_vpg.py", ["--resume", f"runs/{fomaml_run.name}", "--seed", "3"], tmp_path)
    assert other.returncode == 2 and other.stderr.count("\n") == 1 and "'seed'" in other.stderr
    assert other.stderr.startswith("error: --resume continues a run with its own flags")
    assert sorted((path.name, path.stat().st_mtime_ns) for path in fomaml_run.iterdir()) == files  # untouched


@pytest.mark.parametrize("script", ["maml_vpg.py", "fomaml_vpg.py"])
def test_a_diverging_run_stops_with_exit_3_and_one_line_keeping_its_last_checkpoint(script, tmp_path):
    # Adam's steps of 9e36 saturate the tanh layers and push the last layer's weights past float32's range in the
    # logits within a few iterations; each checkpoint before that holds finite parameters
    result = run_script(script, RESUMABLE + ["--outer-lr", "9e36"], tmp_path)
    assert result.returncode == 3, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: non-finite ")
    assert "the run diverged; lower --outer-lr or --inner-lr" in result.stderr
    (run_dir,) = tmp_path.glob("runs/*")
    assert not (run_dir / "summary.json").exists()
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert 1 <= checkpoint["loop"][0] < 8
    assert all(torch.isfinite(p).all() for p in checkpoint["model"].values())
    assert max(p.abs().max() for p in checkpoint["model"].values()) > 1e36  # it was heading off, not stopped at random
