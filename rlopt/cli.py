"""Command line: `rlopt train|evaluate` (also reached through train.py / evaluate.py)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rlopt.config import ConfigError


def train_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rlopt train", description="Train an agent from a YAML config.")
    parser.add_argument("--config", help="YAML config, e.g. configs/agents/mdpo_on/Hopper-v5.yaml")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its latest checkpoint")
    parser.add_argument(
        "--stop-at",
        type=int,
        default=0,
        metavar="STEP",
        help="stop (with a checkpoint) at this env step, as if interrupted",
    )
    parser.add_argument("overrides", nargs="*", help="key=value overrides with dotted keys (agent.lr=1e-4)")
    args = parser.parse_args(argv)
    from rlopt.config import load_config

    try:
        alignment = alignment_config(args)
        if alignment is not None:
            from rlopt.alignment.runner import run_alignment

            result = run_alignment(alignment, stop_at=args.stop_at)
            if result:
                print(json.dumps(result))
            return 0
        if args.resume:
            saved = Path(args.resume) / "config.yaml"
            if not saved.is_file():
                raise ConfigError(f"--resume: {saved} not found (is {args.resume} a run directory?)")
            cfg = load_config(saved, [*args.overrides, f"run_dir={args.resume}"])
        elif args.config:
            cfg = load_config(args.config, args.overrides)
        else:
            parser.error("give --config FILE or --resume RUN_DIR")
        from rlopt.agents.loops import train

        train(cfg, resume=bool(args.resume), stop_at=args.stop_at)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    return 0


def alignment_config(args):
    """The alignment run of `--config`/`--resume` when its algo is an alignment method, else None."""
    from rlopt.config import merge, parse_overrides, read_yaml

    path = Path(args.resume) / "config.yaml" if args.resume else Path(args.config) if args.config else None
    if path is None or not path.is_file():
        return None
    data = read_yaml(path)
    from rlopt.alignment_names import ALIGNMENT_ALGOS

    if data.get("algo") not in ALIGNMENT_ALGOS:
        return None
    data = merge(data, parse_overrides(args.overrides))
    if args.resume:
        data = merge(data, {"output_dir": args.resume, "resume_from_checkpoint": "latest"})
    from rlopt.alignment.runner import load_alignment_config

    return load_alignment_config(data)


def is_alignment_run(run_dir: str) -> bool:
    import yaml

    from rlopt.alignment_names import ALIGNMENT_ALGOS

    path = Path(run_dir) / "config.yaml"
    return path.is_file() and (yaml.safe_load(path.read_text()) or {}).get("algo") in ALIGNMENT_ALGOS


def evaluate_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rlopt evaluate", description="Evaluate a trained run deterministically.")
    parser.add_argument("run_dir")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--checkpoint", default=None, help="checkpoint name, e.g. step_40000 (default: latest)")
    parser.add_argument("--video", action="store_true", help="record one episode to videos/*.mp4")
    parser.add_argument("--seed", type=int, default=None, help="evaluation seed (default: run seed + 10000)")
    parser.add_argument("--prompts", type=int, default=None, help="alignment runs: held-out prompts (default 1000)")
    parser.add_argument("--samples", type=int, default=None, help="alignment runs: samples per prompt (default 4)")
    args = parser.parse_args(argv)
    if is_alignment_run(args.run_dir):
        from rlopt.alignment.runner import evaluate_run as evaluate_alignment

        try:
            result = evaluate_alignment(
                args.run_dir, args.checkpoint, prompts=args.prompts, samples_per_prompt=args.samples
            )
        except (ConfigError, FileNotFoundError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(json.dumps(result))
        return 0
    from rlopt.agents.report import evaluate_run

    try:
        result = evaluate_run(args.run_dir, args.episodes, args.checkpoint, args.video, args.seed)
    except (ConfigError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


def plot_frontier_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rlopt plot-frontier",
        description="KL-vs-gold-reward frontier over alignment runs (eval_history/eval.json).",
    )
    parser.add_argument("runs", nargs="+", help="alignment run folders")
    parser.add_argument("--out", default="frontier.png")
    parser.add_argument("--group-by", default="algo", help="config key that names a curve (default: algo)")
    args = parser.parse_args(argv)
    from rlopt.alignment.frontier import plot_frontier

    try:
        summary = plot_frontier(args.runs, args.out, args.group_by)
    except (ConfigError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


COMMANDS = {"train": train_main, "evaluate": evaluate_main, "plot-frontier": plot_frontier_main}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: rlopt {{{'|'.join(COMMANDS)}}} ...", file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
