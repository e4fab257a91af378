"""End to end through the command line: train, resume, evaluate, error messages."""

import json
import subprocess
import sys

import pytest

pytest.importorskip("mujoco")

FAST = [
    "agent.rollout_steps=64",
    "agent.num_minibatches=2",
    "agent.update_epochs=1",
    "total_steps=256",
    "log.every_steps=64",
    "eval.episodes=2",
    "log.progress=false",
]


def run(*args):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300)


def test_train_then_evaluate_writes_report_and_plot(tmp_path):
    out = run("train.py", "--config", "configs/agents/ppo/InvertedPendulum-v5.yaml", *FAST, f"run_dir={tmp_path}")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "config.yaml").is_file() and (tmp_path / "checkpoints" / "step_256").is_dir()
    assert list((tmp_path / "tb").iterdir())
    out = run("evaluate.py", str(tmp_path), "--episodes", "3")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["episodes"] == 3 and report["algo"] == "ppo" and report["env_id"] == "InvertedPendulum-v5"
    assert report["step"] == 256 and len(report["returns"]) == 3
    assert report["mean_return"] == pytest.approx(sum(report["returns"]) / 3)
    assert json.loads((tmp_path / "eval.json").read_text())["mean_return"] == report["mean_return"]
    assert (tmp_path / "plots" / "learning_curve.png").stat().st_size > 1000


def test_console_script_resume_continues(tmp_path):
    mdpo = ["agent.rollout_steps=64", "agent.inner_steps=2", "agent.vf_epochs=1", *FAST[3:]]
    out = run(
        "-m",
        "rlopt.cli",
        "train",
        "--config",
        "configs/agents/mdpo_on/InvertedPendulum-v5.yaml",
        *mdpo,
        f"run_dir={tmp_path}",
    )
    assert out.returncode == 0, out.stderr
    out = run("-m", "rlopt.cli", "train", "--resume", str(tmp_path), "total_steps=512")
    assert out.returncode == 0, out.stderr
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 512 and (tmp_path / "checkpoints" / "step_512").is_dir()


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("env.id=NoSuchEnv-v9", "env.id"),
        ("agent.no_such_key=1", "agent.no_such_key"),
        ("agent.lr=fast", "agent.lr"),
        ("agent.gamma=1.5", "agent.gamma"),
        ("env.num_envs=0", "env.num_envs"),
        ("total_steps=-5", "total_steps"),
    ],
)
def test_bad_config_is_one_clear_error(tmp_path, override, needle):
    out = run("train.py", "--config", "configs/agents/ppo/InvertedPendulum-v5.yaml", override, f"run_dir={tmp_path}")
    assert out.returncode == 2
    assert needle in out.stderr and "Traceback" not in out.stderr


def test_evaluate_video(tmp_path):
    pytest.importorskip("imageio_ffmpeg")
    out = run("train.py", "--config", "configs/agents/ppo/InvertedPendulum-v5.yaml", *FAST, f"run_dir={tmp_path}")
    assert out.returncode == 0, out.stderr
    out = run("evaluate.py", str(tmp_path), "--episodes", "1", "--video", "--checkpoint", "step_256")
    if out.returncode != 0 and "egl" in out.stderr.lower():
        pytest.skip("no offscreen OpenGL (EGL) on this machine")
    assert out.returncode == 0, out.stderr
    videos = list((tmp_path / "videos").glob("*.mp4"))
    assert len(videos) == 1 and videos[0].stat().st_size > 1000
