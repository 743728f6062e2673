"""ppo_single_task.py: GAE and the loss pieces against hand-computed values, and runs through the CLI."""

import importlib.util
import json
import math
import os
import pathlib
import re
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

import alchemy_env
from ppo_single_task import Agent, Args, BestEpisodes, compute_gae, ppo_loss, sil_loss

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "ppo_single_task.py"


def column(*values):
    """A (num_steps, 1 env) tensor."""
    return torch.tensor(values, dtype=torch.float64)[:, None]


def test_gae_by_hand():
    rewards, values = column(1.0, 2.0, 3.0), column(0.5, 1.0, 1.5)
    no_dones = column(0.0, 0.0, 0.0)
    advantages = compute_gae(rewards, values, no_dones, torch.tensor([[2.0]]), torch.tensor([0.0]), 0.9, 0.8)
    # delta_2 = 3 + 0.9*2 - 1.5 = 3.3; delta_1 = 2 + 0.9*1.5 - 1 = 2.35; delta_0 = 1 + 0.9*1 - 0.5 = 1.4
    a2 = 3.3
    a1 = 2.35 + 0.9 * 0.8 * a2
    a0 = 1.4 + 0.9 * 0.8 * a1
    assert advantages[:, 0].tolist() == pytest.approx([a0, a1, a2])
    # obs[1] starts a new episode: step 0 neither bootstraps from nor accumulates past it
    advantages = compute_gae(rewards, values, column(0.0, 1.0, 0.0), torch.tensor([[2.0]]), torch.tensor([1.0]), 0.9, 0.8)
    assert advantages[:, 0].tolist() == pytest.approx([1.0 - 0.5, 2.35 + 0.72 * (3.0 - 1.5), 3.0 - 1.5])


def tiny_batch():
    # Two real samples and one autoreset sample (valid = 0) whose numbers are garbage on purpose.
    return dict(
        newlogprob=torch.log(torch.tensor([0.6, 0.2, 0.9])),
        oldlogprob=torch.log(torch.tensor([0.4, 0.4, 0.1])),
        advantages=torch.tensor([1.0, -1.0, 100.0]),
        newvalue=torch.tensor([1.0, 0.0, 50.0]),
        oldvalue=torch.tensor([0.5, 0.5, -50.0]),
        returns=torch.tensor([2.0, 0.0, 7.0]),
        entropy=torch.tensor([1.0, 0.5, 9.0]),
        valid=torch.tensor([1.0, 1.0, 0.0]),
    )


def test_ppo_loss_pieces_by_hand():
    args = Args(clip_coef=0.2, norm_adv=False, clip_vloss=True, ent_coef=0.01, vf_coef=0.5)
    loss, pg_loss, v_loss, entropy, old_kl, kl, clipfrac = ppo_loss(**tiny_batch(), args=args)
    # ratios 1.5 and 0.5. Surrogates -A*r = (-1.5, 0.5), clipped -A*clip(r) = (-1.2, 0.8); max = (-1.2, 0.8)
    assert pg_loss.item() == pytest.approx((-1.2 + 0.8) / 2)
    # values: unclipped errors (1-2)^2 = 1, 0^2 = 0; clipped predictions 0.7, 0.3 -> 1.69, 0.09
    assert v_loss.item() == pytest.approx(0.5 * (1.69 + 0.09) / 2)
    assert entropy.item() == pytest.approx(0.75)
    assert loss.item() == pytest.approx(-0.2 - 0.01 * 0.75 + 0.5 * 0.445, abs=1e-6)  # float32 batch
    assert kl.item() == pytest.approx(((0.5 - math.log(1.5)) + (-0.5 - math.log(0.5))) / 2, rel=1e-6)
    assert old_kl.item() == pytest.approx((-math.log(1.5) - math.log(0.5)) / 2, rel=1e-6)
    assert clipfrac == pytest.approx(1.0)


def test_ppo_loss_normalises_advantages_over_valid_samples_only():
    args = Args(clip_coef=10.0, norm_adv=True, clip_vloss=False, ent_coef=0.0, vf_coef=0.0)
    _, pg_loss, *_ = ppo_loss(**tiny_batch(), args=args)
    # valid advantages (1, -1) normalise to (1, -1); no clipping at 10: mean(-A*r) = (-1.5 + 0.5) / 2
    assert pg_loss.item() == pytest.approx(-0.5, rel=1e-6)


def test_vpg_is_the_unclipped_policy_gradient():
    args = replace(Args(), vpg=True, norm_adv=False, clip_vloss=False, ent_coef=0.0, vf_coef=0.0)
    batch = tiny_batch()
    batch["newlogprob"] = batch["newlogprob"].clone().requires_grad_(True)
    loss, pg_loss, *_ = ppo_loss(**batch, args=args)
    assert pg_loss.item() == pytest.approx((-1.5 + 0.5) / 2)
    loss.backward()  # d/dlogp of -A*exp(logp - old) = -A*ratio, averaged over the 2 valid samples
    assert batch["newlogprob"].grad.tolist() == pytest.approx([-1.5 / 2, 0.5 / 2, 0.0])


def run_cli(tmp_path, *flags):
    return subprocess.run([sys.executable, str(SCRIPT), *flags], cwd=tmp_path, capture_output=True, text=True, timeout=300)


def test_sil_loss_by_hand():
    """Self-imitation: only samples whose return beats the critic are imitated, and only their values pulled up."""
    logprob = torch.log(torch.tensor([0.5, 0.25, 0.8], dtype=torch.float64)).requires_grad_()
    value = torch.tensor([0.0, 0.5, 2.0], dtype=torch.float64, requires_grad=True)
    returns = torch.tensor([1.0, -1.0, 3.0], dtype=torch.float64)  # R - V = 1, -1.5 (not imitated), 1
    loss, policy_loss, value_loss = sil_loss(logprob, value, returns, value_coef=0.1)
    assert math.isclose(policy_loss.item(), -(math.log(0.5) + math.log(0.8)) / 3)
    assert math.isclose(value_loss.item(), 0.5 * (1 + 1) / 3)
    assert math.isclose(loss.item(), policy_loss.item() + 0.1 * value_loss.item())
    loss.backward()
    assert torch.allclose(logprob.grad, torch.tensor([-1 / 3, 0.0, -1 / 3], dtype=torch.float64))
    assert torch.allclose(value.grad, torch.tensor([-0.1 / 3, 0.0, -0.1 / 3], dtype=torch.float64))


def test_best_episodes_keeps_the_highest_returns_with_their_returns_to_go():
    memory = BestEpisodes(capacity=2)

    def add(first_obs, rewards):  # observations number the steps, so samples can be traced back
        obs = np.arange(first_obs, first_obs + len(rewards), dtype=np.float32)[:, None]
        memory.add(obs, np.arange(len(rewards)), np.array(rewards, dtype=np.float64), gamma=0.5)

    add(0, [1.0, 2.0, 4.0])  # returns to go: 1 + 0.5 * 4 = 3, 2 + 0.5 * 4 = 4, 4
    add(10, [-1.0, -1.0])  # -1.5, -1
    add(20, [3.0])  # 3: ties with the first episode, which stays ahead
    add(30, [0.0, 2.0])  # 1: not among the best two
    assert [episode[0] for episode in memory.episodes] == [3.0, 3.0]
    assert memory.episodes[0][1][0, 0] == 0 and memory.episodes[1][1][0, 0] == 20
    np.testing.assert_allclose(memory.episodes[0][3], [3.0, 4.0, 4.0])
    torch.manual_seed(0)
    obs, actions, returns = memory.sample(200, torch.device("cpu"))
    expected = {0.0: (0, 3.0), 1.0: (1, 4.0), 2.0: (2, 4.0), 20.0: (0, 3.0)}  # obs -> (action, return to go)
    assert set(obs[:, 0].tolist()) == set(expected)
    for o, a, g in zip(obs[:, 0].tolist(), actions.tolist(), returns.tolist()):
        assert expected[o] == (a, g)


def test_smoke_nav_through_the_cli(tmp_path):
    result = run_cli(tmp_path, "--total-timesteps", "2400", "--num-envs", "8", "--num-steps", "150", "--image-every", "1")
    assert result.returncode == 0, result.stderr
    (summary_path,) = tmp_path.glob("runs/nav-medium__ppo_single_task__1__*/summary.json")
    summary = json.loads(summary_path.read_text())
    assert summary["env_steps"] == 2400 and summary["episodes"] >= 8
    assert summary["final_episodic_return"] < 0 and summary["final_distance"] > 0
    assert summary["args"]["goal"] == [4.5, 1.0] and summary["sps"] > 0
    assert summary["greedy_final_distance"] > 0 and isinstance(summary["greedy_reached"], bool)
    assert list(summary_path.parent.glob("events.out.tfevents.*"))
    # the default goal behind the cross: R* = -2913.28, reached by the optimal policy
    assert summary["optimal_return"] == pytest.approx(-2913.28) and summary["optimal_success_rate"] == 1.0
    assert summary["return_gap"] == pytest.approx(-2913.28 - summary["final_episodic_return"]) and summary["return_gap"] > 0
    assert summary["greedy_return_gap"] == pytest.approx(-2913.28 - summary["greedy_return"])
    assert summary["success_rate"] == summary["goal_reached_rate"]


def test_smoke_nav_with_self_imitation_through_the_cli(tmp_path):
    result = run_cli(tmp_path, "--sil-coef", "1", "--sil-fraction", "1", "--total-timesteps", "4800", "--num-envs", "8",
                     "--num-steps", "150", "--image-every", "0")
    assert result.returncode == 0, result.stderr
    (summary_path,) = tmp_path.glob("runs/nav-medium__ppo_single_task__1__*/summary.json")
    summary = json.loads(summary_path.read_text())
    assert summary["args"]["sil_coef"] == 1.0 and summary["env_steps"] == 4800 and summary["episodes"] >= 40


def test_action_mask_gives_invalid_actions_probability_zero():
    """--mask-actions: the policy is the softmax over the valid actions alone (hand-computed), never
    samples an invalid one, and its entropy is that of the renormalised distribution."""
    torch.manual_seed(0)
    envs = alchemy_env.SymbolicAlchemyVectorEnv(4)
    observations, _ = envs.reset(seed=0)
    rng = np.random.default_rng(1)
    for _ in range(9):  # use up some items so that the masks differ between envs
        observations, *_ = envs.step(alchemy_env.random_heuristic_actions(observations, rng))
    mask = torch.as_tensor(alchemy_env.valid_action_mask(observations))
    assert (~mask).any(1).all() and mask.any(1).all()
    space = envs.single_observation_space
    agent = Agent(39, 40, 16, space.low, space.high)
    with torch.no_grad():
        agent.actor[-1].weight.mul_(100.0)  # sharp logits, so that a leak to masked actions would show
    x = torch.as_tensor(observations).repeat(500, 1)
    actions, logprob, entropy, _ = agent.get_action_and_value(x, action_mask=mask.repeat(500, 1))
    assert mask.repeat(500, 1).gather(1, actions[:, None]).all()
    logits = agent.actor(agent.normalise(torch.as_tensor(observations))).detach().double()
    for env in range(4):
        valid_logits = logits[env][mask[env]]
        probs = torch.softmax(valid_logits, 0)
        expected_logprob = torch.log_softmax(valid_logits, 0)[mask[env].nonzero()[:, 0] == actions[env]].squeeze()
        assert math.isclose(logprob[env].item(), expected_logprob.item(), rel_tol=1e-4, abs_tol=1e-4)
        assert math.isclose(entropy[env].item(), -(probs * probs.clamp_min(1e-300).log()).sum().item(), abs_tol=1e-4)


def test_smoke_alchemy_with_its_default_masking_and_per_trial_returns_through_the_cli(tmp_path):
    result = run_cli(tmp_path, "--env", "alchemy", "--total-timesteps", "3200", "--num-envs", "8")
    assert result.returncode == 0, result.stderr
    (summary_path,) = tmp_path.glob("runs/alchemy__ppo_single_task__1__*/summary.json")
    summary = json.loads(summary_path.read_text())
    assert summary["env_steps"] == 3200 and summary["episodes"] >= 8 and summary["args"]["mask_actions"]
    assert summary["args"]["per_trial_returns"] and summary["args"]["num_steps"] == 100
    assert summary["eval_set"] == "sampled" and "reference_scores" not in summary
    assert summary["final_episodic_return"] >= -3 * alchemy_env.NUM_STONES * alchemy_env.NUM_TRIALS  # every stone at -3


def test_defaults_differ_by_env_and_every_given_flag_wins():
    import ppo_single_task

    nav = ppo_single_task.resolve(Args())
    assert (nav.learning_rate, nav.num_envs, nav.num_steps, nav.hidden_size, nav.total_timesteps) == \
        (3e-4, 64, 200, 64, 12_000_000)
    assert not nav.mask_actions and not nav.per_trial_returns
    alchemy = ppo_single_task.resolve(Args(env="alchemy"), {"env"})
    assert (alchemy.learning_rate, alchemy.num_envs, alchemy.num_steps, alchemy.hidden_size,
            alchemy.total_timesteps) == (1e-3, 256, 100, 128, 8_000_000)
    assert alchemy.mask_actions and alchemy.per_trial_returns
    given = Args(env="alchemy", learning_rate=3e-4, num_envs=64, num_steps=200, hidden_size=64,
                 total_timesteps=4_000_000, mask_actions=False, per_trial_returns=False)
    given = ppo_single_task.resolve(given, {"env", "learning_rate", "num_envs", "num_steps", "hidden_size",
                                            "total_timesteps", "mask_actions", "per_trial_returns"})
    assert (given.learning_rate, given.num_envs, given.num_steps, given.hidden_size, given.total_timesteps) == \
        (3e-4, 64, 200, 64, 4_000_000)
    assert not given.mask_actions and not given.per_trial_returns
    help_text = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True,
                               text=True, timeout=60, env={**os.environ, "COLUMNS": "400"}).stdout
    words = " ".join(re.sub("[│╭╮╰╯─]", " ", help_text).split())  # the text without tyro's boxes and wrapping
    for both in ("3e-4 for nav and 1e-3 for alchemy", "64 for nav and 256 for alchemy",
                 "200 for nav and 100 for alchemy", "64 for nav and 128 for alchemy", "12M for nav", "8M for alchemy"):
        assert both in words, both
    assert words.lower().count("on by default for alchemy; off for nav") == 2


@pytest.mark.skipif(importlib.util.find_spec("dm_alchemy") is None,
                    reason=f"DeepMind's dm_alchemy is not installed ({alchemy_env.DM_ALCHEMY_INSTALL})")
def test_alchemy_eval_set_scores_the_policy_against_every_published_agent(tmp_path):
    result = run_cli(tmp_path, "--env", "alchemy", "--num-iterations", "1", "--num-envs", "8", "--eval-set",
                     "dm_alchemy", "--eval-episodes", "4")
    assert result.returncode == 0, result.stderr
    (summary_path,) = tmp_path.glob("runs/alchemy__ppo_single_task__1__*/summary.json")
    summary = json.loads(summary_path.read_text())
    assert summary["eval_set"] == "dm_alchemy" and summary["eval_episodes"] == 4
    data = alchemy_env.load_dm_alchemy_eval_set()
    assert sorted(summary["reference_scores"]) == sorted([*alchemy_env.DM_ALCHEMY_AGENTS, "random_heuristic"])
    for agent in alchemy_env.DM_ALCHEMY_AGENTS:
        assert summary["reference_scores"][agent] == pytest.approx(data["agent_scores"][agent][:4].mean())
    for agent, (difference, sem) in summary["post_minus_reference"].items():
        assert difference == pytest.approx(summary["eval_set_score"] - summary["reference_scores"][agent])
        assert sem is not None and sem >= 0
    assert -90 <= summary["eval_set_score"] <= 450 and summary["eval_set_score_sem"] >= 0


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--learning-rate", "-0.1"], "--learning-rate must be > 0, got -0.1"),
        (["--goal", "5", "5"], "goal (5, 5) lies on an obstacle of level 'medium'"),
        (["--goal", "12", "1"], "goal (12, 1) is outside the map"),
        (["--gamma", "1.5"], "--gamma must be in [0, 1], got 1.5"),
        (["--mask-actions"], "--mask-actions applies to --env alchemy only, got --env nav"),
        (["--per-trial-returns"], "--per-trial-returns applies to --env alchemy only, got --env nav"),
        (["--no-mask-actions"], "--mask-actions applies to --env alchemy only, got --env nav"),
        (["--eval-set", "dm_alchemy"], "--eval-set applies to --env alchemy only, got --env nav"),
        (["--env", "alchemy", "--eval-episodes", "3"], "--eval-episodes is for --eval-set dm_alchemy"),
        (["--env", "alchemy", "--sil-coef", "1"], "--sil-coef applies to --env nav only, got --env alchemy"),
        (["--sil-coef", "-1"], "--sil-coef must be >= 0, got -1.0"),
        (["--sil-fraction", "0"], "--sil-fraction must be in (0, 1], got 0.0"),
        (["--sil-episodes", "0"], "--sil-episodes must be > 0, got 0"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, flags, message):
    result = run_cli(tmp_path, *flags)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and message in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "runs").exists()


def test_unknown_obstacle_level_is_rejected_by_the_cli(tmp_path):
    result = run_cli(tmp_path, "--obstacles", "extreme")
    assert result.returncode == 2 and "extreme" in result.stderr and not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "values, given, message",
    [
        (dict(seed=-1), (), "--seed must be in [0, 2**32 - 1], got -1"),
        (dict(chemistry_seed=-1), (), "--chemistry-seed must be in [0, 2**32 - 1], got -1"),
        (dict(learning_rate=float("inf")), (), "--learning-rate must be finite, got inf"),
        (dict(max_grad_norm=float("nan")), (), "--max-grad-norm must be finite, got nan"),
        (dict(goal=(float("nan"), 1.0)), (), "--goal must be finite, got (nan, 1.0)"),
        (dict(max_grad_norm=0.0), (), "--max-grad-norm must be > 0, got 0.0"),
        (dict(image_every=-1), (), "--image-every must be >= 0 (0: never), got -1"),
        (dict(target_kl=0.0), (), "--target-kl must be > 0, got 0.0"),
        (dict(total_timesteps=1000, num_iterations=2), (), "--total-timesteps 1000 and --num-iterations 2 both set"),
        (dict(total_timesteps=1000), (), "--total-timesteps must be at least one rollout, --num-envs x --num-steps = 12800"),
        (dict(vpg=True, update_epochs=3), ("vpg", "update_epochs"), "--update-epochs cannot be given with --vpg"),
        (dict(vpg=True), ("vpg", "clip_vloss"), "--clip-vloss cannot be given with --vpg"),
        (dict(env="alchemy", goal=(1.0, 1.0)), ("env", "goal"), "--goal applies to --env nav only, got --env alchemy"),
        (dict(env="alchemy"), ("env", "see_goal"), "--see-goal applies to --env nav only, got --env alchemy"),
        (dict(env="alchemy", image_every=5), ("env", "image_every"), "--image-every applies to --env nav only"),
        (dict(chemistry_seed=3), ("chemistry_seed",), "--chemistry-seed applies to --env alchemy only, got --env nav"),
        (dict(sil_coef=0.0, sil_episodes=4), ("sil_coef", "sil_episodes"), "--sil-episodes applies with self-imitation only"),
        (dict(checkpoint_every=-1), (), "--checkpoint-every must be >= 0, got -1"),
        (dict(torch_threads=0), (), "--torch-threads must be > 0, got 0"),
    ],
)
def test_bad_values_exit_2_with_one_line(values, given, message, capsys):
    import ppo_single_task

    with pytest.raises(SystemExit) as exit:
        ppo_single_task.resolve(Args(**values), set(given))
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1


def test_flags_given_names_every_field_set_on_the_command_line():
    import ppo_single_task

    given = ppo_single_task.flags_given(["--vpg", "--no-see-goal", "--goal", "1", "2", "--update-epochs=3"])
    assert {"vpg", "see_goal", "goal", "update_epochs"} <= given and "num_steps" not in given


def test_num_iterations_is_honoured_and_the_run_length_is_whole_rollouts():
    import ppo_single_task

    args = ppo_single_task.resolve(Args(num_iterations=2, num_envs=8, num_steps=50))
    assert args.num_iterations == 2 and args.total_timesteps == 800
    assert ppo_single_task.resolve(Args()).num_iterations == 12_000_000 // (64 * 200)
    assert ppo_single_task.resolve(Args(vpg=True)).update_epochs == 1


def test_num_iterations_runs_that_many_iterations_through_the_cli(tmp_path):
    result = run_cli(tmp_path, "--num-iterations", "2", "--num-envs", "4", "--num-steps", "50", "--image-every", "0")
    assert result.returncode == 0, result.stderr
    (summary_path,) = tmp_path.glob("runs/*/summary.json")
    summary = json.loads(summary_path.read_text())
    assert summary["iterations"] == 2 and summary["env_steps"] == 2 * 4 * 50 and "iteration 2/2" in result.stdout


@pytest.mark.parametrize("flags, message", [
    (["--seed", "-1"], "--seed must be in [0, 2**32 - 1], got -1"),
    (["--vpg", "--update-epochs", "3"], "--update-epochs cannot be given with --vpg"),
    (["--image-every", "-1"], "--image-every must be >= 0 (0: never), got -1"),
])
def test_more_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, flags, message):
    result = run_cli(tmp_path, *flags)
    assert result.returncode == 2 and message in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("flag", ["--batch-size", "--minibatch-size"])
def test_computed_fields_cannot_be_given(tmp_path, flag):
    result = run_cli(tmp_path, flag, "7")
    assert result.returncode == 2 and flag in result.stderr and not (tmp_path / "runs").exists()


def test_a_file_named_runs_exits_2_in_one_line(tmp_path):
    (tmp_path / "runs").write_text("a file named runs")
    result = run_cli(tmp_path, "--num-iterations", "1", "--num-envs", "4", "--num-steps", "50")
    assert result.returncode == 2 and "cannot create the run folder runs/" in result.stderr
    assert result.stderr.strip().count("\n") == 0 and (tmp_path / "runs").read_text() == "a file named runs"
