"""Run one DPO step on the tiny model and write the logged loss (main process) to a JSON file.

    python tests/scripts/dpo_first_step.py OUT.json --batch 8                       # one process
    accelerate launch --config_file configs/accelerate/cpu_2proc.yaml \\
        tests/scripts/dpo_first_step.py OUT.json --batch 4                          # 2 x 4 = same global batch
"""

import argparse
import json
import os
import tempfile

import datasets
import numpy as np
import torch

from rlopt.alignment.dpo import DPOConfig, DPOTrainer
from rlopt.alignment.models import build_tiny_model, load_causal_lm, load_tokenizer
from rlopt.alignment.tasks import get_task, spaced

parser = argparse.ArgumentParser()
parser.add_argument("out")
parser.add_argument("--batch", type=int, required=True)
cli = parser.parse_args()

task, rng = get_task("sort5"), np.random.default_rng(0)
data = datasets.Dataset.from_list(
    [
        {
            "prompt": p,
            "chosen": " " + spaced([*task.answer(p), "<eos>"]),
            "rejected": " " + spaced(task.corrupt(p, rng)),
        }
        for p in task.train_prompts(32, seed=0)
    ]
)
work = tempfile.mkdtemp()
path = build_tiny_model(os.path.join(work, f"m{os.environ.get('RANK', '0')}"), seed=0)
policy = load_causal_lm(path)
torch.manual_seed(1)
with torch.no_grad():  # a policy away from the reference, identical in every process
    for p in policy.parameters():
        p.add_(0.05 * torch.randn_like(p))
args = DPOConfig(
    output_dir=os.path.join(work, "out"),
    max_steps=1,
    per_device_train_batch_size=cli.batch,
    logging_steps=1,
    save_strategy="no",
    report_to="none",
    seed=0,
    disable_tqdm=True,
)
trainer = DPOTrainer(policy, args, data, load_tokenizer(path), ref_model=load_causal_lm(path))
trainer.train()
if trainer.is_world_process_zero():
    loss = next(h["loss"] for h in trainer.state.log_history if "loss" in h)
    with open(cli.out, "w") as f:
        json.dump({"loss": loss, "world_size": trainer.args.world_size}, f)
