"""ppo_single_task.py: GAE and the loss pieces against hand-computed values, the per-env defaults and the check
table in-process, bad command lines through the real entry point, tiny runs through the CLI, and resume: a run
SIGKILLed at a random moment and resumed ends with the summary.json of the run left alone."""

import importlib.util
import json
import math
import pathlib
import os
import random
import re
import signal
import subprocess
import time
import sys

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing import event_accumulator

import alchemy_env
import nav_env
import tyro
from benchmark.nav_optimal import optimal_returns
from ppo_single_task import ENV_DEFAULTS, Agent, Args, BestEpisodes, check, compute_gae, ppo_loss, resolve, sil_loss

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "ppo_single_task.py"
# nav, goal (4.5, 1): the farthest point of the map [0, 10]^2 from the goal is the corner (10, 10), at squared
# distance 5.5^2 + 9^2 = 111.25, so no step's reward is below -111.25 and no 100-step return below -11125
NAV_WORST_RETURN = -111.25 * nav_env.MAX_EPISODE_STEPS


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
    # step 0 ended its episode (dones[1] = 1): step 0 neither bootstraps from nor accumulates past obs[1]
    advantages = compute_gae(rewards, values, column(0.0, 1.0, 0.0), torch.tensor([[2.0]]), torch.tensor([1.0]), 0.9, 0.8)
    assert advantages[:, 0].tolist() == pytest.approx([1.0 - 0.5, 2.35 + 0.72 * (3.0 - 1.5), 3.0 - 1.5])


def tiny_batch():
    # Two samples of the policy and one autoreset sample (mask = 0) whose numbers are garbage on purpose.
    return dict(
        newlogprob=torch.log(torch.tensor([0.6, 0.2, 0.9])),
        oldlogprob=torch.log(torch.tensor([0.4, 0.4, 0.1])),
        advantages=torch.tensor([1.0, -1.0, 100.0]),
        newvalue=torch.tensor([1.0, 0.0, 50.0]),
        oldvalue=torch.tensor([0.5, 0.5, -50.0]),
        returns=torch.tensor([2.0, 0.0, 7.0]),
        entropy=torch.tensor([1.0, 0.5, 9.0]),
        mask=torch.tensor([1.0, 1.0, 0.0]),
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


def test_ppo_loss_normalises_advantages_over_the_masked_samples_only():
    args = Args(clip_coef=10.0, norm_adv=True, clip_vloss=False, ent_coef=0.0, vf_coef=0.0)
    _, pg_loss, *_ = ppo_loss(**tiny_batch(), args=args)
    # the advantages (1, -1) of the two kept samples normalise to (1, -1); no clipping at 10: mean(-A*r)
    assert pg_loss.item() == pytest.approx((-1.5 + 0.5) / 2, rel=1e-6)


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
        memory.add(list(zip(obs, range(len(rewards)), rewards)), gamma=0.5)  # (obs, action, reward) per step

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


# --- the per-env defaults: fields left at None take their --env's value from ENV_DEFAULTS --------------------
NAV = dict(total_timesteps=12_000_000, learning_rate=3e-4, num_envs=64, num_steps=200, gamma=1.0, ent_coef=0.0,
           reward_scale=0.01, hidden_size=64, sil_coef=1.0, mask_actions=False, per_trial_returns=False)
ALCHEMY = dict(total_timesteps=8_000_000, learning_rate=1e-3, num_envs=256, num_steps=100, gamma=0.99, ent_coef=0.01,
               reward_scale=0.1, hidden_size=128, sil_coef=0.0, mask_actions=True, per_trial_returns=True)


def parse(argv: list[str]) -> Args:
    return resolve(tyro.cli(Args, args=argv))


def picked(args: Args) -> dict:
    return {name: getattr(args, name) for name in NAV}


def test_env_picks_its_defaults_and_every_given_flag_wins():
    assert picked(parse([])) == NAV and picked(parse(["--env", "alchemy"])) == ALCHEMY
    flags = ["--learning-rate", "3e-4", "--num-envs", "64", "--num-steps", "200", "--hidden-size", "64",
             "--total-timesteps", "4000000", "--no-mask-actions", "--no-per-trial-returns"]
    assert picked(parse(["--env", "alchemy", *flags])) == {
        **ALCHEMY, "learning_rate": 3e-4, "num_envs": 64, "num_steps": 200, "hidden_size": 64,
        "total_timesteps": 4_000_000, "mask_actions": False, "per_trial_returns": False}
    assert parse(["--mask-actions", "--per-trial-returns"]).mask_actions is False  # nav has neither
    assert parse(["--num-iterations", "2", "--num-envs", "8", "--num-steps", "50"]).total_timesteps == 800


def test_help_states_both_envs_values_of_every_field_left_at_none(capsys, monkeypatch):
    """--help gives, for each None field, "(None: nav X, alchemy Y)" with ENV_DEFAULTS' values, on one line."""
    monkeypatch.setenv("COLUMNS", "400")
    with pytest.raises(SystemExit) as exit:
        tyro.cli(Args, args=["--help"])
    assert exit.value.code == 0
    words = " ".join(re.sub("[│╭╮╰╯─]", " ", capsys.readouterr().out).split())
    for name, (nav, alchemy) in ENV_DEFAULTS.items():
        (text,) = re.findall(rf"--{name.replace('_', '-')} {{None}}\|[A-Z]+ (.*?) \(default: None\)", words)
        (both,) = re.findall(r"\(None: nav ([^ ,]+).*?, alchemy ([^ ,)]+)", text)
        assert tuple(float(value.replace("_", "")) for value in both) == (nav, alchemy), name
    assert "(default: nav)" in words and "(default: 1000)" in words  # real defaults elsewhere


# --- bad input: one line on stderr naming the flag, exit code 2 ----------------------------------------------
@pytest.mark.parametrize(
    "argv, message",
    [
        (["--learning-rate", "-0.1"], "--learning-rate must be a finite number > 0, got -0.1"),
        (["--learning-rate", "inf"], "--learning-rate must be a finite number > 0, got inf"),
        (["--learning-rate", "1e38"], "--learning-rate must be below 3e37"),
        (["--max-grad-norm", "nan"], "--max-grad-norm must be a finite number > 0, got nan"),
        (["--gamma", "1.5"], "--gamma must be in [0, 1], got 1.5"),
        (["--env", "alchemy", "--sil-coef", "1"], "--sil-coef must be 0 with --env alchemy"),
        (["--sil-coef", "-1"], "--sil-coef must be a finite number >= 0, got -1.0"),
        (["--sil-fraction", "0"], "--sil-fraction must be in (0, 1], got 0.0"),
        (["--seed", "-1"], "--seed must be in [0, 2**32), got -1"),
        (["--reward-scale", "0"], "--reward-scale must be a finite number > 0, got 0.0"),
        (["--target-kl", "0"], "--target-kl must be a finite number > 0, got 0.0"),
        (["--total-timesteps", "1000"], "--total-timesteps must be at least one rollout, got 1000"),
        (["--num-minibatches", "100000"], "--num-minibatches must not exceed the batch size, got 100000"),
        (["--checkpoint-every", "-1"], "--checkpoint-every must be a finite number >= 0, got -1"),
        (["--torch-threads", "0"], "--torch-threads must be a finite number > 0, got 0"),
        (["--exp-name", "a/b"], "--exp-name must name a run in runs/, got 'a/b'"),
        (["--env", "alchemy", "--level", "alchemy/nope"], "--level must name a level, got 'alchemy/nope'"),
        (["--env", "alchemy", "--eval-episodes", "0"], "--eval-episodes must be in [1, 1000], got 0"),
    ],
)
def test_bad_input_exits_2_with_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit:
        check(parse(argv))
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1


def test_a_file_named_runs_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").write_text("a file named runs")
    with pytest.raises(SystemExit) as exit:
        check(parse([]))
    assert exit.value.code == 2 and capsys.readouterr().err.startswith("error: --exp-name must name a run in runs/")


@pytest.mark.parametrize("argv, message", [
    (["--goal", "5", "5"], "error: --goal must be a free point of the map [0, 10]^2, got (5.0, 5.0)\n"),  # the cross
    (["--goal", "12", "1"], "error: --goal must be a free point of the map [0, 10]^2, got (12.0, 1.0)\n"),
    (["--goal", "nan", "1"], "error: --goal must be a free point of the map [0, 10]^2, got (nan, 1.0)\n"),
    (["--resume", "runs/none"], "error: --resume must be a run folder with a checkpoint.pt of this script, got "
                                "'runs/none'\n"),
])
def test_bad_input_through_the_entry_point_exits_2_in_one_line_and_writes_nothing(argv, message, tmp_path):
    result = run_cli(tmp_path, *argv)
    assert (result.returncode, result.stdout, result.stderr) == (2, "", message)
    assert list(tmp_path.iterdir()) == []


def test_a_misspelt_flag_gets_tyros_own_message_and_exit_2(tmp_path):
    result = run_cli(tmp_path, "--num-iteration", "3")
    assert result.returncode == 2 and "--num-iterations" in result.stderr  # tyro's "similar arguments"


# --- tiny runs through the CLI -------------------------------------------------------------------------------
def run_cli(tmp_path, *flags):
    return subprocess.run([sys.executable, str(SCRIPT), *flags], cwd=tmp_path, capture_output=True, text=True, timeout=300)


def the_run(tmp_path, result) -> tuple[dict, event_accumulator.EventAccumulator]:
    """The summary.json and the TensorBoard events of the one run in tmp_path."""
    assert result.returncode == 0, result.stderr
    (summary_path,) = tmp_path.glob("runs/*/summary.json")
    events = event_accumulator.EventAccumulator(str(summary_path.parent), size_guidance={"images": 0, "scalars": 0})
    return json.loads(summary_path.read_text()), events.Reload()


def scalars(events, tag: str) -> tuple[list[int], np.ndarray]:
    logged = events.Scalars(tag)
    return [e.step for e in logged], np.array([e.value for e in logged])


def test_smoke_nav_through_the_cli(tmp_path):
    result = run_cli(tmp_path, "--num-iterations", "2", "--num-envs", "8", "--num-steps", "150")
    summary, events = the_run(tmp_path, result)
    assert summary["iterations"] == 2 and summary["env_steps"] == 2400 and "iteration 2/2" in result.stdout
    assert summary["args"]["goal"] == [4.5, 1.0] and summary["args"]["sil_coef"] == 1.0
    # 300 steps per env: at least two episodes of at most 100 steps (each followed by one autoreset step)
    assert summary["episodes"] >= 16
    assert set(scalars(events, "charts/episodic_length")[1]) <= set(range(1, nav_env.MAX_EPISODE_STEPS + 1))
    # the goal behind the cross: its exact optimum R* (benchmark.nav_optimal) bounds every policy's return
    optimum = optimal_returns([(4.5, 1.0)], "medium", "block")[0][0]
    for key in ("final_episodic_return", "greedy_return"):
        assert NAV_WORST_RETURN <= summary[key] <= optimum + 1e-9, key
    assert summary["greedy_reached"] == (summary["greedy_final_distance"] <= nav_env.GOAL_RADIUS + 1e-9)
    assert 0 <= summary["success_rate"] <= 1 and 0 <= summary["final_distance"] <= 15


def test_smoke_nav_with_self_imitation_through_the_cli(tmp_path):
    result = run_cli(tmp_path, "--sil-fraction", "1", "--num-iterations", "4", "--num-envs", "8", "--num-steps", "150")
    summary, events = the_run(tmp_path, result)
    assert summary["args"]["sil_coef"] == 1.0 and summary["env_steps"] == 4800 and summary["episodes"] >= 32
    # SIL ran in every iteration (each one finishes episodes, so its memory is never empty) and learnt something
    steps, policy_loss = scalars(events, "losses/sil_policy_loss")
    _, value_loss = scalars(events, "losses/sil_value_loss")
    assert steps == [1200, 2400, 3600, 4800] and (value_loss > 0).any() and (policy_loss != 0).any()
    # the best return kept can only grow, and is at least the mean of any episodes offered to the memory
    best_steps, best = scalars(events, "charts/sil_best_return")
    recent_steps, recent = scalars(events, "charts/episodic_return")
    assert best_steps == recent_steps == steps and (np.diff(best) >= 0).all() and (best >= recent - 1e-2).all()
    assert NAV_WORST_RETURN <= best.min() and best.max() <= optimal_returns([(4.5, 1.0)], "medium")[0][0] + 1e-3


def test_smoke_alchemy_with_its_default_masking_and_per_trial_returns_through_the_cli(tmp_path):
    result = run_cli(tmp_path, "--env", "alchemy", "--total-timesteps", "3200", "--num-envs", "8")
    summary, events = the_run(tmp_path, result)
    assert summary["args"]["mask_actions"] and summary["args"]["per_trial_returns"] and summary["args"]["num_steps"] == 100
    assert summary["eval_set"] == "sampled" and "reference_scores" not in summary
    # 400 steps per env: one 200-step episode, its autoreset step, then 199 steps of an unfinished one
    assert summary["env_steps"] == 3200 and summary["episodes"] == 8
    assert scalars(events, "charts/episodic_length")[1].tolist() == [alchemy_env.EPISODE_STEPS] * 3  # iterations 2-4
    worst, best = -3 * alchemy_env.NUM_STONES * alchemy_env.NUM_TRIALS, 15 * alchemy_env.NUM_STONES * alchemy_env.NUM_TRIALS
    assert worst <= summary["final_episodic_return"] <= best  # every stone at -3, every stone at +15


@pytest.mark.skipif(importlib.util.find_spec("dm_alchemy") is None,
                    reason=f"DeepMind's dm_alchemy is not installed ({alchemy_env.DM_ALCHEMY_INSTALL})")
def test_alchemy_eval_set_scores_the_policy_against_every_published_agent(tmp_path):
    result = run_cli(tmp_path, "--env", "alchemy", "--num-iterations", "1", "--num-envs", "8", "--eval-set",
                     "dm_alchemy", "--eval-episodes", "4")
    summary, events = the_run(tmp_path, result)
    assert summary["eval_set"] == "dm_alchemy" and summary["eval_episodes"] == 4
    assert f"dm_alchemy's evaluation episodes (4): score {summary['eval_set_score']:.2f}\n" in result.stdout
    assert scalars(events, "eval_set/score")[1] == pytest.approx([summary["eval_set_score"]])  # each figure its tag
    for agent, score in summary["reference_scores"].items():
        assert scalars(events, f"eval_set/reference_{agent}")[1] == pytest.approx([score])
        assert scalars(events, f"eval_set/post_minus_{agent}")[1] == pytest.approx([summary["post_minus_reference"][agent][0]])
    data = alchemy_env.load_dm_alchemy_eval_set()
    assert sorted(summary["reference_scores"]) == sorted([*alchemy_env.DM_ALCHEMY_AGENTS, "random_heuristic"])
    for agent in alchemy_env.DM_ALCHEMY_AGENTS:
        assert summary["reference_scores"][agent] == pytest.approx(data["agent_scores"][agent][:4].mean())
    for agent, (difference, sem) in summary["post_minus_reference"].items():
        assert difference == pytest.approx(summary["eval_set_score"] - summary["reference_scores"][agent])
        assert sem is not None and sem >= 0
    assert -90 <= summary["eval_set_score"] <= 450 and summary["eval_set_score_sem"] >= 0


# --- resume: exact after a kill at any moment; divergence stops with exit 3 ----------------------------------
TIME_FIELDS = {"wall_time_s", "sps"}
# 50-step rollouts of 100-step (nav) and 200-step (alchemy) episodes: episodes, and SIL's episodes in progress,
# span iterations, so the vector env's state and the loop's bookkeeping must be in the checkpoint
RESUMED = {
    "nav": ["--num-iterations", "8", "--num-envs", "8", "--num-steps", "50", "--sil-fraction", "1",
            "--hidden-size", "16", "--checkpoint-every", "1"],
    "alchemy": ["--env", "alchemy", "--num-iterations", "6", "--num-envs", "8", "--num-steps", "50",
                "--hidden-size", "16", "--checkpoint-every", "1"],
}


def start(cwd, *flags):
    return subprocess.Popen([sys.executable, str(SCRIPT), *flags], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def without_time(run_dir: pathlib.Path) -> dict:
    return {k: v for k, v in json.loads((run_dir / "summary.json").read_text()).items() if k not in TIME_FIELDS}


@pytest.mark.parametrize("env", list(RESUMED))
def test_killed_at_a_random_moment_and_resumed_ends_like_the_run_left_alone(env, tmp_path):
    alone, killed = tmp_path / "alone", tmp_path / "killed"
    alone.mkdir(), killed.mkdir()
    left_alone = start(alone, *RESUMED[env])  # side by side with the killed one
    process = start(killed, *RESUMED[env])
    for attempt in range(2):  # killed twice: once in the first run, once in a resumed one
        while process.poll() is None and not list(killed.glob("runs/*/checkpoint.pt")):
            time.sleep(0.005)
        if attempt:  # let the resumed process write a checkpoint of its own first
            checkpoint = next(killed.glob("runs/*/checkpoint.pt"))
            before = checkpoint.stat().st_mtime_ns
            while process.poll() is None and checkpoint.stat().st_mtime_ns == before:
                time.sleep(0.005)
        time.sleep(random.uniform(0.0, 0.4))
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=120)
        (run_dir,) = killed.glob("runs/*")
        process = start(killed, "--resume", str(run_dir.relative_to(killed)))
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    _, stderr = left_alone.communicate(timeout=300)
    assert left_alone.returncode == 0, stderr
    (alone_dir,) = alone.glob("runs/*")
    assert without_time(run_dir) == without_time(alone_dir)
    assert len(list(run_dir.glob("events.out.tfevents.*"))) >= 2  # TensorBoard continued in the run's folder


@pytest.mark.parametrize("what", ["empty folder", "not a checkpoint", "another script's"])
def test_resume_without_a_checkpoint_of_this_script_exits_2_naming_resume(what, tmp_path):
    run_dir = tmp_path / "runs" / "r"
    run_dir.mkdir(parents=True)
    if what == "not a checkpoint":
        (run_dir / "checkpoint.pt").write_bytes(b"not a checkpoint")
    if what == "another script's":
        torch.save({"args": {"meta_batch_size": 2}, "model": {}}, run_dir / "checkpoint.pt")
    result = run_cli(tmp_path, "--resume", "runs/r")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == "error: --resume must be a run folder with a checkpoint.pt of this script, got 'runs/r'\n"


def test_a_non_finite_loss_stops_the_run_with_exit_3_and_one_line(tmp_path):
    # a step of 1e37 overflows the float32 logits within the first iteration
    result = run_cli(tmp_path, "--num-iterations", "4", "--num-envs", "8", "--num-steps", "50", "--hidden-size", "16",
                     "--learning-rate", "1e37")
    assert result.returncode == 3 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: non-finite loss at iteration 1; lower --learning-rate")
    assert not list(tmp_path.glob("runs/*/summary.json"))  # a diverged run writes no summary
