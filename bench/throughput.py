"""Throughput side by side with Stable-Baselines3 on the same work, in the same run.

    python bench/throughput.py --env Hopper-v5 --threads 2 [--repeats 2] [--out bench/results/throughput.json]

Ours: PPO (1 env, 2048 steps/rollout, minibatch 64, 10 epochs; our default single torch thread, which
is faster for 64-64 nets; SB3 gets --threads) and SAC (--threads) (batch 256, one update per
env step, actor update every step, updates from the first step) through the real training loops.
Peer: the anchor script `sb3_sps.py` (same settings; 20,480 PPO steps, 3,000 SAC steps) and
`raw_env_sps.py` (random actions: the ceiling for any agent), run as subprocesses beside ours.
Anchors are looked up in $RLOPT_ANCHORS, else ../shared/tools/anchors next to the checkout.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import tempfile
import time

from common import ROOT, run_anchor, stamp, write_report


def ours(algo: str, env_id: str, steps: int, threads: int) -> float:
    """Env steps/s of our training loop (set-up and final evaluation excluded)."""
    from rlopt.agents import loops
    from rlopt.config import load_config

    overrides = [
        f"algo={algo}",
        f"env.id={env_id}",
        f"total_steps={steps}",
        f"threads={threads}",
        "log.progress=false",
        "log.tensorboard=false",
        "checkpoint.every_steps=0",
        "eval.every_steps=0",
        f"run_dir={tempfile.mkdtemp(prefix='rlopt-bench-')}",
    ]
    if algo == "ppo":
        overrides += ["agent.rollout_steps=2048", "agent.num_minibatches=32", "agent.update_epochs=10"]
    else:  # SB3's SAC: one actor and one critic update per env step, from the first step
        overrides += ["agent.batch_size=256", "agent.learning_starts=0", "agent.policy_frequency=1"]
    run = loops.setup(load_config(None, overrides))
    loop = loops.on_policy_loop if algo == "ppo" else loops.off_policy_loop
    start = time.perf_counter()
    loop(run, steps)
    elapsed = time.perf_counter() - start
    run.logger.close()
    return run.step / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--env", default="Hopper-v5")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="alternate ours/SB3 this many times; report medians")
    parser.add_argument("--ppo-steps", type=int, default=20480)
    parser.add_argument("--sac-steps", type=int, default=3000)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "throughput.json"))
    args = parser.parse_args()
    samples: dict[str, list[float]] = {k: [] for k in ("raw", "ppo", "sb3_ppo", "sac", "sb3_sac")}
    for _ in range(args.repeats):
        raw = run_anchor("raw_env_sps.py", args.env)
        samples["raw"].append(float(re.search(r"single (\d+)", raw).group(1)))
        # each of ours runs next to the SB3 half it is compared with (the anchor times PPO, then SAC),
        # so a drift of the machine within a repeat moves both sides of a ratio alike
        samples["ppo"].append(ours("ppo", args.env, args.ppo_steps, 0))  # auto: 1 thread for the 64-64 nets
        sb3 = run_anchor("sb3_sps.py", args.env, str(args.threads))
        samples["sb3_ppo"].append(float(re.search(r"ppo_sps (\d+)", sb3).group(1)))
        samples["sb3_sac"].append(float(re.search(r"sac_sps (\d+)", sb3).group(1)))
        samples["sac"].append(ours("sac", args.env, args.sac_steps, args.threads))
        print({k: round(v[-1], 1) for k, v in samples.items()}, flush=True)
    med = {k: statistics.median(v) for k, v in samples.items()}
    report = {
        **stamp(),
        "env": args.env,
        "threads": args.threads,
        "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "samples": samples,
        "steps_per_s": {k: round(v, 1) for k, v in med.items()},
        "per_repeat": {
            algo: [round(a / b, 2) for a, b in zip(samples[algo], samples[f"sb3_{algo}"])] for algo in ("ppo", "sac")
        },
        "ppo_vs_sb3": round(med["ppo"] / med["sb3_ppo"], 2),
        "sac_vs_sb3": round(med["sac"] / med["sb3_sac"], 2),
        "ppo_fraction_of_raw_env": round(med["ppo"] / med["raw"], 3),
    }
    print(write_report(report, args.out))


if __name__ == "__main__":
    main()
