"""Evaluation of a policy on a synthetic task (spec alignment.md §8.2): gold reward (mean ± s.e.), proxy
reward, KL(π‖ref) on the policy's samples (mean sequence k1 sum and mean k3 sum), exact-solve rate, EOS
rate, completion length, and the win rate against the reference under the gold reward."""

from __future__ import annotations

import math

import torch

from rlopt.alignment.losses import kl_k3
from rlopt.alignment.rollout import generate, sequence_logprobs
from rlopt.alignment.tasks import Task, parse_completion


@torch.no_grad()
def evaluate_policy(
    policy,
    ref,
    tokenizer,
    task: Task,
    prompts: list[str],
    samples_per_prompt: int = 4,
    temperature: float = 1.0,
    seed: int = 0,
    proxy_reward=None,
) -> dict[str, float]:
    """Metrics over `samples_per_prompt` samples of every prompt (and as many reference samples for the win rate)."""
    policy.eval()
    ref.eval()
    torch.manual_seed(seed)
    out = generate(policy, tokenizer, prompts, task.max_new_tokens, temperature, num_samples=samples_per_prompt)
    torch.manual_seed(seed + 1)
    ref_out = generate(ref, tokenizer, prompts, task.max_new_tokens, temperature, num_samples=samples_per_prompt)
    repeated = [p for p in prompts for _ in range(samples_per_prompt)]
    gold = torch.tensor(task.gold_rewards(repeated, out.texts))
    ref_gold = torch.tensor(task.gold_rewards(repeated, ref_out.texts))
    tensors = (out.prompt_ids, out.prompt_mask, out.completion_ids, out.completion_mask)
    policy_tok, policy_seq = sequence_logprobs(policy, *tensors, temperature)
    ref_tok, ref_seq = sequence_logprobs(ref, *tensors, temperature)
    k3 = (kl_k3(policy_tok, ref_tok) * out.completion_mask).sum(-1)
    n = len(out.texts)
    lengths = [len(parse_completion(t)[0]) for t in out.texts]
    exact = [task.reward(p, t) >= 1.0 and parse_completion(t)[1] for p, t in zip(repeated, out.texts)]
    metrics = {
        "gold_reward": gold.mean().item(),
        "gold_reward_se": (gold.std().item() / math.sqrt(n)) if n > 1 else 0.0,
        "kl_k1": (policy_seq - ref_seq).mean().item(),
        "kl_k3": k3.mean().item(),
        "exact_rate": sum(exact) / n,
        "eos_rate": out.has_eos.float().mean().item(),
        "length": sum(lengths) / n,
        # gold win rate against the reference, ties counted half
        "win_rate_vs_ref": ((gold > ref_gold).float() + 0.5 * (gold == ref_gold).float()).mean().item(),
        "samples": n,
    }
    if proxy_reward is not None:
        metrics["proxy_reward"] = float(torch.as_tensor(proxy_reward(repeated, out.texts)).float().mean())
    return metrics
