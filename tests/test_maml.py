"""maml_vpg.py and fomaml_vpg.py: meta-gradients against exact answers and independent implementations."""

import json
import os
import re
import subprocess
import sys
from copy import deepcopy
from pathlib import Path

import numpy as np
import pytest
import torch

from meta_gradient_oracles import (assert_first_order_matches_per_task_gradients, assert_meta_gradient_matches_classic,
                                   estimated_meta_gradients, exact_meta_gradient, task_slice)

import fomaml_vpg
import maml_vpg
import nav_env

ROOT = Path(__file__).resolve().parents[1]

# --- the bandit of tests/meta_gradient_oracles.py: the script's pipeline against the exact meta-gradient -------

# estimated_meta_gradients passes meta_gradient(model, params, adapted_params, inner_batches, validation_batch,
# inner_lr); each script's meta_gradient takes only the part of that its algorithm uses.
def maml_pipeline_gradient(model, params, adapted, inner, validation, lr):
    return maml_vpg.meta_gradient(model, params, inner, validation, lr)


def fomaml_pipeline_gradient(model, params, adapted, inner, validation, lr):
    return fomaml_vpg.meta_gradient(model, adapted, validation)


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
    model, batch = nav_policy(), task_slice(random_batch(1, 50, seed=1), 0)
    params = {name: p.detach() for name, p in model.named_parameters()}
    adapted = module.inner_update(model, params, batch, 0.3)
    model.zero_grad()
    reinforce_loss(model, batch).backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(adapted[name], p.detach() - 0.3 * p.grad)


def test_fomaml_update_is_the_policy_gradient_at_the_adapted_parameters():
    model, tasks = nav_policy(), 3
    params = dict(model.named_parameters())
    validation = random_batch(tasks, 40, seed=2)
    adapted = {name: p.detach() + 0.1 * torch.randn((tasks,) + p.shape) for name, p in params.items()}
    grads, loss = fomaml_vpg.meta_gradient(model, adapted, validation)
    assert_first_order_matches_per_task_gradients(grads, loss, model, adapted, validation, reinforce_loss)


@pytest.mark.parametrize("num_steps", [1, 3])
def test_maml_vmap_over_tasks_equals_a_per_task_loop_with_create_graph(num_steps):
    """maml_vpg's torch.func meta-gradient against classic higher-order autograd, one task at a time."""
    model, tasks, lr = nav_policy(), 3, 0.5
    inner_batches = [random_batch(tasks, 30, seed=10 + k) for k in range(num_steps)]
    validation = random_batch(tasks, 30, seed=99)
    assert_meta_gradient_matches_classic(lambda p, inner, v, lr: maml_vpg.meta_gradient(model, p, inner, v, lr),
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
    logits = module.task_logits(model, task_params, obs)
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


@pytest.mark.parametrize("module", [maml_vpg, fomaml_vpg])
def test_outcome_metrics_by_hand(module):
    # 3 tasks x 2 episodes: a Q1 task reached in both episodes, a Q1 task in one, a Q3 task never
    stats = {"reached": np.array([[True, True], [True, False], [False, False]]),
             "returns": np.array([[-10.0, -30.0], [-50.0, -150.0], [-400.0, -600.0]])}
    quadrants = np.array([0, 0, 2])
    optimum = (np.array([-10.0, -40.0, -300.0]), np.array([True, True, False]))
    metrics = module.outcome_metrics(stats, quadrants, optimum)
    assert metrics["success_rate"] == pytest.approx(0.5)  # (1 + 0.5 + 0) / 3
    assert metrics["success_rate_by_quadrant"] == [pytest.approx(0.75), None, 0.0, None]
    assert metrics["success_rate_on_reachable"] == pytest.approx(0.75)  # the third goal is not worth reaching
    assert metrics["success_rate_on_reachable_by_quadrant"] == [pytest.approx(0.75), None, None, None]
    # gaps: -10 - (-20) = 10, -40 - (-100) = 60, -300 - (-500) = 200
    assert metrics["return_gap"] == pytest.approx(90.0)
    assert metrics["return_gap_by_quadrant"] == [pytest.approx(35.0), None, pytest.approx(200.0), None]
    assert module.optimal_metrics(quadrants, optimum) == {
        "optimal_success_rate": pytest.approx(2 / 3), "optimal_success_rate_by_quadrant": [1.0, None, 0.0, None]}
    without = module.outcome_metrics(stats, quadrants, None)  # --collision original: no exact optimum
    assert without["success_rate"] == pytest.approx(0.5) and without["return_gap"] is None
    assert without["success_rate_on_reachable_by_quadrant"] == [None] * 4
    assert module.exact_optimum(np.array([[4.5, 1.0]]), maml_vpg.Args(collision="original")) is None


# --- the command line ---------------------------------------------------------------------------------

TINY = ["--num-iterations", "2", "--meta-batch-size", "2", "--episodes-per-task", "2", "--num-test-tasks", "2",
        "--eval-every", "1"]


def run_script(name, flags, cwd):
    return subprocess.run([sys.executable, str(ROOT / name), *flags], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def read_summary(cwd) -> dict:
    (path,) = list(Path(cwd).glob("runs/*/summary.json"))
    return json.loads(path.read_text())


def check_outcome_keys(summary: dict, inner_steps: int) -> None:
    """The held-out success and return-gap keys, checked against nav_env's optimum of the test goals."""
    for when in ("pre_adaptation", "post_adaptation"):
        for name in ("success_rate", "success_rate_on_reachable"):
            assert 0 <= summary[f"{when}_{name}"] <= 1
            assert len(summary[f"{when}_{name}_by_quadrant"]) == 4
        assert len(summary[f"{when}_return_gap_by_quadrant"]) == 4
    assert len(summary["post_adaptation_success_rate_on_reachable_by_quadrant"]) == 4
    assert summary["success_after_steps"][0] == summary["pre_adaptation_success_rate"]
    assert summary["success_after_steps"][inner_steps] == summary["post_adaptation_success_rate"]
    optimal_return, reaches = nav_env.optimal_returns(summary["test_goals"], summary["args"]["obstacles"])
    assert summary["optimal_success_rate"] == pytest.approx(reaches.mean())
    assert summary["test_optimal_returns"] == pytest.approx(optimal_return.tolist())
    # every task has the same number of episodes: the mean gap is mean R* minus the mean return
    assert summary["post_adaptation_return_gap"] == pytest.approx(optimal_return.mean() - summary["post_adaptation_return"])
    assert summary["post_adaptation_return_gap"] >= 0  # no policy beats the optimum
    quadrants = nav_env.goal_quadrants(summary["test_goals"])
    for q in range(4):  # a quadrant without a test goal is null
        assert (summary["post_adaptation_success_rate_by_quadrant"][q] is None) == (not (quadrants == q).any())


@pytest.mark.parametrize("script", ["maml_vpg.py", "fomaml_vpg.py"])
def test_smoke_through_the_cli_save_and_evaluate(script, tmp_path):
    train, evaluate = tmp_path / "train", tmp_path / "evaluate"
    train.mkdir(), evaluate.mkdir()
    result = run_script(script, TINY + ["--inner-steps", "2", "--no-see-goal", "--save-model"], train)
    assert result.returncode == 0, result.stderr
    assert "iteration 2/2" in result.stdout
    summary = read_summary(train)
    for key in ["pre_adaptation_return", "post_adaptation_return", "pre_adaptation_distance",
                "post_adaptation_distance", "adaptation_gain", "wall_time_s", "env_steps", "sps",
                "median_iteration_time_s"]:
        assert summary[key] is not None, key
    assert summary["args"]["inner_steps"] == 2 and len(summary["return_after_steps"]) == 3
    assert summary["adaptation_gain"] == pytest.approx(summary["post_adaptation_return"] - summary["pre_adaptation_return"])
    # 2 iterations x 2 tasks x 2 episodes x (2 inner + 1 validation) batches of at most 100 steps
    assert 0 < summary["env_steps"] <= 2 * 2 * 2 * 3 * 100
    assert -20000 < summary["post_adaptation_return"] <= 0 and 0 <= summary["post_adaptation_distance"] <= 15
    assert len(list(train.glob("runs/*/events.out.tfevents.*"))) == 1
    check_outcome_keys(summary, inner_steps=2)

    model_path = train / summary["model_path"]
    result = run_script(script, TINY[2:] + ["--num-iterations", "0", "--no-see-goal", "--load-model", str(model_path),
                                            "--eval-inner-steps", "3"], evaluate)
    assert result.returncode == 0, result.stderr
    reloaded = read_summary(evaluate)
    assert len(reloaded["return_after_steps"]) == 4 and reloaded["env_steps"] == 0


def test_same_seed_same_run(tmp_path):
    """The same seed gives the same run. The second run asks for --cuda: without a CUDA device it says so and
    runs the same run on the CPU (CI has no GPU, so this is the device path's CPU test)."""
    second = [] if torch.cuda.is_available() else ["--cuda"]
    results = []
    for name, flags in (("a", []), ("b", second)):
        (tmp_path / name).mkdir()
        result = run_script("fomaml_vpg.py", TINY + ["--seed", "7", *flags], tmp_path / name)
        assert result.returncode == 0, result.stderr
        if flags:
            assert "--cuda given but no CUDA device is available: running on the CPU" in result.stdout
        summary = read_summary(tmp_path / name)
        results.append((summary["return_after_steps"], summary["env_steps"]))
    assert results[0] == results[1]


# Duan & Wang's values, written out here rather than read from PRESETS: (MAML's, FOMAML's) meta optimizer
PAPER = {"inner_lr": 3e-4, "outer_lr": 5e-4, "hidden_size": 128, "collision": "original"}
PAPER_OPTIMIZER = {maml_vpg: "sgd", fomaml_vpg: "adam"}


def shown_defaults(module, argv, capsys) -> dict:
    """The default --help shows for each flag, from an in-process --help on top of argv."""
    with pytest.raises(SystemExit) as exit:
        module.parse_args(argv + ["--help"])
    assert exit.value.code == 0
    text = " ".join(re.sub("[│╭╮╰╯─]", " ", capsys.readouterr().out).split())  # the box and its wrapping gone
    flag = r"(--[a-z][a-z-]*)(?:, --no-[a-z-]+| [A-Z]+| \{[^}]*\}\S*)"  # --x, --no-x / --x METAVAR / --x {choices}
    return dict(re.findall(flag + r" .*?\(default: ([^)]*)\)", text))


@pytest.mark.parametrize("module", [maml_vpg, fomaml_vpg])
def test_preset_values_are_the_parsed_defaults_and_explicit_flags_win(module, capsys):
    paper, optimizer = module.parse_args(["--preset", "paper"]), PAPER_OPTIMIZER[module]
    assert {name: getattr(paper, name) for name in PAPER} == PAPER and paper.outer_optimizer == optimizer
    assert paper.preset == "paper" and paper.obstacles == "medium" and paper.inner_steps == 1  # the rest: Args'
    other = "adam" if optimizer == "sgd" else "sgd"
    for argv in (["--preset", "paper", "--hidden-size", "8", "--outer-optimizer", other],
                 ["--hidden-size", "8", "--outer-optimizer", other, "--preset=paper"]):  # either order
        given = module.parse_args(argv)
        assert (given.hidden_size, given.outer_optimizer, given.inner_lr, given.collision) == (8, other, 3e-4, "original")
    default = module.parse_args([])
    assert default == module.Args() and default.preset == "default"
    assert (default.inner_lr, default.outer_lr, default.outer_optimizer, default.hidden_size, default.collision) == (
        1.0, 1e-3, "adam", 64, "block")

    # --help shows the values in effect: Args' own, or the preset's after --preset paper
    shown = shown_defaults(module, [], capsys)
    assert {flag: shown[flag] for flag in ("--inner-lr", "--outer-lr", "--outer-optimizer", "--hidden-size",
                                           "--collision", "--preset")} == {
        "--inner-lr": "1.0", "--outer-lr": "0.001", "--outer-optimizer": "adam", "--hidden-size": "64",
        "--collision": "block", "--preset": "default"}
    assert shown["--seed"] == "1" and shown["--num-iterations"] == "500"
    shown = shown_defaults(module, ["--preset", "paper"], capsys)
    assert {flag: shown[flag] for flag in ("--inner-lr", "--outer-lr", "--outer-optimizer", "--hidden-size",
                                           "--collision", "--preset")} == {
        "--inner-lr": "0.0003", "--outer-lr": "0.0005", "--outer-optimizer": optimizer, "--hidden-size": "128",
        "--collision": "original", "--preset": "paper"}
    # every flag but those whose None is documented shows a value
    assert {flag for flag, value in shown.items() if value == "None"} == {
        "--wandb-entity", "--eval-inner-steps", "--load-model", "--resume"}
    assert len(shown) == len(module.Args.__dataclass_fields__)


@pytest.mark.parametrize("values, message", [
    (dict(inner_lr=-0.1), "--inner-lr must be > 0, got -0.1"),
    (dict(meta_batch_size=0), "--meta-batch-size must be > 0, got 0"),
    (dict(gamma=1.5), "--gamma must be in [0, 1], got 1.5"),
    (dict(eval_inner_steps=-1), "--eval-inner-steps must be >= --inner-steps (1), got -1"),
    (dict(inner_steps=2, eval_inner_steps=1), "--eval-inner-steps must be >= --inner-steps (2), got 1"),
    (dict(load_model="no/such/file.pt"), "--load-model no/such/file.pt: no such file"),
    (dict(seed=-1), "--seed must be in [0, 2**32 - 1], got -1"),
    (dict(seed=2**32), "--seed must be in [0, 2**32 - 1], got 4294967296"),
    (dict(test_seed=-1), "--test-seed must be in [0, 2**32 - 1], got -1"),
    (dict(outer_lr=float("inf")), "--outer-lr must be a finite number, got inf"),
    (dict(max_grad_norm=float("nan")), "--max-grad-norm must be a finite number, got nan"),
    (dict(checkpoint_every=-1), "--checkpoint-every must be >= 0, got -1"),
    (dict(torch_threads=0), "--torch-threads must be > 0, got 0"),
    (dict(collapse_patience=-1), "--collapse-patience must be >= 0, got -1"),
    (dict(exp_name="a/b"), "--exp-name must be a non-empty name without '/', got 'a/b'"),
    (dict(wandb_entity="me"), "--wandb-project-name and --wandb-entity are for --track; add --track or drop them"),
])
@pytest.mark.parametrize("module", [maml_vpg, fomaml_vpg])
def test_bad_values_exit_2_with_one_line(module, values, message, capsys):
    with pytest.raises(SystemExit) as exit:
        module.resolve(module.Args(**values))
    assert exit.value.code == 2
    assert capsys.readouterr().err == f"error: {message}\n"


@pytest.mark.parametrize("module", [maml_vpg, fomaml_vpg])
def test_good_values_pass_validation_unchanged_but_for_eval_inner_steps(module, capsys):
    args = module.Args(inner_steps=3, seed=2**32 - 1, gamma=1.0, gae_lambda=0.0, max_grad_norm=0.0)
    resolved = module.resolve(module.Args(**vars(args)))
    assert resolved.eval_inner_steps == 3  # None: the same as --inner-steps
    assert {**vars(resolved), "eval_inner_steps": None} == vars(args) and capsys.readouterr().err == ""


def exits_2_with(function, *arguments, capsys) -> str:
    """The one stderr line of a function that rejects its input with exit code 2."""
    with pytest.raises(SystemExit) as exit:
        function(*arguments)
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    return err


@pytest.mark.parametrize("module", [maml_vpg, fomaml_vpg])
@pytest.mark.parametrize("argv, message", [
    (["--obstacles", "extreme"], "error: invalid choice 'extreme' for argument '--obstacles'. Expected one of "
                                 "('none', 'easy', 'medium', 'hard').\n"),
    (["--inner-lr", "fast"], "error: Error parsing --inner-lr: could not convert string to float: 'fast'\n"),
    (["--no-such-flag"], "error: Unrecognized options: --no-such-flag\n"),
])
def test_a_value_tyro_cannot_parse_exits_2_with_its_message_in_one_line(module, argv, message, capsys):
    assert exits_2_with(module.parse_args, argv, capsys=capsys) == message


@pytest.mark.parametrize("module", [maml_vpg, fomaml_vpg])
def test_an_unknown_preset_exits_2_with_one_line(module, capsys):
    for argv in (["--preset", "fast"], ["--seed", "3", "--preset=fast"]):
        assert exits_2_with(module.parse_args, argv, capsys=capsys) == (
            "error: --preset 'fast' is not a preset; allowed: default, paper\n")


@pytest.mark.parametrize("module", [maml_vpg, fomaml_vpg])
def test_a_file_that_is_not_a_policy_or_another_network_exits_2_in_one_line(module, tmp_path, capsys):
    (tmp_path / "garbage.pt").write_bytes(b"this is not a torch file")
    torch.save(nav_policy(hidden=16).state_dict(), tmp_path / "small.pt")
    model = nav_policy(hidden=64)
    err = exits_2_with(module.load_policy, model, module.Args(load_model=str(tmp_path / "garbage.pt")), capsys=capsys)
    assert f"--load-model {tmp_path / 'garbage.pt'} is not a saved policy" in err
    err = exits_2_with(module.load_policy, model, module.Args(load_model=str(tmp_path / "small.pt")), capsys=capsys)
    assert f"--load-model {tmp_path / 'small.pt'} does not fit this policy" in err and "size mismatch" in err
    # and a policy of the same shape loads: its parameters become the model's
    same = nav_policy(hidden=64)
    with torch.no_grad():
        for p in same.parameters():
            p.add_(1.0)
    torch.save(same.state_dict(), tmp_path / "same.pt")
    module.load_policy(model, module.Args(load_model=str(tmp_path / "same.pt")))
    for (name, p), q in zip(model.named_parameters(), same.parameters()):
        torch.testing.assert_close(p, q, msg=name)


@pytest.mark.parametrize("module", [maml_vpg, fomaml_vpg])
def test_a_file_named_runs_and_an_unwritable_folder_exit_2_in_one_line(module, tmp_path, capsys):
    (tmp_path / "runs").write_text("a file named runs")
    err = exits_2_with(module.make_run_dir, str(tmp_path / "runs" / "r"), capsys=capsys)
    assert f"cannot create the run folder {tmp_path / 'runs' / 'r'}" in err
    assert (tmp_path / "runs").read_text() == "a file named runs"
    # a folder where runs/ cannot be created (root ignores permissions: /proc refuses it)
    read_only = tmp_path / "read_only"
    read_only.mkdir(mode=0o555)
    parent = read_only if os.geteuid() != 0 else Path("/proc")
    exits_2_with(module.make_run_dir, str(parent / "runs" / "r"), capsys=capsys)
    assert not (parent / "runs").exists()


@pytest.mark.parametrize("script, flags, message", [
    # past tyro and resolve, in __main__: the policy is loaded before the run's folder is made
    ("maml_vpg.py", ["--load-model", "garbage.pt", "--num-iterations", "0"],
     "error: --load-model garbage.pt is not a saved policy"),
    # --preset is read before tyro parses, and the explicit value after it is checked by resolve
    ("fomaml_vpg.py", ["--preset", "paper", "--outer-lr", "inf"], "error: --outer-lr must be a finite number, got inf"),
])
def test_bad_input_through_the_cli_exits_2_with_one_line_and_writes_nothing(script, flags, message, tmp_path):
    (tmp_path / "garbage.pt").write_bytes(b"this is not a torch file")
    result = run_script(script, flags, tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(message), result.stderr
    assert result.stdout == "" and sorted(os.listdir(tmp_path)) == ["garbage.pt"]


@pytest.mark.parametrize("module", [maml_vpg, fomaml_vpg])
def test_trajectory_image_has_a_panel_per_phase_with_nav_envs_legend_under_each(module):
    """eval/trajectories: before | after, each nav_env's map with its legend strip, task i's episode and goal in
    colour i. The panels are render_trajectories' own images, pixel for pixel."""
    args = module.Args(episodes_per_task=2)
    goals = np.array([[2.0, 2.0], [8.0, 3.0]])
    line = np.linspace([9.9, 9.9], [5.0, 5.0], 50)
    positions = np.stack([line, line + 0.5, line - 0.5, line - 1.0], axis=1)  # (steps, task x episode, 2)
    stats = [{"positions": positions}, {"positions": positions[:, ::-1]}]
    image = module.trajectory_image(stats, goals, args)
    height = 320 + nav_env.legend_height(320)
    assert image.shape == (height, 640, 3)
    before = nav_env.render_trajectories([positions[:, 0], positions[:, 2]], goals, obstacles=args.obstacles,
                                         size=320, title="test tasks 1-2, episode 1: before adaptation", legend=True)
    np.testing.assert_array_equal(image[:, :320], before)
    assert (image[320:, 320:] < 200).any()  # the after-panel's legend strip is drawn, not blank
