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

from dataclasses import dataclass, field

from rlopt.alignment.arguments import AlignmentArguments
from rlopt.alignment.losses import dpo_loss, xpo_loss
from rlopt.alignment.trainer import OnlineTrainer, RewardFn, prompt_collator  # noqa: F401  (re-exported)


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


class OnlineDPOTrainer(OnlineTrainer):
    """Both completions from the current policy; the DPO loss against the fixed reference."""

    def pair_loss(self, p_w, p_l, r_w, r_l, policy_second, **extra):
        return dpo_loss(p_w, p_l, r_w, r_l, self.args.beta, self.args.loss_type)


class XPOTrainer(OnlineDPOTrainer):
    """One completion from the policy, one (ỹ) from the reference; loss DPO + α L_θ(ỹ)."""

    def sample_pair(self, policy, prompts):
        mine = self.sample(policy, prompts)
        with self.reference() as ref:
            return mine, self.sample(ref, prompts)

    def pair_loss(self, p_w, p_l, r_w, r_l, policy_second, **extra):
        args = self.args
        return xpo_loss(p_w, p_l, r_w, r_l, policy_second, args.beta, args.alpha, args.loss_type)
