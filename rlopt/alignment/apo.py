"""APO — accelerated preference optimisation (He, Yuan, Gu, arXiv 2410.06293; spec alignment.md §6).

Iterative DPO whose reference at round t is the extrapolated policy
    log π̂_t(y|x) = (1+α) L_{π_t}(y|x) − α L_{π_{t−1}}(y|x)        (π̂_0 = π_0),
Nesterov momentum in log-policy space. Its log Z(x) cancels in the DPO loss, so each round writes
the unnormalised values into the pairs' `ref_chosen_logps` / `ref_rejected_logps` columns and trains
with the ordinary DPO trainer. α = 0 is iterative DPO with a moving reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from rlopt.alignment.data import tokenized_dataset
from rlopt.alignment.dpo import DPOConfig, sequence_pair_logps  # noqa: F401  (re-exported)
from rlopt.alignment.losses import apo_reference_logps


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


@dataclass
class APOConfig(DPOConfig):
    """DPO settings for every round plus the round loop (spec §6.4/§6.7); `num_train_epochs` is per round."""

    alpha: float = field(default=0.3, metadata={"help": "Nesterov momentum α of the extrapolated reference"})
    rounds: int = field(default=3, metadata={"help": "rounds T (each on a fresh prompt split)"})
    prompts_per_round: int = field(default=2000, metadata={"help": "prompts sampled per round"})
    samples_per_prompt: int = field(default=4, metadata={"help": "K samples per prompt; pair = best vs worst"})
    max_new_tokens: int = 8

    def __post_init__(self):
        super().__post_init__()
        if self.alpha < 0 or self.alpha >= 1:
            raise ValueError(f"alpha: must be in [0, 1), got {self.alpha}")
        if self.rounds < 1 or self.prompts_per_round < 1 or self.samples_per_prompt < 2:
            raise ValueError("rounds and prompts_per_round must be >= 1 and samples_per_prompt >= 2")


@torch.no_grad()
def best_worst_pairs(
    policy, tokenizer, prompts: list[str], k: int, max_new_tokens: int, reward_fn, temperature, rng
) -> list[dict]:
    """Spec §6.3: K samples per prompt, best vs worst by score (ties dropped); with a Bradley–Terry
    temperature the pair's order is then drawn from the oracle σ((s_best − s_worst)/T)."""
    from rlopt.alignment.rollout import generate
    from rlopt.alignment.tasks import bt_preference

    out = generate(policy, tokenizer, prompts, max_new_tokens, num_samples=k)
    repeated = [p for p in prompts for _ in range(k)]
    scores = list(reward_fn(repeated, out.texts))
    rows = []
    for i, prompt in enumerate(prompts):
        block = list(zip(scores[i * k : (i + 1) * k], out.texts[i * k : (i + 1) * k]))
        best, worst = max(block, key=lambda t: t[0]), min(block, key=lambda t: t[0])
        if best[0] == worst[0]:
            continue
        if temperature is not None and not bt_preference(best[0], worst[0], temperature, rng):
            best, worst = worst, best
        rows.append({"prompt": prompt, "chosen": " " + best[1], "rejected": " " + worst[1]})
    return rows


def run_apo(run, model, tokenizer, prompts_dataset, task, reward) -> list[dict]:
    """The APO round loop: sample from π_t, pair best vs worst, write log π̂_t into the reference columns,
    train DPO from π_t; evaluate against π_0 after every round (eval_history.jsonl). α = 0 is iterative DPO."""
    import copy
    import dataclasses
    import json

    import datasets
    import numpy as np

    from rlopt.alignment.dpo import DPOTrainer
    from rlopt.alignment.evaluation import evaluate_policy

    args: APOConfig = run.args
    reward_fn, temperature = reward
    out = run.output_dir
    prompts = list(prompts_dataset["prompt"])
    need = args.rounds * args.prompts_per_round
    if len(prompts) < need:
        raise ValueError(
            f"apo: {args.rounds} rounds x {args.prompts_per_round} prompts need {need} prompts, got {len(prompts)}"
        )
    rng = np.random.default_rng(args.seed)
    initial = copy.deepcopy(model).eval().requires_grad_(False)
    previous = initial
    history = []
    eval_prompts = task.eval_prompts(run.spec.evaluation.periodic_prompts) if task is not None else None
    history_path = out / "eval_history.jsonl"

    def record(round_index: int, extra: dict) -> None:
        if eval_prompts is None or args.process_index != 0:
            return
        with torch.random.fork_rng(devices=[]):
            metrics = evaluate_policy(
                model, initial, tokenizer, task, eval_prompts, samples_per_prompt=2, seed=run.spec.evaluation.seed
            )
        row = {"round": round_index, **extra, **metrics}
        history.append(row)
        with history_path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")

    record(0, {"pairs": 0})
    for t in range(args.rounds):
        split = prompts[t * args.prompts_per_round : (t + 1) * args.prompts_per_round]
        model.eval()
        rows = best_worst_pairs(
            model, tokenizer, split, args.samples_per_prompt, args.max_new_tokens, reward_fn, temperature, rng
        )
        current = copy.deepcopy(model).eval().requires_grad_(False)
        pairs = apo_reference_columns(datasets.Dataset.from_list(rows), tokenizer, current, previous, args.alpha)
        round_args = dataclasses.replace(args, output_dir=str(out / f"round_{t + 1}"), save_strategy="no")
        model.train()
        DPOTrainer(model, round_args, pairs, tokenizer).train()
        previous = current
        record(t + 1, {"pairs": len(rows)})
    return history
