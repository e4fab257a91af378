"""Supervised fine-tuning with the completion-only loss (spec alignment.md §1.1) on `transformers.Trainer`.

Data: TRL's standard prompt–completion format. The loss is the token mean of −log π(y_t | x, y_<t)
over completion tokens only (prompt tokens and padding are masked), the same quantity TRL's
`SFTTrainer` minimises on such data.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlopt.alignment.arguments import AlignmentArguments
from rlopt.alignment.data import CompletionCollator
from rlopt.alignment.losses import sft_loss
from rlopt.alignment.rollout import sequence_logprobs
from rlopt.alignment.trainer import AlignmentTrainer


@dataclass
class SFTConfig(AlignmentArguments):
    """TrainingArguments for SFT (no fields of its own yet)."""


class SFTTrainer(AlignmentTrainer):
    dataset_kind = "prompt-completion"

    def default_collator(self, tokenizer):
        return CompletionCollator(tokenizer.pad_token_id)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        per_token, _ = sequence_logprobs(
            model, inputs["prompt_ids"], inputs["prompt_mask"], inputs["completion_ids"], inputs["completion_mask"]
        )
        loss = sft_loss(per_token, inputs["completion_mask"])
        return (loss, {"per_token_logps": per_token.detach()}) if return_outputs else loss
