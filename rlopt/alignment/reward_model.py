"""Bradley–Terry reward model (spec alignment.md §1.2) on `transformers.Trainer`.

A sequence classifier with one output scores prompt + completion at its last non-pad token;
the loss is −log σ(r_w − r_l − μ) (+ c (r_w + r_l)^2 with `center_rewards_coefficient`), where μ is
an optional per-pair `margin` column. Logged metrics: pair accuracy and mean margin.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlopt.alignment.arguments import AlignmentArguments
from rlopt.alignment.data import SequencePairCollator
from rlopt.alignment.losses import reward_model_loss
from rlopt.alignment.trainer import AlignmentTrainer


@dataclass
class RewardConfig(AlignmentArguments):
    center_rewards_coefficient: float | None = None


class RewardTrainer(AlignmentTrainer):
    dataset_kind = "preference"

    def __init__(self, model, args: RewardConfig, train_dataset, processing_class, **kwargs):
        if model.config.pad_token_id is None:
            model.config.pad_token_id = processing_class.pad_token_id
        super().__init__(model, args, train_dataset, processing_class, **kwargs)

    def default_collator(self, tokenizer):
        return SequencePairCollator(tokenizer.pad_token_id)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        rewards = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits.squeeze(-1)
        chosen, rejected = rewards.chunk(2)
        loss = reward_model_loss(chosen, rejected, inputs.get("margin"), self.args.center_rewards_coefficient).mean()
        with torch.no_grad():
            stats = {"accuracy": (chosen > rejected).float().mean(), "margin": (chosen - rejected).mean()}
        self.record(**stats)
        if return_outputs:
            return loss, stats
        return loss


@torch.no_grad()
def score(model, tokenizer, prompts: list[str], completions: list[str], batch_size: int = 256) -> torch.Tensor:
    """Reward-model scores of prompt + completion texts: [N] (the reward_fn interface of the online trainers)."""
    device = next(model.parameters()).device
    out = []
    side = tokenizer.padding_side
    tokenizer.padding_side = "right"
    try:
        for start in range(0, len(prompts), batch_size):
            texts = [
                p + " " + c
                for p, c in zip(prompts[start : start + batch_size], completions[start : start + batch_size])
            ]
            enc = tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=False).to(device)
            out.append(model(**enc).logits.squeeze(-1).float().cpu())
    finally:
        tokenizer.padding_side = side
    return torch.cat(out)
