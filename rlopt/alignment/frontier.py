"""The KL–gold-reward frontier over several alignment runs (spec alignment.md §8.2, frontier protocol).

Every evaluation point of every run — the periodic ones in `eval_history.jsonl` and the final `eval.json`
— is a (KL(π‖ref), gold reward) point; runs are grouped into curves by a config key (`algo` by default),
and each group's upper envelope (the best gold reward reached at or below each KL) is drawn over its
points. Proxy reward-model scores, where runs logged them, are drawn hollow on the same axes, so that
proxy↑ / gold↓ at large KL (over-optimisation) is visible.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml


def run_points(run_dir: Path) -> list[dict]:
    points = []
    history = run_dir / "eval_history.jsonl"
    if history.is_file():
        points += [json.loads(line) for line in history.read_text().splitlines() if line.strip()]
    final = run_dir / "eval.json"
    if final.is_file():
        row = json.loads(final.read_text())
        if "gold_reward" in row:
            points.append({**row, "final": True})
    return [p for p in points if p.get("kl_k1") is not None and p.get("gold_reward") is not None]


def upper_envelope(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The Pareto front of (KL, gold): sorted by KL, keeping each point that beats every lower-KL point."""
    front, best = [], float("-inf")
    for kl, gold in sorted(points):
        if gold > best:
            front.append((kl, gold))
            best = gold
    return front


def group_label(cfg: dict, key: str) -> str:
    value = cfg
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return str(value)


def plot_frontier(runs: list[str], out: str | Path, group_by: str = "algo") -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, list[dict]] = {}
    for run in runs:
        run_dir = Path(run)
        cfg_path = run_dir / "config.yaml"
        if not cfg_path.is_file():
            continue  # not a run folder (e.g. a shell glob picked up a file)
        cfg = yaml.safe_load(cfg_path.read_text()) or {}
        points = run_points(run_dir)
        if points:
            groups.setdefault(group_label(cfg, group_by), []).extend(points)
    if not groups:
        raise FileNotFoundError(f"no evaluated alignment runs among {runs} (need eval_history.jsonl or eval.json)")
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    summary = {}
    for i, (label, points) in enumerate(sorted(groups.items())):
        color = f"C{i % 10}"
        kl = [p["kl_k1"] for p in points]
        gold = [p["gold_reward"] for p in points]
        ax.scatter(kl, gold, s=12, alpha=0.4, color=color)
        front = upper_envelope(list(zip(kl, gold)))
        ax.plot([p[0] for p in front], [p[1] for p in front], color=color, label=f"{label} gold")
        proxy = [(p["kl_k1"], p["proxy_reward"]) for p in points if p.get("proxy_reward") is not None]
        if proxy:
            ax.scatter(*zip(*proxy), s=14, facecolors="none", edgecolors=color, label=f"{label} proxy")
        within = [g for k, g in zip(kl, gold) if k <= 5.0]
        summary[label] = {
            "points": len(points),
            "best_gold": max(gold),
            "best_gold_at_kl_le_5": max(within) if within else None,
            "envelope": [[round(k, 4), round(g, 4)] for k, g in front],
        }
    ax.set_xlabel("KL(π ‖ ref), nats per sequence (k1)")
    ax.set_ylabel("reward (gold: filled + envelope; proxy RM: hollow)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return {"plot": str(out), "groups": summary}
