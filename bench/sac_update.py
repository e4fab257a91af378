"""SAC gradient steps per second alone (no env), ours against the anchor's plain-PyTorch floor, alternating.

    python bench/sac_update.py --threads 2 [--repeats 3] [--out bench/results/sac_update.json]

Ours: `SACAgent.update` with the Hopper-v5 shapes (11 observations, 3 actions), 256-256 networks, batch 256,
CleanRL's schedule (two actor steps every second update, so one per update on average), subnormals flushed as
in the training loop. The floor: `sac_update_floor.py` (one critic and one actor step per update). Each
measurement runs in its own process; per-repeat rates and the median ratio are written to --out.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time

from common import ROOT, run_anchor, stamp, write_report


def ours(threads: int, calls: int = 200) -> float:
    import numpy as np
    import torch

    from rlopt.agents.base import EnvSpec
    from rlopt.agents.buffers import ReplayBatch
    from rlopt.agents.sac import SACAgent, SACConfig

    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    agent = SACAgent(SACConfig(), EnvSpec(11, 3, -np.ones(3, np.float32), np.ones(3, np.float32)))
    n = agent.cfg.batch_size
    obs, actions = torch.randn(n, 11), torch.rand(n, 3) * 2 - 1
    batch = ReplayBatch(obs, actions, torch.randn(n), torch.randn(n, 11), torch.zeros(n))
    for _ in range(50):
        agent.update(batch)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            agent.update(batch)
        best = min(best, (time.perf_counter() - start) / calls)
    return 1.0 / best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "sac_update.json"))
    args = parser.parse_args()
    if args.child:
        print(f"RESULT {ours(args.threads):.2f}")
        return
    rates: dict[str, list[float]] = {"rlopt": [], "floor": []}
    for _ in range(args.repeats):
        cmd = [sys.executable, __file__, "--child", "--threads", str(args.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT).stdout
        rates["rlopt"].append(float(re.search(r"RESULT ([\d.]+)", out).group(1)))
        out = run_anchor("sac_update_floor.py", str(args.threads))
        rates["floor"].append(float(re.search(r"sac_updates_per_s ([\d.]+)", out).group(1)))
        print(f"rlopt {rates['rlopt'][-1]:.0f}  floor {rates['floor'][-1]:.0f} updates/s", flush=True)
    ratios = [round(a / b, 2) for a, b in zip(rates["rlopt"], rates["floor"])]
    report = {
        **stamp(),
        "threads": args.threads,
        "work": "one SAC gradient step, 256-256 nets, batch 256, Hopper-v5 shapes; updates/s (best of 5 x 200)",
        "samples": rates,
        "ratio_per_repeat": ratios,
        "ratio_median": statistics.median(ratios),
    }
    print(write_report(report, args.out))


if __name__ == "__main__":
    main()
