"""The shared base of every alignment trainer: a `transformers.Trainer` subclass (ARCHITECTURE.md, STYLE.md §5).

Distribution (accelerate, DeepSpeed, FSDP), mixed precision, checkpoints, resume, `report_to` and
`push_to_hub` come from transformers; this base adds only what every method shares:

* the training data in TRL's formats, checked and tokenised for the method's `dataset_kind`;
* the frozen reference model — a given model, a copy of the initial policy, or, for a LoRA policy, the
  policy itself with its adapters disabled (`reference()`);
* per-step statistics (`record(...)`), averaged into the Trainer's own logs (console, TensorBoard, W&B);
* `OnlineTrainer`: the online step — generate -> score -> order into (chosen, rejected) -> pair loss —
  which online DPO, XPO and online VPO specialise by their sampler and their loss.

Each algorithm file then holds only its Config (a TrainingArguments subclass) and its data flow + loss.
"""

from __future__ import annotations

import copy
import os
from collections import defaultdict
from collections.abc import Callable

import torch
from transformers import Trainer

from rlopt.alignment.data import to_standard_format, tokenized_dataset
from rlopt.alignment.models import is_peft_model, reference
from rlopt.alignment.rollout import Completions, generate, pair_logprobs

RewardFn = Callable[[list[str], list[str]], "list[float]"]


def _env_true(name: str) -> bool:
    """An accelerate launch flag as accelerate's own state reads it (`.lower() == "true"`; "1"/"yes" are not)."""
    return os.environ.get(name, "false").lower() == "true"


def check_sharding_applied(fsdp_enabled: bool, deepspeed_enabled: bool) -> None:
    """Fail loudly when the accelerate config asked for FSDP or DeepSpeed but accelerate did not apply it.

    accelerate applies FSDP only to CUDA (or other accelerator) process groups of two or more processes and
    DeepSpeed only off CPU; otherwise it falls back, without a word, to plain (DDP or single-process) training
    of the unsharded model — a run that looks fine until the memory the user planned for runs out.
    """
    asked = {
        "FSDP": (_env_true("ACCELERATE_USE_FSDP"), fsdp_enabled),
        "DeepSpeed": (_env_true("ACCELERATE_USE_DEEPSPEED"), deepspeed_enabled),
    }
    for name, (requested, applied) in asked.items():
        if requested and not applied:
            raise ValueError(
                f"the accelerate config asks for {name}, but accelerate did not apply it: it needs CUDA devices"
                f"{' and num_processes >= 2' if name == 'FSDP' else ''} (found "
                f"{torch.cuda.device_count()} CUDA devices); the run would train the unsharded model. On CPU use "
                "configs/accelerate/cpu_2proc.yaml (DDP over gloo)."
            )


def check_sharding_supported() -> None:
    """Refuse the two accelerate set-ups under which transformers' `from_pretrained` leaves a model unusable
    outside the training engine — which is where the frozen reference model (and the evaluation's) runs here:

    * DeepSpeed ZeRO-3 with `zero3_init_flag`: every model loaded after the TrainingArguments is partitioned
      at load time, and only a DeepSpeed engine can run a partitioned model (the policy gets one, the
      reference does not);
    * FSDP with `fsdp_cpu_ram_efficient_loading`: processes other than the first load their weights on the
      meta device and wait for FSDP to broadcast them, which a reference that FSDP does not wrap never gets.

    Both are read from the variables `accelerate launch` sets. Shipped configs avoid them (zero2.yaml, fsdp.yaml).
    """
    if (
        _env_true("ACCELERATE_USE_DEEPSPEED")
        and os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3"
        and _env_true("ACCELERATE_DEEPSPEED_ZERO3_INIT")
    ):
        raise ValueError(
            "the accelerate config asks for DeepSpeed ZeRO-3 with zero3_init_flag, which rlopt's alignment trainers "
            "do not support: it partitions every model from_pretrained loads, and the frozen reference model runs "
            "outside the DeepSpeed engine. Use configs/accelerate/zero2.yaml or fsdp.yaml."
        )
    if _env_true("ACCELERATE_USE_FSDP") and _env_true("FSDP_CPU_RAM_EFFICIENT_LOADING"):
        raise ValueError(
            "the accelerate config sets fsdp_cpu_ram_efficient_loading, which rlopt's alignment trainers do not "
            "support: processes after the first load the frozen reference model's weights on the meta device and "
            "only FSDP-wrapped models receive them. Set fsdp_cpu_ram_efficient_loading: false (configs/accelerate/"
            "fsdp.yaml)."
        )


class AlignmentTrainer(Trainer):
    dataset_kind = "preference"  # "preference" | "prompt-completion" | "prompt-only"

    def __init__(self, model, args, train_dataset, processing_class, ref_model=None, **kwargs):
        if self.dataset_kind == "prompt-only":
            train_dataset = to_standard_format(train_dataset, "prompt-only", processing_class)
        else:
            train_dataset = tokenized_dataset(train_dataset, self.dataset_kind, processing_class)
        kwargs.setdefault("data_collator", self.default_collator(processing_class))
        super().__init__(
            model=model, args=args, train_dataset=train_dataset, processing_class=processing_class, **kwargs
        )
        check_sharding_supported()
        check_sharding_applied(self.is_fsdp_enabled, self.is_deepspeed_enabled)
        ref_model = self.build_reference(model, ref_model, train_dataset)
        if ref_model is not None:
            ref_model = ref_model.to(self.args.device).eval().requires_grad_(False)
        self.ref_model = ref_model
        self._stats: dict[str, list[float]] = defaultdict(list)

    # --- hooks for the algorithm files

    def default_collator(self, tokenizer):
        raise NotImplementedError

    def build_reference(self, model, ref_model, train_dataset):
        """The reference model to keep (None: the method needs none, or LoRA adapters-off serves)."""
        return ref_model

    # --- shared pieces

    def reference(self):
        """Context manager yielding the frozen reference model (LoRA: the policy with adapters disabled)."""
        return reference(self.ref_model, self.accelerator.unwrap_model(self.model))

    def record(self, **values) -> None:
        """Statistics of this step (tensors or floats), averaged into the next log line (training only)."""
        if not self.model.training:
            return
        for key, value in values.items():
            self._stats[key].append(float(value.detach().float().mean()) if torch.is_tensor(value) else float(value))

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self._stats and "loss" in logs:
            logs = {**logs, **{k: sum(v) / len(v) for k, v in self._stats.items()}}
            self._stats.clear()
        super().log(logs, start_time)


def prompt_collator(examples: list[dict]) -> dict[str, list[str]]:
    return {"prompts": [ex["prompt"] for ex in examples]}


class OnlineTrainer(AlignmentTrainer):
    """generate -> score -> order -> loss. Subclasses choose the sampler (`sample_pair`) and the loss
    (`pair_loss`); `args` needs `max_new_tokens`, `temperature`, `top_k`, `missing_eos_penalty` and
    `preference_temperature` (see `online.OnlineDPOConfig`).

    Reward source: `reward_fn(prompts, completions) -> floats` (a gold program or a reward model as a
    function). With `preference_temperature` set the pair's order is drawn from the Bradley–Terry oracle
    σ((s_a − s_b)/T) (gold-preference setting), else taken from the scores; ties go to the first sample.
    """

    dataset_kind = "prompt-only"

    def __init__(self, model, args, train_dataset, processing_class, reward_fn: RewardFn, ref_model=None, **kwargs):
        super().__init__(model, args, train_dataset, processing_class, ref_model=ref_model, **kwargs)
        self.reward_fn = reward_fn

    def default_collator(self, tokenizer):
        return prompt_collator

    def build_reference(self, model, ref_model, train_dataset):
        if ref_model is None and not is_peft_model(model):
            ref_model = copy.deepcopy(model)  # the initial policy
        return ref_model

    def sample(self, model, prompts: list[str], num_samples: int = 1) -> Completions:
        args = self.args
        return generate(
            model,
            self.processing_class,
            prompts,
            args.max_new_tokens,
            args.temperature,
            args.top_k,
            num_samples=num_samples,
        )

    def sample_pair(self, policy, prompts: list[str]) -> tuple[Completions, Completions]:
        """Two completions per prompt from the policy, in one batched generate call."""
        both = self.sample(policy, prompts, num_samples=2)
        return both.take(slice(0, None, 2)), both.take(slice(1, None, 2))

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
        # the global torch RNG (seeded by Trainer, saved in every checkpoint): a resumed run draws the same labels
        return torch.rand(p.shape) < p

    def extra_terms(self, model, prompts: list[str]) -> dict:
        """Per-step inputs of `pair_loss` beyond the pair (e.g. online VPO's calibration log-probs)."""
        return {}

    def pair_loss(self, p_w, p_l, r_w, r_l, policy_second, **extra) -> torch.Tensor:
        raise NotImplementedError

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        prompts = inputs["prompts"]
        with torch.no_grad():
            a, b = self.sample_pair(self.accelerator.unwrap_model(model), prompts)
            scores_a, scores_b = self.scores(prompts, a), self.scores(prompts, b)
            a_chosen = self.first_is_chosen(scores_a, scores_b)
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
        pick = lambda x, y: (torch.where(a_chosen, x, y), torch.where(a_chosen, y, x))  # noqa: E731
        (p_w, p_l), (r_w, r_l) = pick(policy_a, policy_b), pick(ref_a, ref_b)
        loss = self.pair_loss(p_w, p_l, r_w, r_l, policy_b, **self.extra_terms(model, prompts)).mean()
        self.record(
            score=torch.cat([scores_a, scores_b]),
            kl_first=(policy_a - ref_a).detach(),
            margin=((p_w - r_w) - (p_l - r_l)).detach(),
            eos_rate=torch.cat([a.has_eos, b.has_eos]).float(),
        )
        if return_outputs:
            return loss, {"first_is_chosen": a_chosen, "policy_logps": (policy_a.detach(), policy_b.detach())}
        return loss
