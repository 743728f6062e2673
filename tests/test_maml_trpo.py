"""maml_trpo.py: the Gaussian policy, conjugate gradient, the TRPO step and the meta-gradient against independent
answers (torch.distributions, explicit solves, classic create_graph autograd task by task), the envs by hand, the
command line, and a run stopped and resumed."""

import importlib.util
import json
import os
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
from torch.distributions import Independent, Normal, kl_divergence

import maml_trpo

ROOT = Path(__file__).resolve().parents[1]
HAS_MUJOCO = importlib.util.find_spec("mujoco") is not None
needs_mujoco = pytest.mark.skipif(not HAS_MUJOCO, reason="mujoco is not installed (pip install -r requirements-mujoco.txt)")


def test_gaussian_log_prob_and_kl_equal_torch_distributions():
    generator = torch.Generator().manual_seed(0)
    mean_p, mean_q, actions = (torch.randn(5, 3, generator=generator, dtype=torch.float64) for _ in range(3))
    log_std_p, log_std_q = (0.5 * torch.randn(5, 3, generator=generator, dtype=torch.float64) for _ in range(2))
    p, q = Independent(Normal(mean_p, log_std_p.exp()), 1), Independent(Normal(mean_q, log_std_q.exp()), 1)
    torch.testing.assert_close(maml_trpo.gaussian_log_prob(mean_p, log_std_p, actions), p.log_prob(actions))
    torch.testing.assert_close(maml_trpo.gaussian_kl(mean_p, log_std_p, mean_q, log_std_q), kl_divergence(p, q))


# --- a small policy on random batches ------------------------------------------------------------------------

LR = 0.05  # the inner step size of the small problem: large enough to matter, small enough for TRPO's quadratic model

def small_problem(tasks=3, samples=40, hidden=6, inner_steps=1, seed=0):
    """A float64 policy (2-d obs and actions) and random inner and validation batches, the validation episodes
    sampled (in distribution) from the adapted policies, whose outputs are `old`."""
    torch.manual_seed(seed)
    model = maml_trpo.Policy(2, 2, hidden).double()
    with torch.no_grad():
        model.log_std.fill_(-0.5)
    generator = torch.Generator().manual_seed(seed)

    def batch():
        mask = (torch.rand(tasks, samples, generator=generator) < 0.8).double()
        mask[:, 0] = 1.0
        return {"obs": torch.randn(tasks, samples, 2, generator=generator, dtype=torch.float64),
                "actions": torch.randn(tasks, samples, 2, generator=generator, dtype=torch.float64),
                "advantages": torch.randn(tasks, samples, generator=generator, dtype=torch.float64) * mask,
                "mask": mask}
    inner, validation = [batch() for _ in range(inner_steps)], batch()
    params = {name: p.detach() for name, p in model.named_parameters()}
    theta = torch.nn.utils.parameters_to_vector(params.values()).detach()

    def outputs_of(vector, tasks=slice(None), first_order=False):  # as maml_trpo.py's: all tasks or some
        chosen = [{key: value[tasks] for key, value in batch.items()} for batch in inner]
        return maml_trpo.adapted_outputs(model, maml_trpo.as_params(vector, params), chosen, validation["obs"][tasks],
                                         LR, first_order)
    with torch.no_grad():
        old = tuple(x.detach() for x in outputs_of(theta))
    return model, inner, validation, theta, outputs_of, old


def classic_task_loss(model, theta, inner, validation, old, task, lr=0.05, first_order=False, kl=False):
    """One task's surrogate loss (or KL) of the adapted policy, as a function of theta, written with plain module
    calls, torch.distributions and torch.autograd.grad(create_graph=True): independent of torch.func."""
    task_model = deepcopy(model)
    names = [name for name, _ in task_model.named_parameters()]
    shapes = [p.shape for _, p in task_model.named_parameters()]
    params = dict(zip(names, (part.view(shape) for part, shape in zip(theta.split([s.numel() for s in shapes]), shapes))))

    def distribution(params, obs):
        x = torch.relu(obs @ params["net.0.weight"].T + params["net.0.bias"])
        x = torch.relu(x @ params["net.2.weight"].T + params["net.2.bias"])
        return Independent(Normal(x @ params["net.4.weight"].T + params["net.4.bias"], params["log_std"].exp()), 1)
    for batch in inner:
        logp = distribution(params, batch["obs"][task]).log_prob(batch["actions"][task])
        loss = -(torch.exp(logp - logp.detach()) * batch["advantages"][task] * batch["mask"][task]).sum()
        loss = loss / batch["mask"][task].sum()
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=not first_order)
        params = {name: params[name] - lr * g for name, g in zip(params, grads)}
    new = distribution(params, validation["obs"][task])
    old_distribution = Independent(Normal(old[0][task], old[1][task].exp()), 1)
    mask = validation["mask"][task]
    if kl:
        return (kl_divergence(old_distribution, new) * mask).sum() / mask.sum()
    ratio = torch.exp(new.log_prob(validation["actions"][task]) - old_distribution.log_prob(validation["actions"][task]))
    return -(ratio * validation["advantages"][task] * mask).sum() / mask.sum()


def classic_mean_over_tasks(model, theta, inner, validation, old, **kwargs):
    if not theta.requires_grad:  # the inner step differentiates the inner loss w.r.t. theta
        theta = theta.detach().requires_grad_(True)
    tasks = len(validation["mask"])
    return sum(classic_task_loss(model, theta, inner, validation, old, task, **kwargs) for task in range(tasks)) / tasks


@pytest.mark.parametrize("inner_steps", [1, 2])
def test_meta_gradient_equals_task_by_task_create_graph_autograd(inner_steps):
    model, inner, validation, theta, outputs_of, old = small_problem(inner_steps=inner_steps)
    outputs, output_vjp = torch.func.vjp(outputs_of, theta)
    loss, gradient = maml_trpo.meta_gradient(outputs, output_vjp, validation, old)
    leaf = theta.clone().requires_grad_(True)
    expected_loss = classic_mean_over_tasks(model, leaf, inner, validation, old)
    (expected,) = torch.autograd.grad(expected_loss, leaf)
    torch.testing.assert_close(loss, expected_loss.detach())
    torch.testing.assert_close(gradient, expected)
    # FOMAML's differs, and equals the classic gradient with the inner step's gradient not differentiated
    outputs, output_vjp = torch.func.vjp(lambda v: outputs_of(v, first_order=True), theta)
    first_order = maml_trpo.meta_gradient(outputs, output_vjp, validation, old)[1]
    (expected_first_order,) = torch.autograd.grad(
        classic_mean_over_tasks(model, leaf, inner, validation, old, first_order=True), leaf)
    torch.testing.assert_close(first_order, expected_first_order)
    assert (first_order - expected).abs().max() > 1e-3


def test_fisher_product_is_the_kl_hessian_through_the_inner_step_and_cg_solves_it():
    model, inner, validation, theta, outputs_of, old = small_problem()
    damping = 0.1  # a well-conditioned system, for conjugate gradient in float64 arithmetic
    hessian = torch.autograd.functional.hessian(
        lambda vector: classic_mean_over_tasks(model, vector, inner, validation, old, kl=True), theta)
    _, _, fisher_product = maml_trpo.linearise(outputs_of, theta, validation["mask"], damping)
    matrix = hessian + damping * torch.eye(len(theta), dtype=torch.float64)
    vector = torch.randn(len(theta), dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(fisher_product(vector), matrix @ vector)
    # conjugate gradient against the explicit solve; in exact arithmetic CG ends within dim iterations
    solution, residual = maml_trpo.conjugate_gradient(fisher_product, vector, iterations=3 * len(theta),
                                                      tolerance=1e-20)
    torch.testing.assert_close(solution, torch.linalg.solve(matrix, vector), rtol=1e-5, atol=1e-6)
    few, residual = maml_trpo.conjugate_gradient(fisher_product, vector, iterations=3)
    assert (few - torch.linalg.solve(matrix, vector)).norm() > 1e-3  # 3 iterations are not the solution yet
    # the returned residual is b - A x of the unfinished solve, so x'Ax (the TRPO step's scale) needs no product
    assert residual.norm() > 1e-3 * vector.norm()
    torch.testing.assert_close(residual, vector - matrix @ few)
    torch.testing.assert_close(few @ (vector - residual), few @ matrix @ few, rtol=1e-10, atol=0)


def test_a_subsampled_fisher_product_is_the_kl_hessian_of_the_chosen_tasks_mean():
    model, inner, validation, theta, outputs_of, old = small_problem(tasks=4)
    damping, chosen = 0.1, torch.tensor([2, 0])
    hessian = torch.autograd.functional.hessian(lambda vector: sum(
        classic_task_loss(model, vector, inner, validation, old, task, kl=True) for task in chosen.tolist()) / 2, theta)
    outputs, _, product = maml_trpo.linearise(outputs_of, theta, validation["mask"], damping, chosen)
    vector = torch.randn(len(theta), dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(product(vector), hessian @ vector + damping * vector)  # their mean KL, not the sum
    _, _, full = maml_trpo.linearise(outputs_of, theta, validation["mask"], damping)
    assert (product(vector) - full(vector)).norm() > 1e-2 * full(vector).norm()
    for output, expected in zip(outputs, outputs_of(theta)):  # the meta-gradient's outputs: still every task's
        torch.testing.assert_close(output, expected)
    # every task, in any order: the full batch's product, bit for bit
    _, _, every = maml_trpo.linearise(outputs_of, theta, validation["mask"], damping, torch.tensor([3, 1, 0, 2]))
    assert torch.equal(every(vector), full(vector))


def test_a_trpo_step_with_a_subsampled_fisher_keeps_the_full_batchs_bound_and_improvement():
    model, inner, validation, theta, outputs_of, old = small_problem(tasks=4)
    max_kl = 0.01
    full, full_stats = maml_trpo.trpo_step(outputs_of, theta, validation, old, max_kl)
    every, every_stats = maml_trpo.trpo_step(outputs_of, theta, validation, old, max_kl, torch.tensor([3, 1, 0, 2]))
    assert torch.equal(every, full) and every_stats == full_stats  # --fisher-fraction 1.0: the full-batch step
    some, stats = maml_trpo.trpo_step(outputs_of, theta, validation, old, max_kl, torch.tensor([1, 3]))
    assert stats["accepted"] == 1.0 and (some - full).norm() > 1e-3 * (full - theta).norm()
    before = classic_mean_over_tasks(model, theta, inner, validation, old)
    after = classic_mean_over_tasks(model, some, inner, validation, old)
    kl = classic_mean_over_tasks(model, some, inner, validation, old, kl=True)  # the line search's: every task's
    assert after < before and 0 < kl <= max_kl
    assert stats["surrogate_after"] == pytest.approx(after.item()) and stats["kl"] == pytest.approx(kl.item())


def paper_args(**overrides):
    return maml_trpo.with_paper_values(maml_trpo.Args(**overrides))


def test_a_trpo_step_improves_the_surrogate_within_the_kl_bound():
    model, inner, validation, theta, outputs_of, old = small_problem()
    max_kl = 0.01
    new_theta, stats = maml_trpo.trpo_step(outputs_of, theta, validation, old, max_kl)
    assert stats["accepted"] == 1.0 and not torch.equal(new_theta, theta)
    before = classic_mean_over_tasks(model, theta, inner, validation, old)
    after = classic_mean_over_tasks(model, new_theta, inner, validation, old)
    kl = classic_mean_over_tasks(model, new_theta, inner, validation, old, kl=True)
    assert after < before and 0 < kl <= max_kl
    assert stats["surrogate_after"] == pytest.approx(after.item()) and stats["kl"] == pytest.approx(kl.item())
    # the first try is sized to the bound by the quadratic model (less the damping): with a tiny bound, near it
    tight_stats = maml_trpo.trpo_step(outputs_of, theta, validation, old, 1e-6)[1]
    assert tight_stats["backtracks"] == 0 and tight_stats["kl"] == pytest.approx(1e-6, rel=0.1)


def test_a_rejected_trpo_step_leaves_the_parameters_unchanged():
    model, inner, validation, theta, outputs_of, old = small_problem()
    no_signal = {**validation, "advantages": torch.zeros_like(validation["advantages"])}  # nothing to improve
    new_theta, stats = maml_trpo.trpo_step(outputs_of, theta, no_signal, old, 0.01)
    assert new_theta is theta and stats["accepted"] == 0.0
    # a line search with no tries accepts nothing either
    unchanged, stats = maml_trpo.trpo_step(outputs_of, theta, validation, old, 0.01, max_backtracks=0)
    assert unchanged is theta and stats["accepted"] == 0.0 and stats["kl"] == 0.0
    assert torch.equal(theta, torch.nn.utils.parameters_to_vector(model.parameters()).detach())


def test_inner_update_is_sgd_on_the_policy_gradient_loss():
    model, inner, validation, theta, outputs_of, old = small_problem(tasks=1)
    params = {name: p.detach() for name, p in model.named_parameters()}
    batch = {key: value[0] for key, value in inner[0].items()}
    adapted = maml_trpo.inner_update(model, params, batch, LR)
    dist = Independent(Normal(*model(batch["obs"])[:1], model.log_std.exp()), 1)
    loss = -(dist.log_prob(batch["actions"]) * batch["advantages"] * batch["mask"]).sum() / batch["mask"].sum()
    grads = torch.autograd.grad(loss, list(model.parameters()))
    for (name, p), g in zip(model.named_parameters(), grads):
        torch.testing.assert_close(adapted[name], p.detach() - LR * g)


def test_advantages_are_the_discounted_return_minus_rllabs_linear_baseline_normalised():
    rng = np.random.default_rng(1)
    tasks, episodes, horizon, gamma = 2, 3, 6, 0.9
    obs = torch.as_tensor(rng.uniform(-12, 12, (tasks, episodes, horizon, 2)))
    lengths = rng.integers(2, horizon + 1, (tasks, episodes))
    mask = torch.as_tensor(np.arange(horizon) < lengths[..., None], dtype=torch.float64)
    rewards = torch.as_tensor(rng.normal(size=(tasks, episodes, horizon))) * mask
    advantages = maml_trpo.compute_advantages(obs, rewards, mask, gamma).double()
    for task in range(tasks):  # rllab's LinearFeatureBaseline fitted by numpy, returns by their recursion
        features, targets = [], []
        for e in range(episodes):
            for t in range(lengths[task, e]):
                o = np.clip(obs[task, e, t].numpy(), -10, 10)
                features.append(np.concatenate([o, o**2, [t / 100, (t / 100) ** 2, (t / 100) ** 3, 1.0]]))
                targets.append(sum(gamma ** (u - t) * rewards[task, e, u].item() for u in range(t, lengths[task, e])))
        features, targets = np.array(features), np.array(targets)
        coef = np.linalg.solve(features.T @ features + 1e-5 * np.eye(features.shape[1]), features.T @ targets)
        raw = targets - features @ coef
        expected = (raw - raw.mean()) / (raw.std() + 1e-8)
        np.testing.assert_allclose(advantages[task][mask[task] > 0].numpy(), expected, rtol=1e-4, atol=1e-4)
        assert torch.all(advantages[task][mask[task] == 0] == 0)


# --- the envs by hand ----------------------------------------------------------------------------------------

def test_point_env_dynamics_reward_and_done_by_hand():
    env = maml_trpo.PointNav()
    goals = np.array([[0.25, -0.1], [0.0, 0.0], [0.005, 0.3]])
    assert np.array_equal(env.reset(goals, None), np.zeros((3, 2)))
    obs, reward, done = env.step(np.array([[0.5, -3.0], [0.05, 0.02], [0.05, 0.0]]))
    # moves of 0.1 * clip(a, -1, 1): (0.05, -0.1), (0.005, 0.002), (0.005, 0)
    np.testing.assert_allclose(obs, [[0.05, -0.1], [0.005, 0.002], [0.005, 0.0]])
    np.testing.assert_allclose(reward, [-np.hypot(0.2, 0.0), -np.hypot(0.005, 0.002), -0.3])
    assert done.tolist() == [False, True, False]  # within 0.01 of the goal on both axes; dy = 0.3 is not
    obs, reward, done = env.step(np.array([[2.0, 0.0], [0.0, 0.0], [0.0, 1.0]]))
    np.testing.assert_allclose(obs[0], [0.15, -0.1])
    assert reward[0] == pytest.approx(-0.1) and not done[0]
    tasks = env.sample_tasks(1000, np.random.default_rng(0))
    assert tasks.min() >= -0.5 and tasks.max() <= 0.5 and tasks.shape == (1000, 2)


@needs_mujoco
@pytest.mark.parametrize("kind, frame_skip", [("cheetah-vel", 1), ("cheetah-dir", 5)])
def test_cheetah_steps_like_gymnasiums_halfcheetah_v5_with_the_papers_rewards_by_hand(kind, frame_skip):
    import gymnasium
    env = maml_trpo.Cheetah(kind, frame_skip)
    rng = np.random.default_rng(3)
    tasks = np.array([[1.5], [-1.0]]) if kind == "cheetah-dir" else np.array([[1.5], [0.3]])
    obs = env.reset(tasks, rng)
    references = []
    for i in range(2):  # gymnasium's own env, started from the same state
        reference = gymnasium.make("HalfCheetah-v5", frame_skip=frame_skip).unwrapped
        reference.reset(seed=0)
        reference.set_state(env.state[i, env.qpos], env.state[i, env.qvel])
        np.testing.assert_allclose(obs[i], reference._get_obs())
        references.append(reference)
    for _ in range(10):
        actions = rng.normal(scale=1.5, size=(2, 6))  # some beyond the ctrl range [-1, 1]: clipped
        obs, reward, done = env.step(actions)
        assert not done.any()
        for i, reference in enumerate(references):
            ref_obs, _, _, _, info = reference.step(np.clip(actions[i], -1, 1))
            np.testing.assert_allclose(obs[i], ref_obs, rtol=1e-6, atol=1e-8)
            velocity = info["x_velocity"]  # (x after - x before) / dt of MuJoCo's root
            progress = -abs(velocity - tasks[i, 0]) if kind == "cheetah-vel" else tasks[i, 0] * velocity
            expected = progress - 0.05 * np.sum(np.clip(actions[i], -1, 1) ** 2)
            assert reward[i] == pytest.approx(expected, rel=1e-6, abs=1e-8)
    velocities = env.sample_tasks(500, np.random.default_rng(0))
    if kind == "cheetah-vel":
        assert velocities.min() >= 0 and velocities.max() <= 2
    else:
        assert set(np.unique(velocities)) == {-1.0, 1.0}


# --- the command line -----------------------------------------------------------------------------------------

TINY = ["--num-iterations", "2", "--meta-batch-size", "2", "--episodes-per-task", "2", "--num-test-tasks", "2",
        "--horizon", "10", "--hidden-size", "8", "--eval-inner-steps", "2"]


def run_script(flags, cwd):
    return subprocess.run([sys.executable, str(ROOT / "maml_trpo.py"), *flags], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def read_summary(cwd) -> dict:
    (path,) = list(Path(cwd).glob("runs/*/summary.json"))
    return json.loads(path.read_text())


@pytest.mark.parametrize("env", ["point-nav", "cheetah-vel", "cheetah-dir"])
def test_a_short_run_of_each_env_through_the_cli(env, tmp_path):
    if env != "point-nav" and not HAS_MUJOCO:
        pytest.skip("mujoco is not installed (pip install -r requirements-mujoco.txt)")
    flags = TINY + ["--env", env, "--save-model"] + (["--frame-skip", "5"] if env == "cheetah-dir" else [])
    result = run_script(flags, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "iteration 2/2" in result.stdout and "held-out at iteration 2" in result.stdout
    summary = read_summary(tmp_path)
    assert len(summary["return_after_steps"]) == 3 and len(summary["test_tasks"]) == 2
    assert summary["args"]["inner_lr"] == maml_trpo.PAPER[env]["inner_lr"]  # None became the paper's value
    assert summary["args"]["max_kl"] == maml_trpo.PAPER[env]["max_kl"]
    assert 0 < summary["env_steps"] <= 2 * 2 * 2 * 2 * 10
    if env != "point-nav":  # no episode ends early
        assert summary["env_steps"] == 2 * 2 * 2 * 2 * 10
    if env != "point-nav":
        return
    model_path = tmp_path / summary["model_path"]  # the saved policy, scored by a run of 0 iterations
    (tmp_path / "evaluate").mkdir()
    reloaded = run_script(TINY[2:] + ["--num-iterations", "0", "--load-model", str(model_path)], tmp_path / "evaluate")
    assert reloaded.returncode == 0, reloaded.stderr
    assert read_summary(tmp_path / "evaluate")["env_steps"] == 0


def test_pretrained_and_oracle_modes_run(tmp_path):
    result = run_script(TINY + ["--inner-steps", "0", "--see-task"], tmp_path)
    assert result.returncode == 0, result.stderr
    summary = read_summary(tmp_path)
    assert summary["args"]["inner_steps"] == 0 and len(summary["return_after_steps"]) == 3
    assert 0 < summary["env_steps"] <= 2 * 2 * 2 * 10  # one batch per task and iteration


def shown_defaults(capsys) -> dict:
    with pytest.raises(SystemExit) as exit:
        tyro.cli(maml_trpo.Args, args=["--help"])
    assert exit.value.code == 0
    text = " ".join(re.sub("[│╭╮╰╯─]", " ", capsys.readouterr().out).split())
    flag = r"(--[a-z][a-z-]*)(?:, --no-[a-z-]+| [A-Z]+| \{[^}]*\}\S*)"
    return dict(re.findall(flag + r" .*?\(default: ([^)]*)\)", text))


def test_help_shows_every_flag_with_its_real_default(capsys):
    shown = shown_defaults(capsys)
    assert len(shown) == len(maml_trpo.Args.__dataclass_fields__)
    assert {flag: shown[flag] for flag in ("--env", "--inner-steps", "--hidden-size", "--gamma", "--frame-skip")} == {
        "--env": "point-nav", "--inner-steps": "1", "--hidden-size": "100", "--gamma": "0.99", "--frame-skip": "1"}
    # None only where the flag's help says what it means: the env's paper value, or no file / run / entity
    nones = {flag for flag, value in shown.items() if value == "None"}
    assert nones == {"--wandb-entity", "--load-model", "--resume",
                     *[f"--{name.replace('_', '-')}" for name in maml_trpo.PAPER["point-nav"]]}


@pytest.mark.parametrize("values, message", [
    (dict(inner_lr=-0.1), "--inner-lr must be a finite number > 0, got -0.1"),
    (dict(max_kl=float("nan")), "--max-kl must be a finite number > 0, got nan"),
    (dict(meta_batch_size=0), "--meta-batch-size must be > 0, got 0"),
    (dict(horizon=0), "--horizon must be > 0, got 0"),
    (dict(gamma=1.5), "--gamma must be in [0, 1], got 1.5"),
    (dict(fisher_fraction=0.0), "--fisher-fraction must be in (0, 1], got 0.0"),
    (dict(fisher_fraction=1.5), "--fisher-fraction must be in (0, 1], got 1.5"),
    (dict(frame_skip=5), "--frame-skip must be 1 with --env point-nav, got 5"),
    (dict(num_test_tasks=1), "--num-test-tasks must be > 1 (the standard error needs two), got 1"),
    (dict(load_model="no/such/file.pt"), "--load-model must be an existing file, got 'no/such/file.pt'"),
    (dict(seed=-1), "--seed must be in [0, 2**32), got -1"),
    (dict(exp_name="a/b"), "--exp-name must be a name without '/', got 'a/b'"),
    (dict(wandb_entity="me"), "--wandb-entity must be left alone without --track, got 'me'"),
])
def test_bad_values_exit_2_with_one_line_naming_the_flag(values, message, capsys):
    with pytest.raises(SystemExit) as exit:
        maml_trpo.check(paper_args(**values))
    assert exit.value.code == 2
    assert capsys.readouterr().err == f"error: {message}\n"


def test_bad_input_through_the_cli_exits_2_and_writes_nothing(tmp_path):
    typo = run_script(["--inner-step", "3"], tmp_path)
    assert typo.returncode == 2 and "--inner-steps" in typo.stderr  # tyro's own message
    bad = run_script(["--max-kl", "-1"], tmp_path)
    assert bad.returncode == 2 and bad.stderr == "error: --max-kl must be a finite number > 0, got -1.0\n"
    (tmp_path / "garbage.pt").write_bytes(b"not a torch file")
    garbage = run_script(["--load-model", "garbage.pt", "--num-iterations", "0"], tmp_path)
    assert garbage.returncode == 2 and garbage.stderr.startswith("error: --load-model must be a maml_trpo.cleanrl_model")
    assert sorted(os.listdir(tmp_path)) == ["garbage.pt"]


def test_a_diverging_run_exits_3_with_one_line(tmp_path):
    result = run_script(TINY + ["--inner-lr", "1e38"], tmp_path)  # the first inner step overflows the policy
    assert result.returncode == 3, result.stderr
    assert result.stderr.count("\n") == 1 and "the run diverged" in result.stderr
    assert not list(tmp_path.glob("runs/*/summary.json"))


TIME_FIELDS = {"wall_time_s", "train_time_s", "sps", "median_iteration_time_s", "median_sampling_time_s",
               "median_env_time_s", "median_trpo_time_s"}


def test_killed_after_a_checkpoint_and_resumed_ends_like_the_run_left_alone(tmp_path):
    flags = TINY + ["--num-iterations", "4", "--checkpoint-every", "1"]
    alone, killed = tmp_path / "alone", tmp_path / "killed"
    alone.mkdir(), killed.mkdir()
    assert run_script(flags, alone).returncode == 0
    process = subprocess.Popen([sys.executable, str(ROOT / "maml_trpo.py"), *flags], cwd=killed,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while not list(killed.glob("runs/*/checkpoint.pt")):
        assert process.poll() is None and time.time() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    (run_dir,) = killed.glob("runs/*")
    assert not (run_dir / "summary.json").exists()
    resumed = run_script(["--resume", str(run_dir.relative_to(killed))], killed)
    assert resumed.returncode == 0, resumed.stderr

    def without_time(path):
        return {k: v for k, v in json.loads((path / "summary.json").read_text()).items() if k not in TIME_FIELDS}
    (alone_dir,) = alone.glob("runs/*")
    assert without_time(run_dir) == without_time(alone_dir)
