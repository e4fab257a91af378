"""Learning benchmarks: several algorithms x envs x seeds as parallel processes, then one summary.

    python bench/learning.py --algos mdpo_on ppo --envs Hopper-v5 --seeds 0 1 2 --steps 1000000 \
        --root runs/bench --out bench/results/learning_onpolicy.json

Each job is `train.py --config configs/agents/<algo>/<env>.yaml` (1 torch thread); a job whose run
directory already holds a checkpoint is resumed, so the same command continues an interrupted
benchmark. The summary holds each run's final deterministic evaluation (10 episodes) and its eval
curve; `--plot` draws mean +- std curves per (algo, env). `--report-only` trains nothing and reports the
runs as they stand (status done / partial / not started), for benchmarks that span several sessions.

Run folders (replay buffers, checkpoints) are too large to commit, and a new session starts from a fresh
checkout. `--records DIR` keeps one small committed JSON per finished run (its eval curve, the date and commit it
finished at): a finished run is recorded there, a recorded run is not trained again, and the report takes a run
that has no folder from its record.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from common import ROOT, stamp, write_report


def finished(run: dict, steps: int) -> bool:
    """Whether a run (a report row or a record) reached the benchmark's target number of steps."""
    return run["steps"] >= steps


def run_folder(root: Path, algo: str, env: str, seed: int) -> Path:
    return root / f"{algo}-{env}-s{seed}"


def record_path(records: Path, algo: str, env: str, seed: int) -> Path:
    return records / f"{algo}-{env}-s{seed}.json"


def load_record(records: Path | None, algo: str, env: str, seed: int, steps: int) -> dict | None:
    """The committed record of a run that reached `steps`, else None."""
    if records is None or not record_path(records, algo, env, seed).is_file():
        return None
    record = json.loads(record_path(records, algo, env, seed).read_text())
    return record if finished(record, steps) else None


def save_record(records: Path | None, result: dict, steps: int) -> None:
    """Record a finished run (an unfinished one is left to its folder and a later session)."""
    if records is None or not finished(result, steps) or not result["eval_curve"]:
        return
    records.mkdir(parents=True, exist_ok=True)
    path = record_path(records, result["algo"], result["env"], result["seed"])
    # compared as JSON (the record's pairs come back as lists, a fresh read's as tuples)
    if path.is_file() and json.loads(path.read_text())["eval_curve"] == json.loads(json.dumps(result["eval_curve"])):
        return  # already recorded: keep its date and commit
    write_report({**stamp(), **{k: v for k, v in result.items() if k != "wall_s"}, "status": "done"}, path)


def run_job(
    algo: str, env: str, seed: int, steps: int, root: Path, extra: list[str], time_limit: float, records: Path | None
) -> dict:
    record = load_record(records, algo, env, seed, steps)
    if record is not None:
        return {**record, "status": "done (record)"}
    run_dir = run_folder(root, algo, env, seed)
    if (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").glob("step_*")):
        cmd = [sys.executable, "train.py", "--resume", str(run_dir), f"total_steps={steps}"]
    else:
        cmd = [
            sys.executable,
            "train.py",
            "--config",
            f"configs/agents/{algo}/{env}.yaml",
            f"seed={seed}",
            f"total_steps={steps}",
            f"run_dir={run_dir}",
            "threads=1",
            "log.progress=false",
            *extra,
        ]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=time_limit or None)
        status = "done" if proc.returncode == 0 else f"failed: {proc.stderr[-500:]}"
    except subprocess.TimeoutExpired:
        status = "time limit"
    result = {
        "algo": algo,
        "env": env,
        "seed": seed,
        "status": status,
        "wall_s": round(time.perf_counter() - start),
        **read_run(run_dir),
    }
    if status == "done":
        save_record(records, result, steps)
    return result


LAST_K = 5  # evaluations averaged per seed for the `last5_*` figures


def standing(algo: str, env: str, seed: int, steps: int, root: Path, records: Path | None = None) -> dict:
    """A run as it stands, without training: "done", "partial" or "not started" (a recorded run: its record)."""
    run = read_run(run_folder(root, algo, env, seed))
    status = "not started" if not run["steps"] else ("done" if finished(run, steps) else "partial")
    result = {"algo": algo, "env": env, "seed": seed, "status": status, **run}
    if status == "done":
        save_record(records, result, steps)
    record = load_record(records, algo, env, seed, steps)
    if status != "done" and record is not None:
        return {**record, "status": "done (record)"}
    return result


def read_run(run_dir: Path) -> dict:
    rows = []
    if (run_dir / "metrics.jsonl").exists():
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    evals = [(r["step"], r["eval/return"], r.get("eval/return_std")) for r in rows if r.get("eval/return") is not None]
    steps = max((r["step"] for r in rows), default=0)
    out = {"steps": steps, "eval_curve": evals}
    if evals:
        out["final_eval_mean"], out["final_eval_std"] = evals[-1][1], evals[-1][2]
        by_step = {step: value for step, value, _ in evals}  # a resumed run may repeat its last evaluation
        out["last5_eval_mean"] = float(np.mean([by_step[k] for k in sorted(by_step)[-LAST_K:]]))
    return out


def summarize(results: list[dict], steps: int) -> dict:
    """Mean and std over the seeds that reached `steps` (unfinished runs are counted, not averaged)."""
    table = {}
    for key in sorted({(r["algo"], r["env"]) for r in results}):
        runs = [r for r in results if (r["algo"], r["env"]) == key and "final_eval_mean" in r and finished(r, steps)]
        finals = [r["final_eval_mean"] for r in runs]
        lasts = [r["last5_eval_mean"] for r in runs]
        table[f"{key[0]}/{key[1]}"] = {
            "seeds": len(finals),
            "steps": [r["steps"] for r in runs],
            "final_eval_mean_over_seeds": float(np.mean(finals)) if finals else None,
            "final_eval_std_over_seeds": float(np.std(finals)) if finals else None,
            "per_seed": finals,
            # final evaluations swing widely between neighbouring checkpoints (Hopper): also the mean of the last
            # LAST_K evaluations of each seed, then mean and std of those over seeds
            "last5_eval_mean_over_seeds": float(np.mean(lasts)) if lasts else None,
            "last5_eval_std_over_seeds": float(np.std(lasts)) if lasts else None,
            "last5_per_seed": lasts,
            "unfinished_runs": sum((r["algo"], r["env"]) == key and not finished(r, steps) for r in results),
        }
    return table


def plot(results: list[dict], path: Path, steps: int) -> None:
    """Mean +- std over the finished seeds per (algo, env); an unfinished run as its own thin dotted line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = sorted({r["env"] for r in results})
    fig, axes = plt.subplots(1, len(envs), figsize=(5.5 * len(envs), 4), squeeze=False)
    for ax, env in zip(axes[0], envs):
        for i, algo in enumerate(sorted({r["algo"] for r in results if r["env"] == env})):
            color = f"C{i}"
            runs = [r for r in results if r["env"] == env and r["algo"] == algo and r["eval_curve"]]
            curves = [r["eval_curve"] for r in runs if finished(r, steps)]
            if curves:
                # the steps every seed evaluated at (a resumed run may repeat one; a record may lack some)
                by_step = [{step: v for step, v, _ in c} for c in curves]
                common = sorted(set.intersection(*(set(d) for d in by_step)))
                values = np.array([[d[k] for k in common] for d in by_step])
                mean, std = values.mean(0), values.std(0)
                ax.plot(common, mean, color=color, label=f"{algo} ({len(curves)} seeds)")
                ax.fill_between(common, mean - std, mean + std, color=color, alpha=0.2)
            for r in runs:
                if not finished(r, steps):
                    xs, ys = zip(*[(step, v) for step, v, _ in r["eval_curve"]])
                    ax.plot(xs, ys, color=color, lw=0.8, ls=":", label=f"{algo} seed {r['seed']} (unfinished)")
        ax.set_title(env)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("deterministic eval return")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--algos", nargs="+", required=True)
    parser.add_argument("--envs", nargs="+", required=True)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--root", default="runs/bench")
    parser.add_argument("--workers", type=int, default=0, help="parallel jobs (default: one per job)")
    parser.add_argument("--time-limit", type=float, default=0, help="seconds per job (0 = none)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--plot", default="")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: report the runs under --root as they stand (partial ones marked), e.g. between sessions",
    )
    parser.add_argument(
        "--records",
        default="",
        help="folder of committed per-run records: finished runs are recorded there and not trained again",
    )
    parser.add_argument("overrides", nargs="*", help="extra key=value overrides for every job")
    args = parser.parse_args()
    # seed-major order: with fewer workers than jobs, every (algo, env) pair advances together.
    jobs = [(a, e, s) for s in args.seeds for e in args.envs for a in args.algos]
    root = Path(args.root).resolve()
    records = Path(args.records).resolve() if args.records else None
    if args.report_only:
        results = [standing(a, e, s, args.steps, root, records) for a, e, s in jobs]
    else:
        with ThreadPoolExecutor(args.workers or len(jobs)) as pool:
            futures = [
                pool.submit(run_job, a, e, s, args.steps, root, args.overrides, args.time_limit, records)
                for a, e, s in jobs
            ]
            results = [f.result() for f in futures]
    report = {
        **stamp(),
        "report_only": args.report_only,
        "target_steps": args.steps,
        "summary": summarize(results, args.steps),
        "runs": results,
    }
    write_report(report, args.out)
    if args.plot:
        plot(results, Path(args.plot), args.steps)
    print(json.dumps(report["summary"], indent=1))


if __name__ == "__main__":
    main()
