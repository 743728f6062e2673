"""--track in all four training scripts: with WANDB_MODE=offline a run leaves an offline W&B run folder
whose log holds the run's config (the Args) and the TensorBoard scalars it synced."""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("wandb", reason="--track needs wandb (pip install -r requirements-dev.txt)")

ROOT = pathlib.Path(__file__).resolve().parents[1]
NAV_META = ["--num-iterations", "2", "--meta-batch-size", "2", "--episodes-per-task", "2", "--num-test-tasks", "2",
            "--eval-every", "0", "--inner-steps", "2"]
# script: (flags, a scalar tag it logs, an Args field of its own that the W&B config must hold)
RUNS = {
    "maml_vpg.py": (NAV_META, b"charts/post_adaptation_return", b"meta_batch_size"),
    "fomaml_vpg.py": (NAV_META, b"charts/post_adaptation_return", b"meta_batch_size"),
    "alchemy_maml.py": (NAV_META[:-2] + ["--hidden-size", "16", "--inner-steps", "2"], b"charts/post_adaptation_score",
                        b"see_chemistry"),
    "ppo_single_task.py": (["--total-timesteps", "2400", "--num-envs", "8", "--num-steps", "150",
                            "--num-minibatches", "2"], b"charts/episodic_return", b"total_timesteps"),
}


def run(script: pathlib.Path, flags: list[str], cwd: pathlib.Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(script), *flags], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.mark.parametrize("script", list(RUNS))
def test_track_offline_writes_the_config_and_the_synced_scalars(script, tmp_path):
    flags, scalar, config_field = RUNS[script]
    for name in (script, "nav_env.py", "alchemy_env.py"):  # run from the code's folder, as a user does
        shutil.copy(ROOT / name, tmp_path)
    result = run(tmp_path / script, [*flags, "--track", "--wandb-project-name", "meta-rl-test"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    (run_name,) = [path.name for path in (tmp_path / "runs").iterdir()]
    (offline,) = (tmp_path / "wandb").glob("offline-run-*")  # WANDB_MODE=offline: a local run folder
    (log,) = offline.glob("run-*.wandb")
    data = log.read_bytes()
    assert run_name.encode() in data  # the run's name
    assert config_field in data  # the Args as the run's config
    assert b"meta-rl-test" in data  # --wandb-project-name
    assert scalar in data  # a TensorBoard scalar, synced
    assert (offline / "files" / "code" / script).is_file()  # save_code


@pytest.mark.parametrize("script", list(RUNS))
def test_wandb_flags_without_track_exit_2_and_write_nothing(script, tmp_path):
    result = run(ROOT / script, ["--wandb-entity", "my-team", *RUNS[script][0]], tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr == "error: --wandb-entity must be left alone without --track, got 'my-team'\n"
    assert not any(tmp_path.iterdir())
