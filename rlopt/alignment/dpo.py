"""DPO (Rafailov et al., arXiv 2305.18290) on `transformers.Trainer` (spec alignment.md §1.3).

Offline pairs (prompt, chosen, rejected) in TRL's standard format. Each batch puts the B chosen
rows first and the B rejected rows after them, prompts left-padded and completions right-padded
(the layout of `rlopt.alignment.rollout`), so one forward pass scores both; the reference model is
a frozen copy of the initial policy unless given, or precomputed log-probs in the columns
`ref_chosen_logps` / `ref_rejected_logps` (how APO feeds its extrapolated reference).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import Trainer, TrainingArguments

from rlopt.alignment.losses import dpo_logits, dpo_loss
from rlopt.alignment.rollout import sequence_logprobs

PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected")


@dataclass
class DPOConfig(TrainingArguments):
    beta: float = field(default=0.1, metadata={"help": "KL strength β of −log σ(β z)"})
    loss_type: str = field(default="sigmoid", metadata={"help": "'sigmoid' (DPO) or 'ipo'"})
    remove_unused_columns: bool = False  # the collator needs the token-id columns

    def __post_init__(self):
        super().__post_init__()
        if self.beta <= 0:
            raise ValueError(f"beta: must be > 0, got {self.beta}")
        if self.loss_type not in ("sigmoid", "ipo"):
            raise ValueError(f"loss_type: must be 'sigmoid' or 'ipo', got {self.loss_type!r}")


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def tokenize_preferences(example: dict, tokenizer) -> dict:
    """(prompt, chosen, rejected) -> prompt_ids, chosen_ids, rejected_ids; EOS appended where missing.

    prompt + completion is tokenised whole and cut where it first differs from the prompt alone (for
    either completion), so tokens that merge across the boundary stay in the completion.
    """
    eos = tokenizer.eos_token
    prompt_ids = tokenizer(example["prompt"], add_special_tokens=False)["input_ids"]
    full = {}
    for name in ("chosen", "rejected"):
        text = example[name] if example[name].endswith(eos) else example[name] + eos
        full[name] = tokenizer(example["prompt"] + text, add_special_tokens=False)["input_ids"]
    cut = min(common_prefix(prompt_ids, full["chosen"]), common_prefix(prompt_ids, full["rejected"]))
    return {
        "prompt_ids": full["chosen"][:cut],
        "chosen_ids": full["chosen"][cut:],
        "rejected_ids": full["rejected"][cut:],
    }


def check_preference_columns(dataset) -> None:
    missing = [c for c in PREFERENCE_COLUMNS if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"preference dataset is missing column(s) {missing}: expected 'prompt', 'chosen', 'rejected' "
            f"(TRL's standard preference format), got {dataset.column_names}"
        )


def _pad(rows: list[list[int]], value: int, left: bool) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([[value] * (width - len(r)) + r if left else r + [value] * (width - len(r)) for r in rows])


@dataclass
class PreferenceCollator:
    """Tokenised pairs -> [2B] rows (chosen first): left-padded prompts, right-padded completions."""

    pad_token_id: int

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        prompts = [ex["prompt_ids"] for ex in examples] * 2
        completions = [ex["chosen_ids"] for ex in examples] + [ex["rejected_ids"] for ex in examples]
        batch = {
            "prompt_ids": _pad(prompts, self.pad_token_id, left=True),
            "prompt_mask": _pad([[1] * len(p) for p in prompts], 0, left=True),
            "completion_ids": _pad(completions, self.pad_token_id, left=False),
            "completion_mask": _pad([[1] * len(c) for c in completions], 0, left=False).float(),
        }
        for name in ("ref_chosen_logps", "ref_rejected_logps"):
            if name in examples[0]:
                batch[name] = torch.tensor([float(ex[name]) for ex in examples])
        return batch


class DPOTrainer(Trainer):
    def __init__(self, model, args: DPOConfig, train_dataset, processing_class, ref_model=None, **kwargs):
        check_preference_columns(train_dataset)
        if "prompt_ids" not in train_dataset.column_names:
            train_dataset = train_dataset.map(tokenize_preferences, fn_kwargs={"tokenizer": processing_class})
        kwargs.setdefault("data_collator", PreferenceCollator(processing_class.pad_token_id))
        super().__init__(
            model=model, args=args, train_dataset=train_dataset, processing_class=processing_class, **kwargs
        )
        if ref_model is None and "ref_chosen_logps" not in train_dataset.column_names:
            ref_model = type(model).from_pretrained(model.name_or_path) if model.name_or_path else None
            if ref_model is None:
                raise ValueError("no reference: pass ref_model, or a model loaded from a folder or hub id")
        if ref_model is not None:
            ref_model = ref_model.to(self.args.device).eval().requires_grad_(False)
        self.ref_model = ref_model

    def pair_logps(self, model, inputs) -> tuple[torch.Tensor, torch.Tensor]:
        _, logps = sequence_logprobs(
            model, inputs["prompt_ids"], inputs["prompt_mask"], inputs["completion_ids"], inputs["completion_mask"]
        )
        return logps.chunk(2)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        chosen, rejected = self.pair_logps(model, inputs)
        if "ref_chosen_logps" in inputs:
            ref_chosen, ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        else:
            with torch.no_grad():
                ref_chosen, ref_rejected = self.pair_logps(self.ref_model, inputs)
        losses = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, self.args.beta, self.args.loss_type)
        loss = losses.mean()
        if return_outputs:
            margins = self.args.beta * dpo_logits(chosen, rejected, ref_chosen, ref_rejected).detach()
            return loss, {"margins": margins, "chosen_logps": chosen.detach(), "rejected_logps": rejected.detach()}
        return loss
