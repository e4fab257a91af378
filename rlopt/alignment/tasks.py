"""Synthetic tasks with programmatic gold rewards (spec alignment.md §8.2–8.3), for offline tests and demos.

Texts are symbols separated by spaces (`"3 8 1 8 5 |"`) over the 16-symbol vocabulary of
`rlopt.alignment.models.tiny_tokenizer`. A completion is scored from its decoded text with special
tokens kept (`"1 3 5 8 8 <eos>"`); `<pad>` and spaces are ignored, and whatever follows the first
`<eos>` does not count.

* Task S, "sort-5": the prompt is 5 random digits and `|`; the ideal answer is the digits sorted.
* Task A, "add-2": the prompt is `a + b =` with a, b in [0, 99]; the answer is the digits of a + b.

The held-out evaluation prompts of each task are fixed (seeded), and training prompts never
include them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
SYMBOLS = [PAD, BOS, EOS, *"0123456789", "+", "=", "|"]  # ids 0..15 in this order
DIGITS = "0123456789"
EVAL_SEED = 20_241_122  # fixed: the held-out prompts are the same for every run and seed


def spaced(symbols) -> str:
    return " ".join(symbols)


def parse_completion(completion: str) -> tuple[list[str], bool]:
    """(symbols before the first <eos>, whether an <eos> was generated); spaces and <pad> ignored."""
    before, eos, _ = completion.partition(EOS)
    symbols = before.replace(PAD, " ").replace(BOS, " ").split()
    return [c for token in symbols for c in token], bool(eos)  # "13" and "1 3" read the same


# ----------------------------------------------------------------------------- Task S: sort-5


def sort5_answer(prompt: str) -> list[str]:
    return sorted(c for c in prompt if c in DIGITS)


def sort5_reward(prompt: str, completion: str) -> float:
    """r* = (1/5) Σ_i 1[d_i = s_i] − 0.1 |len(d) − 5| − 0.5 · 1[no <eos>], clipped to [−1, 1] (§8.2).

    d is every symbol generated before <eos> (a non-digit counts towards the length and never matches).
    """
    target = sort5_answer(prompt)
    d, has_eos = parse_completion(completion)
    matches = sum(1 for i, s in enumerate(target) if i < len(d) and d[i] == s)
    # in tenths, so that equal rewards are equal floats: 2 per match (1/5), 1 per length unit, 5 without <eos>
    tenths = 2 * matches - abs(len(d) - len(target)) - (0 if has_eos else 5)
    return float(min(1.0, max(-1.0, tenths / 10)))


def sort5_exact(prompt: str, completion: str) -> bool:
    d, has_eos = parse_completion(completion)
    return has_eos and d == sort5_answer(prompt)


def sort5_prompt(rng: np.random.Generator) -> str:
    return spaced([*rng.integers(0, 10, 5).astype(str), "|"])


def sort5_corruption(prompt: str, rng: np.random.Generator) -> list[str]:
    """A wrong answer from the SFT mix: a permutation of x (40 %), s with one digit replaced (30 %),
    s with one digit dropped or duplicated (30 %)."""
    target = sort5_answer(prompt)
    kind = rng.random()
    if kind < 0.4:
        return [target[i] for i in rng.permutation(len(target))]
    out = list(target)
    i = int(rng.integers(len(out)))
    if kind < 0.7:
        out[i] = str((int(out[i]) + int(rng.integers(1, 10))) % 10)  # always a different digit
    elif rng.random() < 0.5:
        del out[i]
    else:
        out.insert(i, out[i])
    return out


# ----------------------------------------------------------------------------- Task A: add-2


def add2_operands(prompt: str) -> tuple[int, int]:
    left, _, right = prompt.replace(" ", "").rstrip("=").partition("+")
    return int(left), int(right)


def add2_reward(prompt: str, completion: str) -> float:
    """1 if the digits before <eos> spell a + b (and an <eos> was generated), else 0 (§8.3)."""
    a, b = add2_operands(prompt)
    d, has_eos = parse_completion(completion)
    return float(has_eos and "".join(d) == str(a + b))


def add2_prompt(rng: np.random.Generator) -> str:
    a, b = rng.integers(0, 100, 2)
    return spaced([*str(a), "+", *str(b), "="])


def add2_corruption(prompt: str, rng: np.random.Generator) -> list[str]:
    """a + b + k with k in {±1, ±10} (two thirds), else a random number in [0, 198] other than a + b."""
    a, b = add2_operands(prompt)
    total = a + b
    if rng.random() < 2 / 3:
        shifted = [total + k for k in (-10, -1, 1, 10) if total + k >= 0]
        return list(str(int(rng.choice(shifted))))
    wrong = int(rng.integers(0, 198))
    return list(str(wrong if wrong < total else wrong + 1))


# ----------------------------------------------------------------------------- task registry


@dataclass(frozen=True)
class Task:
    name: str
    make_prompt: Callable[[np.random.Generator], str]
    answer: Callable[[str], list[str]]
    corrupt: Callable[[str, np.random.Generator], list[str]]
    reward: Callable[[str, str], float]
    max_new_tokens: int
    sft_p_good: float  # probability of the correct answer in the SFT data

    def gold_rewards(self, prompts: list[str], completions: list[str]) -> list[float]:
        return [self.reward(p, c) for p, c in zip(prompts, completions, strict=True)]

    def eval_prompts(self, n: int = 1000) -> list[str]:
        """The fixed held-out prompts (distinct, in a fixed order)."""
        rng = np.random.default_rng(EVAL_SEED)
        seen: dict[str, None] = {}
        while len(seen) < n:
            seen.setdefault(self.make_prompt(rng))
        return list(seen)

    def train_prompts(self, n: int, seed: int, exclude_eval: int = 1000) -> list[str]:
        """n prompts drawn with `seed` (repeats allowed), never one of the first `exclude_eval` eval prompts."""
        held_out = set(self.eval_prompts(exclude_eval)) if exclude_eval else set()
        rng = np.random.default_rng(seed)
        out = []
        while len(out) < n:
            prompt = self.make_prompt(rng)
            if prompt not in held_out:
                out.append(prompt)
        return out

    def sft_examples(self, n: int, seed: int, p_good: float | None = None) -> list[dict[str, str]]:
        """Prompt–completion pairs (TRL's standard format): the answer with probability p_good, else a
        corruption. Completions start with a space (so prompt + completion tokenises as the two parts do)
        and end with <eos>."""
        p_good = self.sft_p_good if p_good is None else p_good
        rng = np.random.default_rng(seed + 1)
        examples = []
        for prompt in self.train_prompts(n, seed):
            answer = self.answer(prompt) if rng.random() < p_good else self.corrupt(prompt, rng)
            examples.append({"prompt": prompt, "completion": " " + spaced([*answer, EOS])})
        return examples


def add2_answer(prompt: str) -> list[str]:
    a, b = add2_operands(prompt)
    return list(str(a + b))


TASKS = {
    "sort5": Task("sort5", sort5_prompt, sort5_answer, sort5_corruption, sort5_reward, 8, 0.3),
    "add2": Task("add2", add2_prompt, add2_answer, add2_corruption, add2_reward, 5, 0.5),
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose from {sorted(TASKS)}")
    return TASKS[name]


def bt_preference(reward_a: float, reward_b: float, temperature: float, rng: np.random.Generator) -> bool:
    """Gold Bradley–Terry oracle: True (a ≻ b) with probability σ((r_a − r_b) / temperature)."""
    z = (reward_a - reward_b) / temperature
    p = 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))
    return bool(rng.random() < p)


def sample_preference_pairs(
    task: Task,
    model,
    tokenizer,
    prompts: list[str],
    temperature: float = 0.1,
    seed: int = 0,
    batch_size: int = 512,
) -> list[dict[str, str]]:
    """D_pref of spec §8.2: two samples per prompt from `model`, labelled by the gold Bradley–Terry oracle
    at `temperature`; pairs whose two completions are identical are dropped. Returns TRL-format rows
    (prompt, chosen, rejected, plus both gold rewards) with completions as " " + text."""
    import torch

    from rlopt.alignment.rollout import generate

    rng = np.random.default_rng(seed)
    rows = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        torch.manual_seed(seed + start)
        out = generate(model, tokenizer, chunk, task.max_new_tokens, num_samples=2)
        for i, prompt in enumerate(chunk):
            a, b = out.texts[2 * i], out.texts[2 * i + 1]
            if a == b:
                continue
            ra, rb = task.reward(prompt, a), task.reward(prompt, b)
            if not bt_preference(ra, rb, temperature, rng):
                a, b, ra, rb = b, a, rb, ra
            rows.append(
                {"prompt": prompt, "chosen": " " + a, "rejected": " " + b, "gold_chosen": ra, "gold_rejected": rb}
            )
    return rows
