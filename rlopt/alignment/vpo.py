"""VPO — value-incentivised preference optimisation (spec alignment.md §5).

L = L_DPO + s α β (L_θ(y_cal) − L_ref(y_cal)), s = +1 online (optimism), −1 offline (pessimism).

* Offline (`VPOTrainer`): fixed pairs; the calibration samples are the chosen responses (default,
  an NLL anchor on y_w) — α = 0 is DPO.
* Online (`OnlineVPOTrainer`): pairs from the policy as in online DPO, plus one reference sample per
  prompt as the calibration sample (π_cal = π_ref) — α = 0 is online DPO.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from rlopt.alignment.dpo import DPOConfig, DPOTrainer
from rlopt.alignment.losses import vpo_loss, vpo_value_term
from rlopt.alignment.online import OnlineDPOConfig, OnlineDPOTrainer
from rlopt.alignment.rollout import sequence_logprobs


@dataclass
class VPOConfig(DPOConfig):
    alpha: float = field(default=0.1, metadata={"help": "value-term coefficient α (the term is s α β ...)"})


@dataclass
class OnlineVPOConfig(OnlineDPOConfig):
    alpha: float = field(default=0.1, metadata={"help": "value-term coefficient α"})


class VPOTrainer(DPOTrainer):
    """Offline VPO with π_cal = the chosen responses."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        chosen, rejected = self.pair_logps(model, inputs)
        ref_chosen, ref_rejected = self.ref_pair_logps(inputs)
        args = self.args
        losses = vpo_loss(
            chosen,
            rejected,
            ref_chosen,
            ref_rejected,
            chosen,
            ref_chosen,
            args.beta,
            args.alpha,
            online=False,
            loss_type=args.loss_type,
        )
        loss = losses.mean()
        value_term = vpo_value_term(chosen, ref_chosen, args.beta).detach()
        self.record(value_term=value_term, chosen_logps=chosen.detach())
        if return_outputs:
            return loss, {"value_term": value_term}
        return loss


class OnlineVPOTrainer(OnlineDPOTrainer):
    """Online VPO with π_cal = π_ref: one extra reference sample per prompt as calibration."""

    def extra_terms(self, model, prompts):
        temperature = self.args.temperature
        with torch.no_grad(), self.reference() as ref_model:
            y_cal = self.sample(ref_model, prompts)
            tensors = (y_cal.prompt_ids, y_cal.prompt_mask, y_cal.completion_ids, y_cal.completion_mask)
            ref = sequence_logprobs(ref_model, *tensors, temperature)[1]
        return {"cal_policy": sequence_logprobs(model, *tensors, temperature)[1], "cal_ref": ref}

    def pair_loss(self, p_w, p_l, r_w, r_l, policy_second, cal_policy=None, cal_ref=None):
        args = self.args
        self.record(value_term=vpo_value_term(cal_policy, cal_ref, args.beta))
        return vpo_loss(
            p_w, p_l, r_w, r_l, cal_policy, cal_ref, args.beta, args.alpha, online=True, loss_type=args.loss_type
        )
