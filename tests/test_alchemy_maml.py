"""alchemy_maml.py: meta-gradients against exact answers and classic autograd, advantages against their
recursion, rollouts against alchemy_env's replay, a short meta-training run against the initial policy, the
check table, the command line end to end (both backends, dm_alchemy's evaluation set), and runs that survive a
kill (--resume) or stop when they diverge."""

import dataclasses
import importlib.util
import json
import os
import random
import re
import runpy
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import tyro
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from meta_gradient_oracles import (assert_first_order_matches_per_task_gradients, assert_meta_gradient_matches_classic,
                                   estimated_meta_gradients, exact_meta_gradient, task_slice)

import alchemy_env
import alchemy_maml

ROOT = Path(__file__).resolve().parents[1]
needs_dm_alchemy = pytest.mark.skipif(
    importlib.util.find_spec("dm_alchemy") is None,
    reason=f"DeepMind's dm_alchemy is not installed ({alchemy_env.DM_ALCHEMY_INSTALL}; .ci/run installs it)",
)


# --- the bandit of tests/meta_gradient_oracles.py: the script's pipeline against the exact meta-gradient -------


@pytest.mark.parametrize("first_order", [False, True])
def test_meta_gradient_matches_the_closed_form_on_a_bandit(first_order):
    def meta_gradient(model, params, adapted, inner_batches, validation, lr):
        return alchemy_maml.meta_gradient(model, params, adapted, inner_batches, validation, lr,
                                          first_order=first_order)

    adapt = torch.func.vmap(alchemy_maml.inner_update, in_dims=(None, 0, 0, None))  # its inner step is per task
    estimates = estimated_meta_gradients(adapt, meta_gradient, 1, groups=10, tasks=400, samples=300)
    mean, sem = estimates.mean(0), estimates.std(0) / np.sqrt(len(estimates))
    right, other = exact_meta_gradient(1, first_order), exact_meta_gradient(1, not first_order)
    assert ((right - other).abs() > 10 * sem).any()  # the test can tell MAML from FOMAML
    assert torch.all((mean - right).abs() < 5 * sem + 2e-3), (mean, right, sem)


# --- the real Alchemy policy on random batches, against plain autograd, one task at a time ------------


def alchemy_policy(hidden=16, see_chemistry=False):
    space = alchemy_env.SymbolicAlchemyVectorEnv(1, see_chemistry=see_chemistry).single_observation_space
    torch.manual_seed(0)
    return alchemy_maml.Policy(space.shape[0], alchemy_env.NUM_ACTIONS, hidden, space.low, space.high)


def random_batch(tasks: int, samples: int, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    mask = (torch.rand(tasks, samples, generator=generator) < 0.8).float()
    return {
        "obs": torch.rand(tasks, samples, alchemy_env.OBS_SIZE, generator=generator) * 3 - 1,
        "actions": torch.randint(0, alchemy_env.NUM_ACTIONS, (tasks, samples), generator=generator),
        "advantages": torch.randn(tasks, samples, generator=generator) * mask,
        "mask": mask,
    }


def masked_mean(x, batch):
    return (x * batch["advantages"] * batch["mask"]).sum() / batch["mask"].sum()


@pytest.mark.parametrize("num_steps", [1, 2])
def test_maml_meta_gradient_equals_a_per_task_loop_with_create_graph(num_steps):
    """torch.func grad-of-vmap against classic higher-order autograd, one task at a time, LVC written out."""
    model, tasks, lr = alchemy_policy(), 3, 0.7
    params = dict(model.named_parameters())
    inner_batches = [random_batch(tasks, 40, seed=10 + k) for k in range(num_steps)]
    validation = random_batch(tasks, 40, seed=99)
    expected = assert_meta_gradient_matches_classic(
        lambda params, inner, validation, lr: alchemy_maml.meta_gradient(model, params, None, inner, validation, lr),
        model, inner_batches, validation, lr)
    # and the second-order terms matter here: FOMAML's answer is measurably different
    adapted = {name: p.detach().expand((tasks,) + p.shape) for name, p in params.items()}
    for batch in inner_batches:
        adapted = torch.func.vmap(alchemy_maml.inner_update, in_dims=(None, 0, 0, None))(model, adapted, batch, lr)
    first_order, _ = alchemy_maml.meta_gradient(model, params, adapted, inner_batches, validation, lr, first_order=True)
    assert any(not torch.allclose(first_order[name], expected[name], rtol=1e-2, atol=1e-4) for name in params)


def test_first_order_is_the_sum_of_plain_policy_gradients_at_the_adapted_parameters():
    model, tasks = alchemy_policy(), 3
    params = dict(model.named_parameters())
    validation = random_batch(tasks, 40, seed=2)
    torch.manual_seed(1)
    adapted = {name: p.detach() + 0.1 * torch.randn((tasks,) + p.shape) for name, p in params.items()}
    grads, loss = alchemy_maml.meta_gradient(model, params, adapted, [], validation, 0.1, first_order=True)

    def task_loss(task_model, batch):
        logp = torch.log_softmax(task_model(batch["obs"]), -1).gather(-1, batch["actions"][:, None]).squeeze(-1)
        return -masked_mean(logp, batch)

    assert_first_order_matches_per_task_gradients(grads, loss, model, adapted, validation, task_loss)


def test_masked_log_prob_is_the_softmax_over_the_valid_actions_and_masked_logits_get_no_gradient():
    model, tasks = alchemy_policy(), 2
    params = dict(model.named_parameters())
    batch = random_batch(tasks, 30, seed=4)
    generator = torch.Generator().manual_seed(5)
    action_mask = torch.rand(tasks, 30, alchemy_env.NUM_ACTIONS, generator=generator) < 0.5
    action_mask[..., 0] = True  # the no-op is always valid
    action_mask[..., 7] = False  # an action no sample may choose
    batch["actions"] = torch.where(action_mask.gather(-1, batch["actions"][..., None]).squeeze(-1), batch["actions"], 0)
    batch["action_mask"] = action_mask
    for task in range(tasks):
        one = task_slice(batch, task)
        logits = model(one["obs"]).detach()
        for i in range(30):  # log pi(a) = logit_a - log sum over the valid actions only, written out
            valid = one["action_mask"][i]
            expected = logits[i, one["actions"][i]] - torch.logsumexp(logits[i][valid], 0)
            got = alchemy_maml.log_prob(model, params, one["obs"][i : i + 1], one["actions"][i : i + 1],
                                        one["action_mask"][i : i + 1])
            assert got.item() == pytest.approx(expected.item(), abs=1e-5)
    # action 7 is never valid: its output bias gets no gradient, from either loss or the meta-gradient
    bias = [name for name in params if name.endswith("bias")][-1]
    adapted = {name: p.detach().expand((tasks,) + p.shape) for name, p in params.items()}
    for first_order in (False, True):
        grads, _ = alchemy_maml.meta_gradient(model, params, adapted, [batch], batch, 1.0, first_order=first_order)
        assert grads[bias][7].item() == 0.0 and grads[bias].abs().sum() > 0
    unmasked = {key: value for key, value in batch.items() if key != "action_mask"}
    grads, _ = alchemy_maml.meta_gradient(model, params, adapted, [unmasked], unmasked, 1.0)
    assert grads[bias][7].item() != 0.0  # without the mask it would move: the check above can fail


# --- advantages with returns that stop at the end of each trial ---------------------------------------


def test_segmented_discount_matrix_by_hand():
    m = alchemy_maml.discount_matrix(0.5, 4, segment=2)
    expected = torch.tensor([[1.0, 0.5, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0.5], [0, 0, 0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(m, expected)


@pytest.mark.parametrize("segment", [None, 3])
def test_advantages_equal_the_gae_recursion_with_the_fitted_baseline(segment):
    rng = np.random.default_rng(1)
    tasks, episodes, horizon, gamma, lam = 2, 3, 9, 0.9, 0.8
    obs = torch.as_tensor(rng.uniform(-1, 1, (tasks, episodes, horizon, 2)))
    rewards = torch.as_tensor(rng.normal(size=(tasks, episodes, horizon)))
    mask = torch.ones(tasks, episodes, horizon, dtype=torch.float64)
    advantages = alchemy_maml.compute_advantages(obs, rewards, mask, gamma, lam, False, segment).double()

    # independent: returns and GAE by backward loops that restart at every segment end, baseline by lstsq
    ends = set(range(horizon - 1, -1, -(segment or horizon)))  # last step of each segment
    t_norm = np.arange(horizon) / horizon
    s_norm = (np.arange(horizon) % segment) / segment if segment else t_norm
    for task in range(tasks):
        feats, fitted_returns = [], []
        for e in range(episodes):
            ret, returns = 0.0, np.zeros(horizon)
            for t in reversed(range(horizon)):
                ret = rewards[task, e, t].item() + (0.0 if t in ends else gamma * ret)
                returns[t] = ret
            for t in range(horizon):
                o = obs[task, e, t].numpy()
                feats.append(np.concatenate([o, o**2, [t_norm[t], t_norm[t] ** 2, t_norm[t] ** 3, s_norm[t],
                                                        s_norm[t] ** 2, s_norm[t] ** 3, 1.0]]))
                fitted_returns.append(returns[t])
        feats, fitted_returns = np.array(feats), np.array(fitted_returns)
        coef = np.linalg.solve(feats.T @ feats + 1e-5 * np.eye(feats.shape[1]), feats.T @ fitted_returns)
        values = (feats @ coef).reshape(episodes, horizon)
        for e in range(episodes):
            gae = 0.0
            for t in reversed(range(horizon)):
                next_value = 0.0 if t in ends else values[e, t + 1]
                delta = rewards[task, e, t].item() + gamma * next_value - values[e, t]
                gae = delta + (0.0 if t in ends else gamma * lam * gae)
                assert advantages[task, e, t].item() == pytest.approx(gae, rel=1e-4, abs=1e-4), (task, e, t)


# --- rollouts ---------------------------------------------------------------------------------


class RolloutArgs:
    episodes_per_task, gamma, gae_lambda, norm_adv, per_trial_returns, mask_actions = 2, 1.0, 1.0, False, True, False


def test_rollout_matches_alchemy_env_replay_of_the_same_chemistry_items_and_actions():
    level = alchemy_env.STANDARD_LEVEL
    chemistries = alchemy_env.seeded_chemistries(level, np.array([7, 8, 9]))
    envs = alchemy_env.SymbolicAlchemyVectorEnv(6, autoreset_mode="Disabled")
    envs.reset(seed=0)
    model = alchemy_policy()
    torch.manual_seed(3)
    task_params = {name: p.detach().expand((3,) + p.shape) for name, p in model.named_parameters()}
    batch, stats = alchemy_maml.rollout(envs, model, task_params, chemistries, RolloutArgs, torch.device("cpu"))
    items = envs.episode_items
    assert stats["env_steps"] == 6 * 200 and batch["obs"].shape == (3, 400, alchemy_env.OBS_SIZE)
    for task in range(3):
        for e in range(2):
            env_index = task * 2 + e
            actions = batch["actions"][task, e * 200 : (e + 1) * 200].numpy()
            chemistry = {key: value[task] for key, value in chemistries.items() if key != "seed"}
            episode_items = {key: value[env_index] for key, value in items.items()}
            observations, rewards, _ = alchemy_env.replay(chemistry, episode_items, actions)
            np.testing.assert_array_equal(batch["obs"][task, e * 200 : (e + 1) * 200].numpy(), observations[:200])
            assert stats["scores"][task, e] == pytest.approx(rewards.sum())
    assert stats["scores"].std() > 0  # a random policy's scores vary: the comparison had something to see


def test_masked_rollout_chooses_only_valid_actions_and_carries_their_mask():
    chemistries = alchemy_env.seeded_chemistries(alchemy_env.STANDARD_LEVEL, np.array([7, 8, 9]))
    envs = alchemy_env.SymbolicAlchemyVectorEnv(6, autoreset_mode="Disabled")
    envs.reset(seed=0)
    model = alchemy_policy()
    torch.manual_seed(3)
    task_params = {name: p.detach().expand((3,) + p.shape) for name, p in model.named_parameters()}

    class MaskedArgs(RolloutArgs):
        mask_actions = True

    batch, stats = alchemy_maml.rollout(envs, model, task_params, chemistries, MaskedArgs, torch.device("cpu"))
    expected_mask = alchemy_env.valid_action_mask(batch["obs"].numpy())
    np.testing.assert_array_equal(batch["action_mask"].numpy(), expected_mask)
    assert expected_mask.mean() < 0.6  # most actions are invalid most of the time: an unmasked policy picks them
    chosen_valid = np.take_along_axis(expected_mask, batch["actions"].numpy()[..., None], -1)
    assert chosen_valid.all()
    # the scores are still the env's: replay the masked actions
    items = envs.episode_items
    for task in range(3):
        chemistry = {key: value[task] for key, value in chemistries.items() if key != "seed"}
        episode_items = {key: value[task * 2] for key, value in items.items()}
        _, rewards, _ = alchemy_env.replay(chemistry, episode_items, batch["actions"][task, :200].numpy())
        assert stats["scores"][task, 0] == pytest.approx(rewards.sum())


# --- meta-training with the script's own pieces: it learns -------------------------------------------


def test_a_few_meta_iterations_on_one_chemistry_beat_the_initial_policy_by_many_standard_errors():
    """Algorithm 3's loop, written with the script's functions (sample_and_adapt, meta_gradient, Adam) on one
    chemistry: after 10 meta-iterations the policy scores far above its initial, near-uniform self. A sign
    error or a lost term in the meta-gradient leaves the score where it started."""
    args = alchemy_maml.Args(meta_batch_size=2, episodes_per_task=10, hidden_size=32, outer_lr=0.05)
    chemistry = alchemy_env.seeded_chemistries(args.level, np.array([5]))
    chemistries = {key: np.repeat(value, args.meta_batch_size, axis=0) for key, value in chemistry.items()}
    envs = alchemy_maml.make_envs(args, args.meta_batch_size * args.episodes_per_task, seed=0)
    space = envs.single_observation_space
    torch.manual_seed(1)
    model = alchemy_maml.Policy(space.shape[0], alchemy_env.NUM_ACTIONS, args.hidden_size, space.low, space.high)
    params = dict(model.named_parameters())
    optimizer = torch.optim.Adam(params.values(), lr=args.outer_lr)
    cpu = torch.device("cpu")

    def score():  # the 20 episodes' mean score with the meta-parameters, and its standard error
        _, stats, _ = alchemy_maml.sample_and_adapt(envs, model, params, chemistries, 0, args, cpu)
        scores = stats[0]["scores"].ravel()
        return scores.mean(), scores.std(ddof=1) / np.sqrt(len(scores))

    before, before_sem = score()
    for _ in range(10):
        batches, _, adapted = alchemy_maml.sample_and_adapt(envs, model, params, chemistries, 1, args, cpu)
        grads, _ = alchemy_maml.meta_gradient(model, params, adapted, batches[:-1], batches[-1], args.inner_lr)
        for name, p in params.items():
            p.grad = grads[name]
        torch.nn.utils.clip_grad_norm_(params.values(), args.max_grad_norm)
        optimizer.step()
    after, after_sem = score()
    assert after - before > 3 * np.hypot(before_sem, after_sem), (before, before_sem, after, after_sem)


# --- the check table, in-process --------------------------------------------------------------------


def rejected(capsys, **values) -> str:
    """check(Args(**values)) exits 2 with one line on stderr; that line."""
    with pytest.raises(SystemExit) as exit:
        alchemy_maml.check(alchemy_maml.Args(**values))
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


@pytest.mark.parametrize("values, message", [
    (dict(seed=-1), "--seed must be in [0, 2**32), got -1"),
    (dict(test_seed=2**32), "--test-seed must be in [0, 2**32), got 4294967296"),
    (dict(outer_lr=float("inf")), "--outer-lr must be in (0, 1e37), got inf"),
    (dict(inner_lr=float("nan")), "--inner-lr must be a finite number > 0, got nan"),
    (dict(max_grad_norm=float("nan")), "--max-grad-norm must be a finite number >= 0, got nan"),
    (dict(inner_lr=-0.1), "--inner-lr must be a finite number > 0, got -0.1"),
    (dict(episodes_per_task=0), "--episodes-per-task must be > 0, got 0"),
    (dict(torch_threads=0), "--torch-threads must be > 0, got 0"),
    (dict(gae_lambda=1.5), "--gae-lambda must be in [0, 1], got 1.5"),
    (dict(checkpoint_every=-1), "--checkpoint-every must be >= 0, got -1"),
    (dict(num_iterations=-1), "--num-iterations must be >= 0, got -1"),
    (dict(inner_steps=2, eval_inner_steps=1), "--eval-inner-steps must be >= --inner-steps, got 1"),
    (dict(level="alchemy/nope"), "--level must be one of alchemy_env.LEVELS, got 'alchemy/nope'"),
    (dict(exp_name="a/b"), "--exp-name must be a name without '/', got 'a/b'"),
    (dict(wandb_entity="me"), "--wandb-entity must be left alone without --track, got 'me'"),
    (dict(eval_episodes=5), "--eval-episodes must be in [1, 1000], with --eval-set dm_alchemy, got 5"),
    (dict(load_model="no/such.pt"), "--load-model must be an existing file, got 'no/such.pt'"),
    (dict(resume="runs/r", seed=3), "--resume must be given alone (or with --torch-threads)"),
])
def test_bad_values_exit_2_with_one_line_naming_them(values, message, capsys):
    assert message in rejected(capsys, **values)


def test_runs_being_a_file_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").write_text("not a folder")
    assert "runs must be a folder" in rejected(capsys)


@needs_dm_alchemy
@pytest.mark.parametrize("episodes", [0, 1001])
def test_eval_episodes_out_of_range_exit_2(episodes, capsys):
    err = rejected(capsys, eval_set="dm_alchemy", eval_episodes=episodes)
    assert f"--eval-episodes must be in [1, 1000], with --eval-set dm_alchemy, got {episodes}" in err


@pytest.mark.parametrize("values", [dict(backend="dm_alchemy"), dict(eval_set="dm_alchemy")])
def test_dm_alchemy_flags_without_the_package_exit_2_naming_the_install(values, capsys, monkeypatch):
    # None in sys.modules makes every import (and find_spec) of the package fail, as where it is not installed
    for name in [name for name in sys.modules if name == "dm_alchemy" or name.startswith("dm_alchemy.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "dm_alchemy", None)
    err = rejected(capsys, **values)
    assert alchemy_env.DM_ALCHEMY_INSTALL in err and f"--{next(iter(values)).replace('_', '-')} must be" in err


def test_a_flag_tyro_cannot_parse_exits_2_with_tyros_own_hint(tmp_path):
    result = run_script(["--inner-step", "3"], tmp_path)
    assert result.returncode == 2 and "--inner-steps" in result.stderr  # tyro's "Perhaps you meant" line
    assert not (tmp_path / "runs").exists()


def test_help_shows_every_flag_with_its_real_default_and_one_line_docstrings(capsys):
    with pytest.raises(SystemExit) as exit:
        tyro.cli(alchemy_maml.Args, args=["--help"])
    assert exit.value.code == 0
    text = " ".join(capsys.readouterr().out.replace("│", " ").split())  # unwrapped, without tyro's box
    for field in dataclasses.fields(alchemy_maml.Args):
        if field.name == "level":  # a name longer than a line, which the box breaks mid-word
            continue
        # the flag, its help up to the first "(default: ...)", and that default the dataclass's own
        flag = f"--{field.name.replace('_', '-')}"
        match = re.search(rf"{flag}\b((?:(?!\(default: ).)*)\(default: {re.escape(str(field.default))}\)", text)
        assert match, field.name
        if field.default is None:  # None is a value with a meaning, which the help states
            assert "None: " in match.group(1), (field.name, match.group(1))
    source = (ROOT / "alchemy_maml.py").read_text()
    args_source = source[source.index("class Args:"):source.index("def layer_init")]
    docstrings = [line for line in args_source.splitlines() if line.strip().startswith('"""')]
    assert len(docstrings) == len(dataclasses.fields(alchemy_maml.Args))
    assert all(line.strip().endswith('"""') and line.count('"""') == 2 for line in docstrings)  # one line each


def policy_file(tmp_path, hidden: int, see_chemistry: bool) -> Path:
    path = tmp_path / f"policy_{hidden}_{see_chemistry}.cleanrl_model"
    torch.save(alchemy_policy(hidden, see_chemistry).state_dict(), path)
    return path


def test_load_model_rejects_what_is_not_a_saved_policy_of_this_shape_in_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "garbage.pt").write_bytes(b"this is not a torch file")
    cases = [(tmp_path / "garbage.pt", "Error)"),  # the type of torch.load's error
             (policy_file(tmp_path, 16, True), "size mismatch"),  # trained with the chemistry seen
             (policy_file(tmp_path, 32, False), "size mismatch")]
    for path, message in cases:
        code, err = run_in_process(TINY + ["--load-model", str(path)], tmp_path, monkeypatch, capsys)  # hidden 16
        assert code == 2, err
        (line,) = err.strip().splitlines()
        assert line.startswith("error: --load-model must be a alchemy_maml.cleanrl_model of this --hidden-size")
        assert f"got {str(path)!r}" in line and message in line, line
    assert not (tmp_path / "runs").exists()


# --- the command line, end to end --------------------------------------------------------------------

TINY = ["--num-iterations", "2", "--meta-batch-size", "2", "--episodes-per-task", "2", "--num-test-tasks", "2",
        "--eval-every", "1", "--hidden-size", "16"]


def run_in_process(flags, cwd, monkeypatch, capsys) -> tuple[int, str]:
    """The script's __main__ in this process (no interpreter start-up), for runs that stop before training: its exit
    code and stderr."""
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["alchemy_maml.py", *flags])
    with pytest.raises(SystemExit) as exit:
        runpy.run_path(str(ROOT / "alchemy_maml.py"), run_name="__main__")
    return exit.value.code, capsys.readouterr().err


def run_script(flags, cwd, env=None):
    return subprocess.run([sys.executable, str(ROOT / "alchemy_maml.py"), *flags], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env=env)


def read_summary(cwd) -> dict:
    (path,) = list(Path(cwd).glob("runs/*/summary.json"))
    return json.loads(path.read_text())


def logged_scalars(cwd) -> dict[str, dict[int, float]]:
    """The run's TensorBoard scalars: tag -> {step: value}."""
    (run_dir,) = list(Path(cwd).glob("runs/*"))
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


def check_summary(summary, logged, inner_steps, eval_steps, iterations=2, meta_batch=2, episodes=2):
    """summary.json against the counts its flags imply, against itself, and against the TensorBoard log."""
    scores, final = summary["score_after_steps"], "eval_set" if summary["eval_set"] == "dm_alchemy" else "eval"
    assert len(scores) == len(summary["score_sem_after_steps"]) == eval_steps + 1
    assert summary["pre_adaptation_score"] == scores[0] and summary["post_adaptation_score"] == scores[inner_steps]
    assert summary["adaptation_gain"] == pytest.approx(scores[inner_steps] - scores[0])
    # the mean of the paired differences is the difference of the means
    assert summary["post_minus_heuristic"] == pytest.approx(scores[inner_steps] - summary["heuristic_score"])
    # iterations x chemistries x episodes x (N inner + 1 validation) batches, 200 steps each
    per_iteration = meta_batch * episodes * (inner_steps + 1)
    assert summary["iterations"] == iterations and summary["train_episodes"] == iterations * per_iteration
    assert summary["env_steps"] == 200 * summary["train_episodes"]
    assert logged["charts/train_episodes"] == {i: i * per_iteration for i in range(1, iterations + 1)}
    assert logged["charts/env_steps"] == {i: 200 * i * per_iteration for i in range(1, iterations + 1)}
    # the final evaluation is logged at the last iteration, as summary.json holds it (float32 in the log)
    for k, score in enumerate(scores):
        assert logged[f"{final}/score_after_{k}_steps"][iterations] == pytest.approx(score, rel=1e-6)
    assert logged[f"{final}/post_adaptation_score"][iterations] == pytest.approx(scores[inner_steps], rel=1e-6)
    # an episode scores between 10 trials of all stones at -3 and all at +15, and not all episodes score 0
    assert all(-90 <= s <= 450 for s in scores) and any(s != 0 for s in scores)


def test_smoke_maml_and_fomaml_through_the_cli_save_and_evaluate(tmp_path):
    models = {}
    for name, flags in (("maml", []), ("fomaml", ["--first-order"])):
        (tmp_path / name).mkdir()
        result = run_script(TINY + flags + ["--inner-steps", "2", "--save-model"], tmp_path / name)
        assert result.returncode == 0, result.stderr
        assert "iteration 2/2" in result.stdout and "SPS=" in result.stdout
        summary = read_summary(tmp_path / name)
        check_summary(summary, logged_scalars(tmp_path / name), inner_steps=2, eval_steps=2)
        assert summary["args"]["first_order"] == (name == "fomaml")
        assert len(list((tmp_path / name).glob("runs/*/events.out.tfevents.*"))) == 1
        models[name] = tmp_path / name / summary["model_path"]
    # same seed, same episodes in the first iteration: only the meta-gradient differs, so the flag really
    # switched the algorithm
    maml, fomaml = (torch.load(models[name]) for name in ("maml", "fomaml"))
    assert any(not torch.equal(maml[key], fomaml[key]) for key in maml)

    (tmp_path / "evaluate").mkdir()
    result = run_script(TINY[2:] + ["--num-iterations", "0", "--load-model", str(models["maml"]),
                                    "--eval-inner-steps", "3"], tmp_path / "evaluate")
    assert result.returncode == 0, result.stderr
    reloaded = read_summary(tmp_path / "evaluate")
    assert len(reloaded["score_after_steps"]) == 4 and reloaded["env_steps"] == 0 and reloaded["train_episodes"] == 0


def test_see_chemistry_through_the_cli(tmp_path):
    result = run_script(TINY + ["--see-chemistry"], tmp_path)
    assert result.returncode == 0, result.stderr
    summary = read_summary(tmp_path)
    assert summary["args"]["see_chemistry"] and summary["iterations"] == 2
    check_summary(summary, logged_scalars(tmp_path), inner_steps=1, eval_steps=1)


def test_bad_input_through_the_entry_point_exits_2_in_one_line_and_writes_nothing(tmp_path):
    result = run_script(["--gae-lambda", "1.5"], tmp_path)
    assert result.returncode == 2
    assert result.stderr == "error: --gae-lambda must be in [0, 1], got 1.5\n"
    assert not (tmp_path / "runs").exists()


# the scores a run reports: equal on both backends for the same flags and seed
SCORE_KEYS = ["score_after_steps", "score_sem_after_steps", "heuristic_score", "post_minus_heuristic",
              "post_minus_heuristic_sem", "env_steps", "reference_scores", "post_minus_reference", "post_minus_pre"]


@needs_dm_alchemy
@pytest.mark.parametrize("eval_set", [["--eval-set", "sampled"], ["--eval-set", "dm_alchemy", "--eval-episodes", "2"]])
def test_both_backends_give_the_same_scores_for_the_same_flags_and_seed(tmp_path, eval_set):
    flags = ["--num-iterations", "1", "--meta-batch-size", "2", "--episodes-per-task", "2", "--num-test-tasks", "2",
             "--eval-every", "0", "--hidden-size", "16", "--seed", "3", *eval_set]
    summaries = {}
    for backend in ("fast", "dm_alchemy"):
        (tmp_path / backend).mkdir()
        result = run_script(flags + ["--backend", backend], tmp_path / backend)
        assert result.returncode == 0, result.stderr
        summaries[backend] = read_summary(tmp_path / backend)
    fast, dm = summaries["fast"], summaries["dm_alchemy"]
    assert {key: fast.get(key) for key in SCORE_KEYS} == {key: dm.get(key) for key in SCORE_KEYS}
    assert fast["score_after_steps"][0] != 0 and fast["env_steps"] == 1600  # there were episodes to compare


@needs_dm_alchemy
def test_eval_set_summary_compares_with_every_published_agent_on_the_same_episodes(tmp_path):
    result = run_script(TINY + ["--eval-set", "dm_alchemy", "--eval-episodes", "3", "--eval-inner-steps", "2"],
                        tmp_path)
    assert result.returncode == 0, result.stderr
    summary = read_summary(tmp_path)
    check_summary(summary, logged_scalars(tmp_path), inner_steps=1, eval_steps=2)
    assert summary["eval_set"] == "dm_alchemy" and summary["eval_episodes"] == 3
    data = alchemy_env.load_dm_alchemy_eval_set()
    agents = list(alchemy_env.DM_ALCHEMY_AGENTS) + ["random_heuristic"]
    assert sorted(summary["reference_scores"]) == sorted(agents) == sorted(summary["post_minus_reference"])
    for agent in alchemy_env.DM_ALCHEMY_AGENTS:  # the published agents' own scores on episodes 0..2
        assert summary["reference_scores"][agent] == pytest.approx(data["agent_scores"][agent][:3].mean())
    # the bot played those very episodes: its score there, from a fresh replay of its actions, is in range
    assert 0 < summary["reference_scores"]["random_heuristic"] < 300
    assert summary["heuristic_score"] == pytest.approx(summary["reference_scores"]["random_heuristic"])
    for agent, (difference, sem) in summary["post_minus_reference"].items():
        # the mean paired difference is the difference of the means
        assert difference == pytest.approx(summary["post_adaptation_score"] - summary["reference_scores"][agent])
        assert sem is not None and sem >= 0


# --- runs that survive a kill: --resume; a diverged run stops ------------------------------------------------

RESUME_FLAGS = ["--num-iterations", "6", "--meta-batch-size", "2", "--episodes-per-task", "2", "--num-test-tasks",
                "2", "--hidden-size", "16", "--eval-every", "2", "--checkpoint-every", "1", "--first-order"]
TIME_FIELDS = {"wall_time_s", "train_time_s", "sps"}


def test_a_run_killed_at_a_random_moment_and_resumed_ends_with_the_summary_of_the_run_left_alone(tmp_path):
    """SIGKILL at a random moment after the first checkpoint (maybe mid-way through writing the next one, or in a
    held-out evaluation, whose items come from the test envs' generator), then --resume to the end."""
    alone, killed = tmp_path / "alone", tmp_path / "killed"
    alone.mkdir(), killed.mkdir()
    assert run_script(RESUME_FLAGS, alone).returncode == 0
    process = subprocess.Popen([sys.executable, str(ROOT / "alchemy_maml.py"), *RESUME_FLAGS], cwd=killed,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list(killed.glob("runs/*/checkpoint.pt")) and process.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    delay = random.uniform(0.0, 0.5)
    time.sleep(delay)
    process.kill()
    process.wait()
    (run_dir,) = list(killed.glob("runs/*"))
    assert not (run_dir / "summary.json").exists(), f"the run ended within {delay:.2f} s: nothing was resumed"
    result = run_script(["--resume", str(run_dir.relative_to(killed))], killed)
    assert result.returncode == 0, (delay, result.stderr)

    def without_time(cwd):
        return {k: v for k, v in read_summary(cwd).items() if k not in TIME_FIELDS}

    assert without_time(killed) == without_time(alone), delay
    assert len(list(run_dir.glob("events.out.tfevents.*"))) >= 2  # TensorBoard continued in the run's folder
    assert logged_scalars(killed)["charts/env_steps"] == logged_scalars(alone)["charts/env_steps"]


def test_resume_rejects_a_folder_without_a_checkpoint_of_this_script_and_other_flags(tmp_path, monkeypatch, capsys):
    (tmp_path / "runs" / "r").mkdir(parents=True)

    def rejected_resume(folder: str) -> None:
        assert run_in_process(["--resume", folder], tmp_path, monkeypatch, capsys) == (
            2, f"error: --resume must be a run folder with a checkpoint.pt of alchemy_maml.py, got {folder!r}\n")

    rejected_resume("runs/nope")  # no such folder
    rejected_resume("runs/r")  # no checkpoint in it
    (tmp_path / "runs" / "r" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    rejected_resume("runs/r")
    torch.save({"another.py": {}}, tmp_path / "runs" / "r" / "checkpoint.pt")  # another script's
    rejected_resume("runs/r")
    assert os.listdir(tmp_path / "runs") == ["r"] and os.listdir(tmp_path / "runs" / "r") == ["checkpoint.pt"]
    code, err = run_in_process(["--resume", "runs/r", "--num-iterations", "3"], tmp_path, monkeypatch, capsys)
    assert code == 2 and err.startswith("error: --resume must be given alone")


def test_a_non_finite_policy_stops_the_run_with_exit_3_in_one_line_and_no_summary(tmp_path, monkeypatch, capsys):
    model = alchemy_policy(16)
    with torch.no_grad():
        next(model.parameters())[0, 0] = float("nan")
    torch.save(model.state_dict(), tmp_path / "nan.cleanrl_model")
    code, err = run_in_process(TINY + ["--load-model", str(tmp_path / "nan.cleanrl_model")], tmp_path, monkeypatch,
                               capsys)
    assert code == 3, err
    (line,) = err.strip().splitlines()
    assert line.startswith("error: non-finite ") and "at iteration 1" in line and "--outer-lr" in line, line
    assert not list(tmp_path.glob("runs/*/summary.json"))
