"""Online preference optimisation on `transformers.Trainer`: online DPO (spec alignment.md §1.4) and XPO (§4).

Each training step takes a batch of prompts (TRL's prompt-only format), samples two completions
per prompt, scores both with the reward source, orders them into (chosen, rejected) and takes one
gradient step on the DPO loss against the fixed reference:

* online DPO: both completions from the current policy;
* XPO: one from the policy, one from the reference, plus α L_θ(ỹ) on the reference's sample.

Reward source: `reward_fn(prompts, completions) -> list/array of floats` (a gold program or a reward
model wrapped as a function). With `preference_temperature` set, the order is drawn from the
Bradley–Terry oracle σ((s_a − s_b)/T) instead of taken from the scores (gold-preference setting).
Ties go to the first (policy) sample, as in TRL.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import Trainer

from rlopt.alignment.arguments import AlignmentArguments
from rlopt.alignment.data import to_standard_format
from rlopt.alignment.losses import dpo_loss, xpo_loss
from rlopt.alignment.models import is_peft_model, reference
from rlopt.alignment.rollout import Completions, generate, pair_logprobs

RewardFn = Callable[[list[str], list[str]], "list[float]"]


@dataclass
class OnlineDPOConfig(AlignmentArguments):
    beta: float = field(default=0.1, metadata={"help": "KL strength β"})
    loss_type: str = field(default="sigmoid", metadata={"help": "'sigmoid' or 'ipo'"})
    max_new_tokens: int = 8
    temperature: float = 1.0
    top_k: int = 0
    missing_eos_penalty: float | None = None  # subtracted from the score of completions without EOS
    preference_temperature: float | None = None  # None: order by score; T: Bradley–Terry draw

    def __post_init__(self):
        super().__post_init__()
        if self.beta <= 0:
            raise ValueError(f"beta: must be > 0, got {self.beta}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens: must be >= 1, got {self.max_new_tokens}")


@dataclass
class XPOConfig(OnlineDPOConfig):
    alpha: float = field(default=1e-5, metadata={"help": "weight of the exploration bonus α L_θ(ỹ)"})


def prompt_collator(examples: list[dict]) -> dict[str, list[str]]:
    return {"prompts": [ex["prompt"] for ex in examples]}


class OnlineDPOTrainer(Trainer):
    def __init__(
        self,
        model,
        args: OnlineDPOConfig,
        train_dataset,
        processing_class,
        reward_fn: RewardFn,
        ref_model=None,
        **kwargs,
    ):
        train_dataset = to_standard_format(train_dataset, "prompt-only", processing_class)
        kwargs.setdefault("data_collator", prompt_collator)
        super().__init__(
            model=model, args=args, train_dataset=train_dataset, processing_class=processing_class, **kwargs
        )
        self.reward_fn = reward_fn
        if ref_model is None and not is_peft_model(model):
            ref_model = copy.deepcopy(model)
        if ref_model is not None:  # (LoRA without one: the policy with adapters disabled, see `reference`)
            ref_model = ref_model.to(self.args.device).eval().requires_grad_(False)
        self.ref_model = ref_model

    def reference(self):
        """Context manager yielding the frozen reference model."""
        return reference(self.ref_model, self.accelerator.unwrap_model(self.model))

    # --- one step: sample -> score -> order -> loss

    def sample_pair(self, policy, prompts: list[str]) -> tuple[Completions, Completions]:
        """Two completions per prompt; online DPO draws both from the policy, in one batched generate call."""
        both = self._sample(policy, prompts, num_samples=2)
        return both.take(slice(0, None, 2)), both.take(slice(1, None, 2))

    def _sample(self, model, prompts: list[str], num_samples: int = 1) -> Completions:
        args = self.args
        return generate(
            model, self.processing_class, prompts, args.max_new_tokens, args.temperature, args.top_k,
            num_samples=num_samples,
        )

    def scores(self, prompts: list[str], completions: Completions) -> torch.Tensor:
        values = torch.as_tensor(self.reward_fn(prompts, completions.texts), dtype=torch.float32)
        if self.args.missing_eos_penalty is not None:
            values = values - self.args.missing_eos_penalty * (~completions.has_eos).float()
        return values

    def first_is_chosen(self, scores_a: torch.Tensor, scores_b: torch.Tensor) -> torch.Tensor:
        temperature = self.args.preference_temperature
        if temperature is None:
            return scores_a >= scores_b  # ties: the first (policy) sample is chosen
        p = torch.sigmoid((scores_a - scores_b) / temperature)
        # the global torch RNG (seeded by Trainer, saved in every checkpoint), so a resumed run draws the same labels
        return torch.rand(p.shape) < p

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        prompts = inputs["prompts"]
        with torch.no_grad():
            a, b = self.sample_pair(self.accelerator.unwrap_model(model), prompts)
            a_chosen = self.first_is_chosen(self.scores(prompts, a), self.scores(prompts, b))
        a_chosen = a_chosen.to(self.args.device)
        both = [
            torch.cat([x, y])
            for x, y in zip(
                (a.prompt_ids, a.prompt_mask, a.completion_ids, a.completion_mask),
                (b.prompt_ids, b.prompt_mask, b.completion_ids, b.completion_mask),
            )
        ]
        policy_a, policy_b = pair_logprobs(model, *both, self.args.temperature)[1].chunk(2)
        with torch.no_grad(), self.reference() as ref:
            ref_a, ref_b = pair_logprobs(ref, *both, self.args.temperature)[1].chunk(2)
        pick = lambda x, y: (torch.where(a_chosen, x, y), torch.where(a_chosen, y, x))
        (p_w, p_l), (r_w, r_l) = pick(policy_a, policy_b), pick(ref_a, ref_b)
        loss = self.pair_loss(p_w, p_l, r_w, r_l, policy_b).mean()
        if return_outputs:
            return loss, {"first_is_chosen": a_chosen, "policy_logps": (policy_a.detach(), policy_b.detach())}
        return loss

    def pair_loss(self, p_w, p_l, r_w, r_l, policy_second):
        return dpo_loss(p_w, p_l, r_w, r_l, self.args.beta, self.args.loss_type)


class XPOTrainer(OnlineDPOTrainer):
    """One completion from the policy, one (ỹ) from the reference; loss DPO + α L_θ(ỹ)."""

    def sample_pair(self, policy, prompts):
        mine = self._sample(policy, prompts)
        with self.reference() as ref:
            return mine, self._sample(ref, prompts)

    def pair_loss(self, p_w, p_l, r_w, r_l, policy_second):
        args = self.args
        return xpo_loss(p_w, p_l, r_w, r_l, policy_second, args.beta, args.alpha, args.loss_type)
