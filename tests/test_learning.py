"""Learning checks on CPU (spec agents.md §8): `pytest -m slow`. Each runs seeds until its
"k of n seeds" criterion is decided, so a typical check costs k runs."""

import json

import numpy as np
import pytest

from rlopt.agents.loops import train
from rlopt.config import load_config

pytestmark = [pytest.mark.slow, pytest.mark.mujoco]
pytest.importorskip("mujoco")


def last_training_returns(run, n=10):
    return float(np.mean(list(run.logger.recent_returns)[-n:]))


def mean_last_evals(run_dir, n=3):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r["eval/return"] for r in rows if r.get("eval/return") is not None]
    return float(np.mean(evals[-n:]))


def k_of_n(score_fn, threshold, k, n):
    """Run seeds 0..n-1 until k pass or n-k+1 fail; returns (passed, scores)."""
    scores = []
    for seed in range(n):
        scores.append(score_fn(seed))
        passed = sum(s >= threshold for s in scores)
        if passed >= k or len(scores) - passed > n - k:
            break
    return sum(s >= threshold for s in scores) >= k, scores


def common(tmp_path, seed):
    return [
        f"seed={seed}",
        f"run_dir={tmp_path / f's{seed}'}",
        "log.progress=false",
        "log.tensorboard=false",
        "checkpoint.every_steps=0",
        "threads=1",
    ]


def final_training_return(run, run_dir):
    return last_training_returns(run)


def final_eval_return(run, run_dir):
    return mean_last_evals(run_dir)


@pytest.mark.parametrize(
    ("config", "metric", "threshold"),
    [
        ("mdpo_on/InvertedPendulum-v5", final_training_return, 800.0),
        ("ppo/InvertedPendulum-v5", final_training_return, 800.0),
        ("mdpo_off/Pendulum-v1", final_eval_return, -400.0),
        ("sac/Pendulum-v1", final_eval_return, -300.0),
    ],
    ids=["mdpo_on", "ppo", "mdpo_off", "sac"],
)
def test_learns(tmp_path, config, metric, threshold):
    """The spec's CPU learning check for one algorithm: `threshold` reached in 2 of 3 seeds."""

    def score(seed):
        run = train(load_config(f"configs/agents/{config}.yaml", common(tmp_path, seed)))
        return metric(run, tmp_path / f"s{seed}")

    ok, scores = k_of_n(score, threshold, k=2, n=3)
    assert ok, scores
