"""Run DPO steps on the tiny model; the main process writes the first logged loss to a JSON file and the
trained weights (one full state dict) next to it as OUT.safetensors.

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
from safetensors.torch import save_file

from rlopt.alignment.dpo import DPOConfig, DPOTrainer
from rlopt.alignment.models import build_tiny_model, load_causal_lm, load_tokenizer
from rlopt.alignment.tasks import get_task, spaced

parser = argparse.ArgumentParser()
parser.add_argument("out")
parser.add_argument("--batch", type=int, required=True)
parser.add_argument("--steps", type=int, default=1)
# Plain SGD by default: the weights then differ by lr x (gradient rounding), whereas Adam's first steps move every
# weight by about ±lr whatever its gradient's size, so a near-zero gradient whose summation order differs between
# one process and two (its sign at the rounding level) moves a weight by 2 lr — a flaky comparison.
parser.add_argument("--optim", default="sgd")
parser.add_argument("--lr", type=float, default=0.05)
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
initial = {k: v.clone() for k, v in policy.state_dict().items()}
args = DPOConfig(
    output_dir=os.path.join(work, "out"),
    max_steps=cli.steps,
    per_device_train_batch_size=cli.batch,
    logging_steps=1,
    save_strategy="no",
    report_to="none",
    seed=0,
    disable_tqdm=True,
    optim=cli.optim,
    learning_rate=cli.lr,
)
trainer = DPOTrainer(policy, args, data, load_tokenizer(path), ref_model=load_causal_lm(path))
trainer.train()
state = trainer.accelerator.get_state_dict(trainer.model)  # collective under sharding: every process calls it
if trainer.is_world_process_zero():
    loss = next(h["loss"] for h in trainer.state.log_history if "loss" in h)
    weights = {k: v.detach().float().cpu().contiguous() for k, v in state.items()}
    save_file(weights, os.path.splitext(cli.out)[0] + ".safetensors")
    moved = max(float((weights[k] - initial[k]).abs().max()) for k in weights)
    with open(cli.out, "w") as f:
        json.dump({"loss": loss, "world_size": trainer.args.world_size, "moved": moved}, f)
