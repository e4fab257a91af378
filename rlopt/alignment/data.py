"""Tokenising TRL-format datasets and collating them into the layout of `rlopt.alignment.rollout`:
prompts left-padded, completions right-padded, completion masks over the completion tokens only."""

from __future__ import annotations

from dataclasses import dataclass

import torch


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


def check_columns(dataset, required: tuple[str, ...], kind: str) -> None:
    """One clear error naming the missing columns and the expected (TRL standard) format."""
    missing = [c for c in required if c not in dataset.column_names]
    if missing:
        expected = ", ".join(repr(c) for c in required)
        raise ValueError(
            f"{kind} dataset is missing column(s) {missing}: expected {expected} "
            f"(TRL's standard {kind} format), got {dataset.column_names}"
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


def tokenize_completion(example: dict, tokenizer) -> dict:
    """(prompt, completion) -> prompt_ids, completion_ids (EOS appended if missing), cut as above."""
    eos = tokenizer.eos_token
    text = example["completion"] if example["completion"].endswith(eos) else example["completion"] + eos
    prompt_ids = tokenizer(example["prompt"], add_special_tokens=False)["input_ids"]
    full = tokenizer(example["prompt"] + text, add_special_tokens=False)["input_ids"]
    cut = common_prefix(prompt_ids, full)
    return {"prompt_ids": full[:cut], "completion_ids": full[cut:]}


@dataclass
class CompletionCollator:
    """Tokenised prompt–completion examples -> one row each (left-padded prompt, right-padded completion)."""

    pad_token_id: int

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        prompts = [ex["prompt_ids"] for ex in examples]
        completions = [ex["completion_ids"] for ex in examples]
        return {
            "prompt_ids": _pad(prompts, self.pad_token_id, left=True),
            "prompt_mask": _pad([[1] * len(p) for p in prompts], 0, left=True),
            "completion_ids": _pad(completions, self.pad_token_id, left=False),
            "completion_mask": _pad([[1] * len(c) for c in completions], 0, left=False).float(),
        }


@dataclass
class SequencePairCollator:
    """Tokenised pairs -> [2B] full sequences prompt + completion (chosen rows first), right-padded, for
    sequence-classification reward models (which score the last non-pad token)."""

    pad_token_id: int

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        rows = [ex["prompt_ids"] + ex["chosen_ids"] for ex in examples]
        rows += [ex["prompt_ids"] + ex["rejected_ids"] for ex in examples]
        batch = {
            "input_ids": _pad(rows, self.pad_token_id, left=False),
            "attention_mask": _pad([[1] * len(r) for r in rows], 0, left=False),
        }
        if "margin" in examples[0]:
            batch["margin"] = torch.tensor([float(ex["margin"]) for ex in examples])
        return batch
