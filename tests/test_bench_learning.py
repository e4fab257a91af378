"""bench/learning.py's bookkeeping: run records that outlive a fresh checkout, the report and the summary.

The benchmark spans sessions, so a mistake here silently retrains, drops or double-counts seeds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import learning  # noqa: E402  (bench/ is a folder of scripts, not a package)

TARGET = 30


def write_run(root: Path, algo: str, seed: int, evals: list[tuple[int, float]], last_step: int | None = None) -> None:
    """A run folder whose metrics.jsonl holds these evaluations (and a training row at `last_step`)."""
    folder = learning.run_folder(root, algo, "Hopper-v5", seed)
    folder.mkdir(parents=True)
    rows = [{"step": s, "eval/return": v, "eval/return_std": 1.0} for s, v in evals]
    if last_step is not None:
        rows.append({"step": last_step, "episode/return": 0.0})
    (folder / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


@pytest.fixture
def no_git(monkeypatch):
    """A fixed stamp, so tests neither need git nor depend on the checkout's commit."""
    stamps = iter([{"date": "d1", "commit": "c1"}, {"date": "d2", "commit": "c2"}, {"date": "d3", "commit": "c3"}])
    monkeypatch.setattr(learning, "stamp", lambda: next(stamps))


def test_read_run_final_and_last_k_ignore_a_repeated_evaluation(tmp_path):
    # a resumed run evaluates its last step again: the repeat must not count twice in last-5
    evals = [(10, 1.0), (20, 2.0), (30, 3.0), (40, 4.0), (50, 5.0), (60, 6.0), (60, 6.0)]
    write_run(tmp_path, "sac", 0, evals)
    run = learning.read_run(learning.run_folder(tmp_path, "sac", "Hopper-v5", 0))
    assert run["steps"] == 60 and run["final_eval_mean"] == 6.0 and run["final_eval_std"] == 1.0
    assert run["last5_eval_mean"] == pytest.approx((2 + 3 + 4 + 5 + 6) / 5)
    assert learning.read_run(tmp_path / "missing") == {"steps": 0, "eval_curve": []}


def test_finished_run_is_recorded_once_and_an_unfinished_one_not_at_all(tmp_path, no_git):
    records = tmp_path / "records"
    write_run(tmp_path, "sac", 0, [(10, 1.0), (20, 2.0)])  # unfinished
    assert learning.standing("sac", "Hopper-v5", 0, TARGET, tmp_path, records)["status"] == "partial"
    assert not records.exists()

    write_run(tmp_path, "sac", 1, [(10, 1.0), (30, 3.0)])  # finished
    assert learning.standing("sac", "Hopper-v5", 1, TARGET, tmp_path, records)["status"] == "done"
    path = learning.record_path(records, "sac", "Hopper-v5", 1)
    first = json.loads(path.read_text())
    assert (first["commit"], first["steps"], first["final_eval_mean"]) == ("c1", 30, 3.0)
    # a second report of the same run keeps the first stamp (its curve comes back from JSON as lists)
    learning.standing("sac", "Hopper-v5", 1, TARGET, tmp_path, records)
    assert json.loads(path.read_text()) == first


def test_record_stands_in_for_a_missing_folder_and_is_not_retrained(tmp_path, no_git, monkeypatch):
    records = tmp_path / "records"
    write_run(tmp_path, "sac", 0, [(10, 1.0), (30, 3.0)])
    learning.standing("sac", "Hopper-v5", 0, TARGET, tmp_path, records)
    fresh = tmp_path / "fresh_checkout"  # the run folders are gone, the committed records are not

    got = learning.standing("sac", "Hopper-v5", 0, TARGET, fresh, records)
    assert got["status"] == "done (record)" and got["final_eval_mean"] == 3.0

    def no_training(*args, **kwargs):
        raise AssertionError("a recorded run was trained again")

    monkeypatch.setattr(subprocess, "run", no_training)
    assert learning.run_job("sac", "Hopper-v5", 0, TARGET, fresh, [], 0, records)["status"] == "done (record)"
    # a record short of a longer target does not count as finished
    assert learning.load_record(records, "sac", "Hopper-v5", 0, 2 * TARGET) is None


def test_summary_averages_finished_seeds_and_counts_the_rest(tmp_path):
    write_run(tmp_path, "sac", 0, [(10, 1.0), (30, 3.0)])
    write_run(tmp_path, "sac", 1, [(10, 2.0), (30, 5.0)])
    write_run(tmp_path, "sac", 2, [(10, 100.0)], last_step=20)  # unfinished: not in the mean
    results = [learning.standing("sac", "Hopper-v5", s, TARGET, tmp_path) for s in range(3)]
    row = learning.summarize(results, TARGET)["sac/Hopper-v5"]
    assert row["seeds"] == 2 and row["unfinished_runs"] == 1
    assert row["per_seed"] == [3.0, 5.0]
    assert row["final_eval_mean_over_seeds"] == pytest.approx(4.0)
    assert row["final_eval_std_over_seeds"] == pytest.approx(1.0)
