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

from rlopt.alignment.arguments import AlignmentArguments
from rlopt.alignment.data import PreferenceCollator
from rlopt.alignment.losses import dpo_logits, dpo_loss
from rlopt.alignment.models import is_peft_model
from rlopt.alignment.rollout import pair_logprobs
from rlopt.alignment.trainer import AlignmentTrainer


@dataclass
class DPOConfig(AlignmentArguments):
    beta: float = field(default=0.1, metadata={"help": "KL strength β of −log σ(β z)"})
    loss_type: str = field(default="sigmoid", metadata={"help": "'sigmoid' (DPO) or 'ipo'"})
    precompute_ref_log_probs: bool = field(
        default=False,
        metadata={"help": "score every pair with the reference once before training, then free the reference"},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.beta <= 0:
            raise ValueError(f"beta: must be > 0, got {self.beta}")
        if self.loss_type not in ("sigmoid", "ipo"):
            raise ValueError(f"loss_type: must be 'sigmoid' or 'ipo', got {self.loss_type!r}")


@torch.no_grad()
def sequence_pair_logps(model, dataset, pad_token_id: int, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """L_π(y_w|x), L_π(y_l|x) for every pair of a tokenised preference dataset: ([N], [N])."""
    collate = PreferenceCollator(pad_token_id)
    device = next(model.parameters()).device
    chosen, rejected = [], []
    for start in range(0, len(dataset), batch_size):
        rows = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        batch = {k: v.to(device) for k, v in collate(rows).items()}
        logps = (
            pair_logprobs(
                model, batch["prompt_ids"], batch["prompt_mask"], batch["completion_ids"], batch["completion_mask"]
            )[1]
            .float()
            .cpu()
        )
        c, r = logps.chunk(2)
        chosen.append(c)
        rejected.append(r)
    return torch.cat(chosen), torch.cat(rejected)


class DPOTrainer(AlignmentTrainer):
    dataset_kind = "preference"

    def default_collator(self, tokenizer):
        return PreferenceCollator(tokenizer.pad_token_id)

    def __init__(self, model, args, train_dataset, processing_class, ref_model=None, **kwargs):
        super().__init__(model, args, train_dataset, processing_class, ref_model=ref_model, **kwargs)
        if (
            getattr(args, "precompute_ref_log_probs", False)
            and "ref_chosen_logps" not in self.train_dataset.column_names
        ):
            with self.reference() as ref:
                chosen, rejected = sequence_pair_logps(ref, self.train_dataset, processing_class.pad_token_id)
            self.train_dataset = self.train_dataset.add_column("ref_chosen_logps", chosen.tolist()).add_column(
                "ref_rejected_logps", rejected.tolist()
            )
            self.ref_model = None  # multi-epoch runs skip the reference forward; its memory is freed

    def build_reference(self, model, ref_model, train_dataset):
        lora = is_peft_model(model)  # LoRA: the reference is the policy with its adapters disabled
        if ref_model is None and not lora and "ref_chosen_logps" not in train_dataset.column_names:
            ref_model = type(model).from_pretrained(model.name_or_path) if model.name_or_path else None
            if ref_model is None:
                raise ValueError("no reference: pass ref_model, or a model loaded from a folder or hub id")
        return ref_model

    def pair_logps(self, model, inputs) -> tuple[torch.Tensor, torch.Tensor]:
        _, logps = pair_logprobs(
            model, inputs["prompt_ids"], inputs["prompt_mask"], inputs["completion_ids"], inputs["completion_mask"]
        )
        return logps.chunk(2)

    def ref_pair_logps(self, inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Reference L_ref(y_w|x), L_ref(y_l|x): the precomputed columns when given, else the frozen model."""
        if "ref_chosen_logps" in inputs:
            return inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        with torch.no_grad(), self.reference() as ref:
            return self.pair_logps(ref, inputs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        chosen, rejected = self.pair_logps(model, inputs)
        ref_chosen, ref_rejected = self.ref_pair_logps(inputs)
        losses = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, self.args.beta, self.args.loss_type)
        loss = losses.mean()
        margins = self.args.beta * dpo_logits(chosen, rejected, ref_chosen, ref_rejected).detach()
        self.record(
            margin=margins,
            accuracy=(margins > 0).float(),
            chosen_logps=chosen.detach(),
            rejected_logps=rejected.detach(),
        )
        if return_outputs:
            return loss, {"margins": margins, "chosen_logps": chosen.detach(), "rejected_logps": rejected.detach()}
        return loss
