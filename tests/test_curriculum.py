"""benchmark/curriculum.py, experiment 7's task samplers: their weights by hand on a small grid of goal bins, the
frontier's band moving with the success rates, the resampling from the target distribution, the difficulty image,
and runs through its command line (the uniform sampler's run is the script's own, figure for figure)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nav_env
from benchmark import curriculum, nav_optimal

ROOT = Path(__file__).resolve().parents[1]


def sampler_of(kind, **flags):
    return curriculum.TaskSampler(curriculum.Args(task_sampler=kind, sampler_bins=2, **flags))  # 4 bins of 5 x 5


def test_plr_weights_by_hand():
    sampler = sampler_of("plr", plr_temperature=0.5, plr_staleness=0.2)  # P_S ~ rank^-2
    sampler.mass[:] = [2, 1, 1, 0]  # bin 3: the target distribution has not been seen there
    sampler.visits[:] = [1, 1, 0, 0]  # bin 2 has no score yet: the hardest
    sampler.score[:] = [5.0, 3.0, 0.0, 0.0]
    sampler.last_trained[:] = [7, 4, 0, 0]
    sampler.iteration = 10
    # ranks 2, 3, 1 -> 1/4, 1/9, 1 = (9, 4, 36) / 36; staleness 3, 6, 10 of 19
    expected = [0.8 * 9 / 49 + 0.2 * 3 / 19, 0.8 * 4 / 49 + 0.2 * 6 / 19, 0.8 * 36 / 49 + 0.2 * 10 / 19, 0.0]
    np.testing.assert_allclose(sampler.probabilities(), expected, rtol=1e-12)
    sampler.visits[:] = 1
    sampler.score[:] = [5.0, 5.0, 1.0, 0.0]  # a tie shares the best rank: 1, 1, 3
    expected = [0.8 * 9 / 19 + 0.2 * 3 / 19, 0.8 * 9 / 19 + 0.2 * 6 / 19, 0.8 * 1 / 19 + 0.2 * 10 / 19, 0.0]
    np.testing.assert_allclose(sampler.probabilities(), expected, rtol=1e-12)


def test_cvar_weights_by_hand():
    sampler = sampler_of("cvar", cvar_alpha=0.5, cvar_uniform=0.2)
    sampler.mass[:] = [1, 1, 2, 0]  # mass shares 1/4, 1/4, 1/2
    sampler.visits[:] = [1, 1, 1, 0]
    sampler.score[:] = [1.0, 9.0, 5.0, 0.0]
    # the alpha = 1/2 tail: all of bin 1 (1/4), then half of bin 2 (1/4 of its 1/2); 0.2 of the weight stays uniform
    expected = [0.2 * 0.25, 0.2 * 0.25 + 0.8 * 0.25 / 0.5, 0.2 * 0.5 + 0.8 * 0.25 / 0.5, 0.0]
    np.testing.assert_allclose(sampler.probabilities(), expected, rtol=1e-12)
    assert sampler.probabilities().tolist() == pytest.approx([0.05, 0.45, 0.5, 0.0])
    sampler.visits[0] = 0  # no score yet: the hardest, so it joins the tail first
    expected = [0.2 * 0.25 + 0.8 * 0.25 / 0.5, 0.2 * 0.25 + 0.8 * 0.25 / 0.5, 0.2 * 0.5, 0.0]
    np.testing.assert_allclose(sampler.probabilities(), expected, rtol=1e-12)


def test_frontier_weights_by_hand():
    sampler = sampler_of("frontier", frontier_band=(0.1, 0.9), frontier_uniform=0.2)
    sampler.mass[:] = [2, 1, 1, 0]  # mass shares 1/2, 1/4, 1/4; bin 3: the target distribution has not been seen there
    sampler.visits[:] = [1, 1, 1, 0]
    sampler.success[:] = [0.5, 0.95, 0.05, 0.5]  # only bin 0 in the band (bin 3 has no success rate yet)
    np.testing.assert_allclose(sampler.probabilities(), [0.2 * 0.5 + 0.8, 0.2 * 0.25, 0.2 * 0.25, 0.0], rtol=1e-12)
    sampler.success[:] = [0.5, 0.1, 0.9, 0.5]  # the band's ends are in it: bins 0, 1, 2 share 0.8 by mass 2 : 1 : 1
    expected = [0.2 * 0.5 + 0.8 * 0.5, 0.2 * 0.25 + 0.8 * 0.25, 0.2 * 0.25 + 0.8 * 0.25, 0.0]
    np.testing.assert_allclose(sampler.probabilities(), expected, rtol=1e-12)
    sampler.success[:] = [0.0, 1.0, 0.099, 0.5]  # no bin in the band: the target distribution as it is
    np.testing.assert_allclose(sampler.probabilities(), [0.5, 0.25, 0.25, 0.0], rtol=1e-12)


def test_the_frontier_band_moves_as_the_success_rates_change():
    """A bin enters the band when its learners start to reach it and leaves it once they reach it nearly always:
    with an EMA weight of 0.3 and a success rate of 1 from then on, its estimate after k updates is 1 - 0.7^k, in
    [0.1, 0.9] for k = 1..6 (0.3 ... 0.882) and above it from k = 7 (0.918)."""
    sampler = sampler_of("frontier", sampler_ema=0.3, frontier_uniform=0.2)
    sampler.mass[:] = [1, 1, 1, 1]
    corners = np.array([[1.0, 1.0], [1.0, 9.0], [9.0, 1.0], [9.0, 9.0]])  # one goal in each bin: 0, 1, 2, 3
    assert sampler.bin_of(corners).tolist() == [0, 1, 2, 3]
    sampler.update(corners, [0.0] * 4, [0.0, 0.0, 0.5, 0.0], iteration=1)  # bin 2 at 0.5: the band
    np.testing.assert_allclose(sampler.probabilities(), [0.05, 0.05, 0.85, 0.05], rtol=1e-12)
    for k in range(1, 8):  # bin 0 reached every time from now on, bin 2 stays at 0.5
        sampler.update(corners[[0, 2]], [0.0] * 2, [1.0, 0.5], iteration=1 + k)
        assert sampler.success[0] == pytest.approx(1 - 0.7**k)
        in_band = [k <= 6, False, True, False]
        share = 0.8 / sum(in_band)
        np.testing.assert_allclose(sampler.probabilities(), [0.05 + share * b for b in in_band], rtol=1e-12)
    sampler.update(corners[[2]], [0.0], [0.95], iteration=9)  # 0.7 * 0.5 + 0.3 * 0.95 = 0.635: still in
    sampler.update(corners[[2]], [0.0], [0.0], iteration=10)  # 0.7 * 0.635 = 0.4445
    assert sampler.success[2] == pytest.approx(0.4445)
    for _ in range(7):  # 0.4445 * 0.7^7 = 0.0366 < 0.1: forgotten, it leaves the band; nothing is left in it
        sampler.update(corners[[2]], [0.0], [0.0], iteration=11)
    np.testing.assert_allclose(sampler.probabilities(), [0.25] * 4, rtol=1e-12)


def test_frontier_grow_adds_the_unsolved_bins_that_border_a_reached_one():
    """3 x 3 bins (index x_bin * 3 + y_bin): (0, 0) in the band, (2, 2) above it, the rest at 0 or never trained on.
    Growing adds (0, 1), (1, 0), (1, 1) round the first and (1, 2), (2, 1) round the second; (0, 2) and (2, 0)
    border neither, and (2, 2) stays out (it is solved)."""
    sampler = curriculum.TaskSampler(curriculum.Args(task_sampler="frontier", sampler_bins=3, frontier_uniform=0.1))
    sampler.mass[:] = 1
    sampler.visits[:] = [1, 1, 1, 1, 1, 1, 1, 1, 1]
    sampler.visits[5] = 0  # (1, 2) has no success rate yet: it is below the band too
    sampler.success[:] = [0.5, 0, 0, 0, 0, 0, 0, 0, 0.95]
    np.testing.assert_allclose(sampler.probabilities(), [0.1 / 9 + 0.9] + [0.1 / 9] * 8, rtol=1e-12)
    sampler.args.frontier_grow = True
    grown = [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (2, 1)]
    expected = [0.1 / 9 + 0.9 / 6 * ((x, y) in grown) for x in range(3) for y in range(3)]
    np.testing.assert_allclose(sampler.probabilities(), expected, rtol=1e-12)


def test_uniform_follows_the_mass_and_no_mass_means_uniform_over_bins():
    sampler = sampler_of("uniform")
    np.testing.assert_allclose(sampler.probabilities(), [0.25] * 4)
    sampler.mass[:] = [3, 1, 0, 0]
    np.testing.assert_allclose(sampler.probabilities(), [0.75, 0.25, 0, 0])


def test_bins_scores_and_the_difficulty_map_by_hand():
    sampler = curriculum.TaskSampler(curriculum.Args(task_sampler="plr", sampler_bins=10, sampler_ema=0.25))
    goals = np.array([[0.0, 0.0], [9.9, 0.1], [10.0, 10.0], [5.0, 4.9], [0.9, 0.9]])
    assert sampler.bin_of(goals).tolist() == [0, 90, 99, 54, 0]
    sampler.update(goals[:2], [4.0, 7.0], [0.2, 0.6], iteration=3)
    sampler.update(goals[[0, 4]], [8.0, 16.0], [1.0, 0.6], iteration=5)  # bin 0: 4, then 0.75 * 4 + 0.25 * mean(8, 16)
    assert sampler.score[0] == pytest.approx(6.0) and sampler.visits[0] == 3 and sampler.last_trained[0] == 5
    assert sampler.score[90] == 7.0 and sampler.last_trained[90] == 3
    assert sampler.success[0] == pytest.approx(0.75 * 0.2 + 0.25 * 0.8) and sampler.success[90] == 0.6
    assert sampler.difficulty_map(sampler.success)[0, 9] == 0.6
    difficulty = sampler.difficulty_map()  # row: y bin from the bottom, column: x bin
    assert difficulty[0, 0] == pytest.approx(6.0) and difficulty[0, 9] == 7.0
    assert np.isnan(difficulty).sum() == 98
    listed = curriculum.none_if_nan(difficulty)
    assert listed[0][9] == 7.0 and listed[9][9] is None and len(listed) == 10 and len(listed[0]) == 10


def test_the_difficulty_image_puts_each_bin_where_it_is_and_its_colour_scale_under_the_map():
    difficulty = np.full((10, 10), np.nan)  # row: y bin from the bottom, column: x bin
    difficulty[0, 9], difficulty[0, 0], difficulty[5, 2] = 80.0, 0.0, 20.0
    image = curriculum.difficulty_image(difficulty, "medium", "test")
    assert image.shape[1:] == (320, 3) and image.shape[0] > 320 and image.dtype == np.uint8
    margin, scale = nav_env.render_layout(320)

    def pixel(x, y):  # the image's pixel at map point (x, y), as nav_env.render_layout places it
        return image[int(320 - margin - y * scale), int(margin + x * scale)].astype(int)

    # the colours' meaning, derived by hand: white = a gap of 0, red = the highest gap, grey = no score
    assert pixel(9.5, 0.5).tolist() == [255, int(255 * 0.15), int(255 * 0.15)]  # bin (x 9, y 0): 80, full red
    assert pixel(0.5, 0.5).tolist() == [255, 255, 255]  # bin (0, 0): a gap of 0, white
    assert pixel(2.5, 5.5).tolist() == [255, int(255 * (1 - 0.85 / 4)), int(255 * (1 - 0.85 / 4))]  # 20 of 80
    assert pixel(0.5, 9.5).tolist() == [190] * 3 and pixel(7.5, 2.5).tolist() == [190] * 3  # no score yet
    # the colour scale under the map: a bar from white (0) to red (the highest gap), and the grey swatch
    strip = image[320:].astype(int)
    reddish = (strip[..., 0] == 255) & (strip[..., 1] < 80) & (strip[..., 2] < 80)
    bar_rows = np.flatnonzero(reddish.any(1))
    assert len(bar_rows) >= 5
    row = strip[bar_rows[len(bar_rows) // 2]]
    red_columns = np.flatnonzero(reddish[bar_rows[len(bar_rows) // 2]])
    inside = row[red_columns.max() - 120 : red_columns.max() + 1]  # the bar's right end is red, it fades leftwards
    assert (np.diff(inside[:, 1]) <= 0).all() and inside[0, 1] > 230 and inside[-1, 1] < 60
    assert ((strip == 190).all(-1)).sum() >= 50  # the swatch of "no score yet"
    no_score = curriculum.difficulty_image(np.full((10, 10), np.nan), "none", "test")  # nothing scored yet: no error
    assert no_score.shape == image.shape


@pytest.mark.parametrize("kind", ["plr", "cvar", "frontier"])
def test_sampled_bins_follow_the_probabilities_and_goals_the_target_inside_a_bin(kind):
    sampler = curriculum.TaskSampler(curriculum.Args(task_sampler=kind, sampler_bins=2))
    sampler.visits[:] = 1
    sampler.score[:] = [0.0, 100.0, 0.0, 50.0]  # bin 1 = (x bin 0, y bin 1): Q2, the upper left quadrant
    sampler.success[:] = [0.0, 0.5, 1.0, 0.95]  # frontier: bin 1 alone in the band
    sampler.mass[:] = 10**9  # the target's mass per bin, as if known (uniform: a quarter each)
    expected = sampler.probabilities()  # constant here: nothing is trained on, so no staleness changes
    rng = np.random.default_rng(0)
    goals = np.concatenate([sampler.sample(8, rng, 1) for _ in range(500)])
    shares = np.bincount(sampler.bin_of(goals), minlength=4) / len(goals)
    assert np.abs(shares - expected).max() < 4 * np.sqrt(0.25 / len(goals))  # 4 standard errors at most
    assert expected[1] > 0.5
    in_q2 = goals[sampler.bin_of(goals) == 1]  # uniform targets: uniform over the quadrant's grid points
    assert np.abs(in_q2.mean(0) - [2.5, 7.5]).max() < 0.15 and in_q2[:, 0].min() < 0.3 and in_q2[:, 1].max() > 9.7
    assert sampler.quadrant_counts.sum() == 4000


def test_a_bin_the_target_never_reaches_gets_goals_of_the_target_anyway():
    sampler = curriculum.TaskSampler(curriculum.Args(task_sampler="plr", sampler_bins=4, targets="narrow"))
    sampler.MAX_ROUNDS = 3
    sampler.mass[:] = 1  # as if every bin had been seen; narrow (x <= 5) never reaches x >= 7.5, bins 12..15
    sampler.visits[:12] = 1  # bins 12..15 have no score yet: the hardest, so most tasks pick one of them
    goals = sampler.sample(8, np.random.default_rng(0), 1)
    assert (goals[:, 0] <= 5).all() and len(np.unique(goals, axis=0)) == 8  # narrow's goals, none twice
    assert sampler.mass.sum() == 16 + 3 * 512 and sampler.mass[12:].tolist() == [1] * 4


# --- the command line ---------------------------------------------------------------------------------

TINY = ["--num-iterations", "2", "--meta-batch-size", "2", "--episodes-per-task", "2", "--num-test-tasks", "4",
        "--hidden-size", "16", "--eval-every", "1"]


def run_curriculum(flags, cwd):
    """python -m benchmark.curriculum in cwd, with the repository on the path (as the sweep runner runs it)."""
    return subprocess.run([sys.executable, "-m", "benchmark.curriculum", *flags], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.parametrize("script, kind", [("maml_vpg.py", "plr"), ("fomaml_vpg.py", "cvar"),
                                          ("maml_vpg.py", "frontier")])
def test_sampler_keys_in_the_summary_through_the_cli(script, kind, tmp_path):
    result = run_curriculum([*TINY, "--script", script, "--task-sampler", kind], tmp_path)
    assert result.returncode == 0, result.stderr
    (path,) = tmp_path.glob("runs/*/summary.json")
    summary = json.loads(path.read_text())
    assert summary["args"]["task_sampler"] == kind and summary["args"]["script"] == script
    for key in ["pre_adaptation_success_rate", "post_adaptation_success_rate", "optimal_success_rate",
                "post_adaptation_return_gap", "post_adaptation_success_rate_on_reachable", "success_after_steps"]:
        assert summary[key] is not None, key
    assert len(summary["post_adaptation_success_rate_by_quadrant"]) == 4
    assert len(summary["post_adaptation_success_rate_on_reachable_by_quadrant"]) == 4
    assert sum(summary["sampled_share_by_quadrant"]) == pytest.approx(1.0)
    difficulty = summary["difficulty_map"]
    assert len(difficulty) == 10 and all(len(row) == 10 for row in difficulty)
    scored = [value for row in difficulty for value in row if value is not None]
    assert 1 <= len(scored) <= 4 and all(value >= 0 for value in scored)  # 2 iterations x 2 tasks; gaps >= 0
    rates = [value for row in summary["success_map"] for value in row if value is not None]
    assert len(rates) == len(scored) and all(0 <= value <= 1 for value in rates)
    assert summary["median_sampler_time_s"] > 0
    assert len(list(path.parent.glob("events.out.tfevents.*"))) == 1


@pytest.mark.parametrize("script", ["maml_vpg.py", "fomaml_vpg.py"])
def test_the_uniform_sampler_is_the_scripts_own_run(script, tmp_path):
    """--task-sampler uniform draws the goals as the script does: every figure of the script's summary is the same."""
    (tmp_path / "script").mkdir(), (tmp_path / "curriculum").mkdir()
    flags = TINY + ["--inner-steps", "2"]
    plain = subprocess.run([sys.executable, str(ROOT / script), *flags], cwd=tmp_path / "script", capture_output=True,
                           text=True, timeout=300)
    assert plain.returncode == 0, plain.stderr
    result = run_curriculum(flags + ["--script", script], tmp_path / "curriculum")
    assert result.returncode == 0, result.stderr
    times = {"wall_time_s", "train_time_s", "sps", "median_iteration_time_s", "median_sps", "args"}
    (before,), (after,) = ([json.loads(p.read_text()) for p in (tmp_path / d).glob("runs/*/summary.json")]
                           for d in ("script", "curriculum"))
    assert {k: v for k, v in before.items() if k not in times} == {
        k: v for k, v in after.items() if k in before and k not in times}
    # and beside them, the figures against the exact optimum that benchmark.nav_optimal computes from that summary
    outcomes = nav_optimal.held_out_outcomes(before)
    assert {k: v for k, v in after.items() if k in outcomes} == outcomes
    assert after["difficulty_map"] is None and after["success_map"] is None
    assert sum(after["sampled_share_by_quadrant"]) == pytest.approx(1.0)


@pytest.mark.parametrize("values, message", [
    (dict(task_sampler="plr", collision="original"), "--task-sampler must be uniform with --collision original (the "
     "samplers score tasks by their gap to the exact optimum, which benchmark.nav_optimal computes for block and stick), "
     "got 'plr'"),
    (dict(task_sampler="frontier", collision="original"), "--task-sampler must be uniform with --collision original"),
    (dict(outer_lr=float("nan")), "--outer-lr must be in (0, 1e37)"),  # the script's own checks come first
    (dict(cvar_alpha=0.0), "--cvar-alpha must be in (0, 1], got 0.0"),
    (dict(cvar_uniform=1.5), "--cvar-uniform must be in (0, 1], got 1.5"),
    (dict(sampler_ema=0.0), "--sampler-ema must be in (0, 1], got 0.0"),
    (dict(frontier_uniform=0.0), "--frontier-uniform must be in (0, 1], got 0.0"),
    (dict(frontier_band=(0.9, 0.1)), "--frontier-band must be low high, 0 <= low <= high <= 1, got (0.9, 0.1)"),
    (dict(frontier_band=(-0.1, 0.5)), "--frontier-band must be low high, 0 <= low <= high <= 1, got (-0.1, 0.5)"),
    (dict(plr_staleness=1.5), "--plr-staleness must be in [0, 1], got 1.5"),
    (dict(plr_temperature=0.0), "--plr-temperature must be > 0, got 0.0"),
    (dict(sampler_bins=0), "--sampler-bins must be > 0, got 0"),
    (dict(frontier_grow=True), "--frontier-grow must be left at its default without --task-sampler frontier, got True"),
    (dict(task_sampler="plr", cvar_alpha=0.5), "--cvar-alpha must be left at its default without --task-sampler cvar"),
])
def test_bad_sampler_values_exit_2_with_one_line(values, message, capsys):
    with pytest.raises(SystemExit) as exit:
        curriculum.check(curriculum.Args(**values))
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1
    curriculum.check(curriculum.Args(**{name: getattr(curriculum.Args(), name) for name in values}))  # defaults pass


def test_a_bad_sampler_value_through_the_cli_exits_2_with_one_line_and_writes_nothing(tmp_path):
    result = run_curriculum(["--task-sampler", "plr", "--collision", "original"], tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and not any(tmp_path.iterdir())
    assert result.stderr.startswith("error: --task-sampler must be uniform with --collision original")
