"""Alignment training throughput and peak memory side by side with trl, in one run, on the same work.

    python bench/alignment_throughput.py --threads 2 [--repeats 2] [--out bench/results/alignment_throughput.json]

The peer is the anchor script `trl_dpo_tiny.py` (a 3.2M-parameter Llama, 4 layers x 256, char tokenizer,
2,048 arithmetic pairs, batch 32, 40 steps, lr 1e-4, beta 0.1, CPU fp32), run as a subprocess; it also
writes that model and tokenizer to <tempdir>/anchors/tiny_llama, which ours then loads, so both train the
same initial weights on the same rows with the same hyper-parameters. Reports pairs/s of both and the ratio.

Online: the anchor `trl_online_dpo_tiny.py` (trl's experimental OnlineDPOTrainer on that Llama: 512 "a+b="
prompts, reward = completion length in characters, batch 32 prompts x 2 samples, 8 new tokens, 10 steps,
lr 1e-5, sampling temperature 0.9: trl's default) against our OnlineDPOTrainer and XPOTrainer on the same
prompts, reward and settings; prompts/s.

Every measurement runs in its own process (ours through `--child`), so each one's peak resident memory
(ru_maxrss: weights, activations, the Python and library footprint) is reported beside its rate.
"""

from __future__ import annotations

import argparse
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, run_anchor_with_peak_memory, stamp, write_report

STEPS, BATCH = 40, 32
ONLINE_STEPS, ONLINE_BATCH = 10, 32


def rows() -> list[dict]:
    """The anchor's dataset, row for row (same generator, same seed)."""
    rng = random.Random(0)
    out = []
    for _ in range(2048):
        a, b = rng.randint(0, 999), rng.randint(0, 999)
        out.append({"prompt": f"{a}+{b}=", "chosen": f"{a + b}.", "rejected": f"{a + b + rng.randint(1, 9)}."})
    return out


def ours(threads: int) -> float:
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlopt.alignment.dpo import DPOConfig, DPOTrainer

    torch.set_num_threads(threads)
    folder = Path(tempfile.gettempdir()) / "anchors" / "tiny_llama"
    model = AutoModelForCausalLM.from_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    args = DPOConfig(
        output_dir=str(Path(tempfile.mkdtemp()) / "dpo"),
        per_device_train_batch_size=BATCH,
        max_steps=STEPS,
        learning_rate=1e-4,
        logging_steps=1000,
        save_strategy="no",
        report_to="none",
        beta=0.1,
        disable_tqdm=True,
    )
    trainer = DPOTrainer(
        model, args, datasets.Dataset.from_list(rows()), tok, ref_model=AutoModelForCausalLM.from_pretrained(folder)
    )
    start = time.perf_counter()
    trainer.train()
    return STEPS * BATCH / (time.perf_counter() - start)


def online_prompts() -> list[str]:
    """The online anchor's prompts, row for row."""
    rng = random.Random(0)
    return [f"{rng.randint(0, 99)}+{rng.randint(0, 99)}=" for _ in range(512)]


def ours_online(threads: int, algo: str) -> float:
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlopt.alignment.online import OnlineDPOTrainer, XPOConfig, XPOTrainer

    torch.set_num_threads(threads)
    folder = Path(tempfile.gettempdir()) / "anchors" / "tiny_llama"
    model = AutoModelForCausalLM.from_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    args = XPOConfig(
        output_dir=str(Path(tempfile.mkdtemp()) / algo),
        per_device_train_batch_size=ONLINE_BATCH,
        max_steps=ONLINE_STEPS,
        max_new_tokens=8,
        temperature=0.9,  # trl's OnlineDPOConfig default, which the anchor keeps
        learning_rate=1e-5,
        logging_steps=1000,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )
    cls = XPOTrainer if algo == "xpo" else OnlineDPOTrainer
    reward = lambda prompts, completions: [float(len(c.replace(" ", ""))) for c in completions]  # noqa: E731
    trainer = cls(model, args, datasets.Dataset.from_dict({"prompt": online_prompts()}), tok, reward_fn=reward)
    start = time.perf_counter()
    trainer.train()
    return ONLINE_STEPS * ONLINE_BATCH / (time.perf_counter() - start)


CHILDREN = {
    "rlopt_dpo": lambda threads: ours(threads),
    "rlopt_online_dpo": lambda threads: ours_online(threads, "online_dpo"),
    "rlopt_xpo": lambda threads: ours_online(threads, "xpo"),
}


def child(name: str, threads: int) -> tuple[float, float]:
    """(rate, peak RSS in MiB) of one of ours, measured in a fresh process."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", name, "--threads", str(threads)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    rate, rss = re.search(r"RESULT ([\d.]+) ([\d.]+)", out).groups()
    return float(rate), float(rss)


def anchor(script: str, pattern: str, threads: int) -> tuple[float, float]:
    """(rate, peak RSS in MiB) of an anchor script, run as it is inside a process that reports its peak RSS."""
    out = run_anchor_with_peak_memory(script, str(threads))
    rss = float(re.search(r"MAXRSS_KB (\d+)", out).group(1)) / 1024
    return float(re.search(pattern, out).group(1)), rss


WORK = {
    "dpo": [("trl_dpo", ("trl_dpo_tiny.py", r"pairs_per_s ([\d.]+)")), ("rlopt_dpo", None)],
    "online": [
        ("trl_online_dpo", ("trl_online_dpo_tiny.py", r"prompts_per_s ([\d.]+)")),
        ("rlopt_online_dpo", None),
        ("rlopt_xpo", None),
    ],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--work", nargs="+", default=["dpo", "online"], choices=sorted(WORK))
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "alignment_throughput.json"))
    args = parser.parse_args()
    if args.child:
        rate = CHILDREN[args.child](args.threads)
        print(f"RESULT {rate:.3f} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}")
        return
    rates: dict[str, list[float]] = {}
    peaks: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for work in args.work:  # the trl anchor first: trl_dpo_tiny.py writes the shared model folder
            for name, spec in WORK[work]:
                rate, rss = anchor(*spec, args.threads) if spec else child(name, args.threads)
                rates.setdefault(name, []).append(round(rate, 2))
                peaks.setdefault(name, []).append(rss)
                print(name, round(rate, 1), f"{rss:.0f} MiB", flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    report = {
        **stamp(),
        "threads": args.threads,
        "work": {
            "dpo": f"DPO, 3.2M-param Llama (4x256), batch {BATCH} pairs, {STEPS} steps, CPU fp32; pairs/s",
            "online": f"online DPO / XPO, same Llama, {ONLINE_BATCH} prompts x 2 samples, 8 new tokens, "
            f"{ONLINE_STEPS} steps, CPU fp32; prompts/s",
        },
        "samples": rates,
        "rate": {k: round(v, 1) for k, v in med.items()},
        "peak_rss_mib": {k: round(max(v)) for k, v in peaks.items()},
        "ratios": {},
    }
    if "rlopt_dpo" in med:
        report["ratios"]["dpo_vs_trl"] = round(med["rlopt_dpo"] / med["trl_dpo"], 2)
    if "rlopt_online_dpo" in med:
        report["ratios"]["online_dpo_vs_trl"] = round(med["rlopt_online_dpo"] / med["trl_online_dpo"], 2)
        report["ratios"]["xpo_vs_trl_online_dpo"] = round(med["rlopt_xpo"] / med["trl_online_dpo"], 2)
    print(write_report(report, args.out))


if __name__ == "__main__":
    main()
