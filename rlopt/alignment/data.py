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


# ----------------------------------------------------------------------------- user datasets

FORMATS = {
    "prompt-only": ("prompt",),
    "prompt-completion": ("prompt", "completion"),
    "preference": ("prompt", "chosen", "rejected"),
}
LOCAL_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def load_user_dataset(source: str, split: str = "train"):
    """A `datasets.Dataset` from a local JSON/JSONL/Parquet/CSV file, a folder saved with `save_to_disk`,
    or a hub dataset name (used by anyone with internet)."""
    from pathlib import Path

    import datasets

    path = Path(source)
    if path.is_dir() and (path / "dataset_info.json").is_file():
        loaded = datasets.load_from_disk(str(path))
        return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
    if path.suffix in LOCAL_BUILDERS:
        if not path.is_file():
            raise FileNotFoundError(f"dataset file {source!r} does not exist")
        return datasets.load_dataset(LOCAL_BUILDERS[path.suffix], data_files=str(path), split="train")
    return datasets.load_dataset(source, split=split)


def to_standard_format(dataset, kind: str, tokenizer):
    """Check the columns of a TRL-format dataset and render conversational examples to text.

    `kind` is "prompt-only", "prompt-completion" or "preference". Standard (string) examples pass
    through; conversational ones (lists of {"role", "content"} messages) go through the tokenizer's
    chat template as TRL renders them (prompt with the generation prompt, completions as the rest).
    A preference dataset with an implicit prompt (only "chosen"/"rejected") has its shared prefix
    extracted as the prompt first.
    """
    if kind not in FORMATS:
        raise ValueError(f"unknown dataset kind {kind!r}; choose from {sorted(FORMATS)}")
    from trl.data_utils import is_conversational, maybe_apply_chat_template, maybe_extract_prompt

    if (
        kind == "preference"
        and "prompt" not in dataset.column_names
        and {"chosen", "rejected"} <= set(dataset.column_names)
    ):
        dataset = dataset.map(maybe_extract_prompt)
    check_columns(dataset, FORMATS[kind], kind)
    if len(dataset) and is_conversational(dataset[0]):
        if tokenizer.chat_template is None:
            raise ValueError(
                "the dataset is conversational (lists of role/content messages) but the tokenizer has no chat "
                "template; use a chat model's tokenizer or a dataset in the standard (string) format"
            )
        dataset = dataset.map(maybe_apply_chat_template, fn_kwargs={"processing_class": tokenizer})
    return dataset


def tokenized_dataset(dataset, kind: str, tokenizer):
    """Check/render a TRL-format dataset (`to_standard_format`) and add its token-id columns, unless present:
    prompt_ids + chosen_ids/rejected_ids for "preference", prompt_ids + completion_ids for "prompt-completion"."""
    dataset = to_standard_format(dataset, kind, tokenizer)
    if "prompt_ids" in dataset.column_names:
        return dataset
    tokenize = {"preference": tokenize_preferences, "prompt-completion": tokenize_completion}[kind]
    return dataset.map(tokenize, fn_kwargs={"tokenizer": tokenizer})
