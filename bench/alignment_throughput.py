"""DPO training throughput side by side with trl's DPOTrainer, in one run, on the same work.

    python bench/alignment_throughput.py --threads 2 [--repeats 2] [--out bench/results/alignment_throughput.json]

The peer is the anchor script `trl_dpo_tiny.py` (a 3.2M-parameter Llama, 4 layers x 256, char tokenizer,
2,048 arithmetic pairs, batch 32, 40 steps, lr 1e-4, beta 0.1, CPU fp32), run as a subprocess; it also
writes that model and tokenizer to <tempdir>/anchors/tiny_llama, which ours then loads, so both train the
same initial weights on the same rows with the same hyper-parameters. Reports pairs/s of both and the ratio.
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import tempfile
import time
from pathlib import Path

from common import ROOT, run_anchor, stamp, write_report

STEPS, BATCH = 40, 32


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


def anchor(threads: int) -> float:
    out = run_anchor("trl_dpo_tiny.py", str(threads))
    return float(re.search(r"pairs_per_s ([\d.]+)", out).group(1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "alignment_throughput.json"))
    args = parser.parse_args()
    samples = {"trl_dpo": [], "rlopt_dpo": []}
    for _ in range(args.repeats):
        samples["trl_dpo"].append(anchor(args.threads))  # first: it writes the shared model folder
        samples["rlopt_dpo"].append(ours(args.threads))
        print({k: round(v[-1], 1) for k, v in samples.items()}, flush=True)
    med = {k: statistics.median(v) for k, v in samples.items()}
    report = {
        **stamp(),
        "threads": args.threads,
        "work": f"DPO, 3.2M-param Llama (4x256), batch {BATCH}, {STEPS} steps, CPU fp32",
        "samples_pairs_per_s": samples,
        "pairs_per_s": {k: round(v, 1) for k, v in med.items()},
        "dpo_vs_trl": round(med["rlopt_dpo"] / med["trl_dpo"], 2),
    }
    print(write_report(report, args.out))


if __name__ == "__main__":
    main()
