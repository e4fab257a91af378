"""Merge learning-benchmark result files (a later file wins for the same algo/env/seed) and plot them.

    python bench/plot_learning.py bench/results/device1/learning_onpolicy.json \
        bench/results/device2/learning_ppo.json --out bench/results/hopper_onpolicy.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from learning import plot, summarize


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("results", nargs="+")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    runs = {}
    for path in args.results:
        for run in json.loads(Path(path).read_text())["runs"]:
            runs[(run["algo"], run["env"], run["seed"])] = run
    merged = list(runs.values())
    plot(merged, Path(args.out))
    print(json.dumps(summarize(merged), indent=1))


if __name__ == "__main__":
    main()
