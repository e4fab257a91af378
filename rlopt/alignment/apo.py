"""APO — accelerated preference optimisation (He, Yuan, Gu, arXiv 2410.06293; spec alignment.md §6).

Iterative DPO whose reference at round t is the extrapolated policy
    log π̂_t(y|x) = (1+α) L_{π_t}(y|x) − α L_{π_{t−1}}(y|x)        (π̂_0 = π_0),
Nesterov momentum in log-policy space. Its log Z(x) cancels in the DPO loss, so each round writes
the unnormalised values into the pairs' `ref_chosen_logps` / `ref_rejected_logps` columns and trains
with the ordinary DPO trainer. α = 0 is iterative DPO with a moving reference.
"""

from __future__ import annotations

import torch

from rlopt.alignment.data import PreferenceCollator, tokenized_dataset
from rlopt.alignment.losses import apo_reference_logps
from rlopt.alignment.rollout import sequence_logprobs


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
            sequence_logprobs(
                model, batch["prompt_ids"], batch["prompt_mask"], batch["completion_ids"], batch["completion_mask"]
            )[1]
            .float()
            .cpu()
        )
        c, r = logps.chunk(2)
        chosen.append(c)
        rejected.append(r)
    return torch.cat(chosen), torch.cat(rejected)


def apo_reference_columns(dataset, tokenizer, current, previous, alpha: float):
    """The round's pairs with `ref_chosen_logps` / `ref_rejected_logps` = log π̂_t from π_t (`current`) and
    π_{t−1} (`previous`; pass `current` again in round 0)."""
    dataset = tokenized_dataset(dataset, "preference", tokenizer)
    cur_w, cur_l = sequence_pair_logps(current, dataset, tokenizer.pad_token_id)
    if previous is current:
        prev_w, prev_l = cur_w, cur_l
    else:
        prev_w, prev_l = sequence_pair_logps(previous, dataset, tokenizer.pad_token_id)
    ref_w = apo_reference_logps(cur_w, prev_w, alpha).tolist()
    ref_l = apo_reference_logps(cur_l, prev_l, alpha).tolist()
    for name in ("ref_chosen_logps", "ref_rejected_logps"):
        if name in dataset.column_names:
            dataset = dataset.remove_columns(name)
    return dataset.add_column("ref_chosen_logps", ref_w).add_column("ref_rejected_logps", ref_l)
