"""Learning benchmarks: several algorithms x envs x seeds as parallel processes, then one summary.

    python bench/learning.py --algos mdpo_on ppo --envs Hopper-v5 --seeds 0 1 2 --steps 1000000 \
        --root runs/bench --out bench/results/learning_onpolicy.json

Each job is `train.py --config configs/agents/<algo>/<env>.yaml` (1 torch thread); a job whose run
directory already holds a checkpoint is resumed, so the same command continues an interrupted
benchmark. The summary holds each run's final deterministic evaluation (10 episodes) and its eval
curve; `--plot` draws mean +- std curves per (algo, env). `--report-only` trains nothing and reports the
runs as they stand (status done / partial / not started), for benchmarks that span several sessions.
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


def run_folder(root: Path, algo: str, env: str, seed: int) -> Path:
    return root / f"{algo}-{env}-s{seed}"


def run_job(algo: str, env: str, seed: int, steps: int, root: Path, extra: list[str], time_limit: float) -> dict:
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
    return {
        "algo": algo,
        "env": env,
        "seed": seed,
        "status": status,
        "wall_s": round(time.perf_counter() - start),
        **read_run(run_dir),
    }


LAST_K = 5  # evaluations averaged per seed for the `last5_*` figures


def standing(algo: str, env: str, seed: int, steps: int, root: Path) -> dict:
    """A run as it stands on disk, without training: "done", "partial" or "not started"."""
    run = read_run(run_folder(root, algo, env, seed))
    status = "not started" if not run["steps"] else ("done" if run["steps"] >= steps else "partial")
    return {"algo": algo, "env": env, "seed": seed, "status": status, **run}


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


def summarize(results: list[dict]) -> dict:
    table = {}
    for key in sorted({(r["algo"], r["env"]) for r in results}):
        runs = [r for r in results if (r["algo"], r["env"]) == key and "final_eval_mean" in r]
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
        }
    return table


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = sorted({r["env"] for r in results})
    fig, axes = plt.subplots(1, len(envs), figsize=(5.5 * len(envs), 4), squeeze=False)
    for ax, env in zip(axes[0], envs):
        for algo in sorted({r["algo"] for r in results if r["env"] == env}):
            curves = [r["eval_curve"] for r in results if r["env"] == env and r["algo"] == algo and r["eval_curve"]]
            if not curves:
                continue
            n = min(len(c) for c in curves)
            steps = np.array([c[i][0] for i in range(n) for c in curves[:1]])
            values = np.array([[c[i][1] for i in range(n)] for c in curves])
            mean, std = values.mean(0), values.std(0)
            ax.plot(steps, mean, label=f"{algo} ({len(curves)} seeds)")
            ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
        ax.set_title(env)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("deterministic eval return")
        ax.grid(alpha=0.3)
        ax.legend()
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
    parser.add_argument("overrides", nargs="*", help="extra key=value overrides for every job")
    args = parser.parse_args()
    # seed-major order: with fewer workers than jobs, every (algo, env) pair advances together.
    jobs = [(a, e, s) for s in args.seeds for e in args.envs for a in args.algos]
    root = Path(args.root).resolve()
    if args.report_only:
        results = [standing(a, e, s, args.steps, root) for a, e, s in jobs]
    else:
        with ThreadPoolExecutor(args.workers or len(jobs)) as pool:
            futures = [
                pool.submit(run_job, a, e, s, args.steps, root, args.overrides, args.time_limit) for a, e, s in jobs
            ]
            results = [f.result() for f in futures]
    report = {
        **stamp(),
        "report_only": args.report_only,
        "target_steps": args.steps,
        "summary": summarize(results),
        "runs": results,
    }
    write_report(report, args.out)
    if args.plot:
        plot(results, Path(args.plot))
    print(json.dumps(report["summary"], indent=1))


if __name__ == "__main__":
    main()
