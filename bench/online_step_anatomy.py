"""Where an online-DPO step's time goes on the throughput bench's tiny Llama, and what two hand-written
fast paths would save (a measurement for the README; neither path is used by the trainers).

    python bench/online_step_anatomy.py --threads 2 [--out bench/results/online_step_anatomy.json]

Needs the anchor model folder <tempdir>/anchors/tiny_llama (written by the anchor `trl_dpo_tiny.py`;
`bench/alignment_throughput.py` runs it first). Measures, best and median of 15 calls each:

* sampling one step's completions (32 prompts x 2 samples, 8 new tokens): `rollout.generate` (transformers'
  `generate`) against a hand-written decode loop — static KV cache, each prompt prefilled once for both of its
  samples, fused QKV and gate/up weights; the loop is checked to draw the same tokens as `generate` under the
  same seed, up to each sample's first EOS (it does not pad after EOS);
* one forward + backward over the packed training batch (32 rows x 20 tokens): transformers' Llama against a
  hand-written forward with fused weights (logits checked equal to 1e-5).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from alignment_throughput import online_prompts
from common import ROOT, stamp, write_report

from rlopt.alignment.rollout import eos_mask, generate, packed_pair_inputs, position_ids


def _rms(x, weight, eps):
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _rotate(x, cos, sin):
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], -1) * sin


def _fused_weights(model):
    """Per layer: (QKV [d, 3d'], O, gate|up, down, both norms) from a LlamaForCausalLM's own parameters."""
    out = []
    for layer in model.model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        qkv = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
        gate_up = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])
        norms = (layer.input_layernorm.weight, layer.post_attention_layernorm.weight)
        out.append((qkv, attn.o_proj.weight, gate_up, mlp.down_proj.weight, *norms))
    return out


def _block(x, weights, cos, sin, attend, cfg):
    """One decoder layer; `attend(q, k, v)` runs the attention (and may append k, v to a cache)."""
    qkv, o, gate_up, down, norm1, norm2 = weights
    rows, length = x.shape[:2]
    heads, kv_heads, dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    h = _rms(x, norm1, cfg.rms_norm_eps)
    qkv_out = F.linear(h, qkv).view(rows, length, heads + 2 * kv_heads, dim).transpose(1, 2)
    q, k, v = qkv_out.split([heads, kv_heads, kv_heads], 1)
    a = attend(_rotate(q, cos, sin), _rotate(k, cos, sin), v)
    x = x + F.linear(a.transpose(1, 2).reshape(rows, length, heads * dim), o)
    g, u = F.linear(_rms(x, norm2, cfg.rms_norm_eps), gate_up).chunk(2, -1)
    return x + F.linear(F.silu(g) * u, down)


def _rope(model, positions):
    freqs = positions[..., None].float() * model.model.rotary_emb.inv_freq
    emb = torch.cat([freqs, freqs], -1)
    return emb.cos()[:, None], emb.sin()[:, None]


def fused_forward(model, input_ids, mask4, positions, keep):
    """Logits of the last `keep` positions, the Llama forward with fused weights (autograd-friendly)."""
    cfg = model.config
    cos, sin = _rope(model, positions)
    x = model.model.embed_tokens(input_ids)
    attend = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask4)  # noqa: E731
    for weights in _fused_weights(model):
        x = _block(x, weights, cos, sin, attend, cfg)
    return F.linear(_rms(x[:, -keep:], model.model.norm.weight, cfg.rms_norm_eps), model.lm_head.weight)


@torch.no_grad()
def fused_sample(model, prompt_ids, prompt_mask, steps, num_samples=2):
    """[B * n, steps] sampled tokens (prompt-major rows, temperature 1), prompts prefilled once."""
    cfg = model.config
    rows, width = prompt_ids.shape
    n_rows, total = rows * num_samples, width + steps
    weights = _fused_weights(model)
    positions = position_ids(prompt_mask)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    mask = ((causal[None] & prompt_mask.bool()[:, None]) | torch.eye(width, dtype=torch.bool)[None])[:, None]
    keys, values = [], []

    def prefill_attend(q, k, v):
        shape = (n_rows, k.shape[1], total, k.shape[-1])
        keys.append(k.new_empty(shape))
        values.append(v.new_empty(shape))
        keys[-1][:, :, :width] = k.repeat_interleave(num_samples, 0)
        values[-1][:, :, :width] = v.repeat_interleave(num_samples, 0)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    cos, sin = _rope(model, positions)
    x = model.model.embed_tokens(prompt_ids)
    for w in weights:
        x = _block(x, w, cos, sin, prefill_attend, cfg)
    head = lambda h: F.linear(_rms(h, model.model.norm.weight, cfg.rms_norm_eps), model.lm_head.weight)  # noqa: E731
    logits = head(x[:, -1]).repeat_interleave(num_samples, 0)
    bias = torch.full((n_rows, 1, 1, total), float("-inf"))
    bias[:, 0, 0, :width] = torch.where(prompt_mask.bool(), 0.0, float("-inf")).repeat_interleave(num_samples, 0)
    position = positions[:, -1:].repeat_interleave(num_samples, 0)
    out = torch.empty(n_rows, steps, dtype=torch.long)
    for t in range(steps):
        out[:, t : t + 1] = token = torch.multinomial(logits.softmax(-1), 1)
        if t == steps - 1:
            break
        slot, position = width + t, position + 1
        bias[..., slot] = 0.0
        cos, sin = _rope(model, position)
        x = model.model.embed_tokens(token)
        for layer, w in enumerate(weights):

            def attend(q, k, v, layer=layer, slot=slot):
                keys[layer][:, :, slot : slot + 1], values[layer][:, :, slot : slot + 1] = k, v
                cached = (keys[layer][:, :, : slot + 1], values[layer][:, :, : slot + 1])
                return F.scaled_dot_product_attention(q, *cached, attn_mask=bias[..., : slot + 1])

            x = _block(x, w, cos, sin, attend, cfg)
        logits = head(x[:, -1])
    return out


def timed(fn, calls=15):
    fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return {"best_ms": round(min(times), 1), "median_ms": round(statistics.median(times), 1)}


def main() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "online_step_anatomy.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = Path(tempfile.gettempdir()) / "anchors" / "tiny_llama"
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    prompts = online_prompts()[:32]  # the online bench's prompts, one batch
    tok.padding_side = "left"
    enc = tok(prompts, padding=True, return_tensors="pt", add_special_tokens=False)
    ids, mask = enc["input_ids"], enc["attention_mask"]

    torch.manual_seed(5)
    mine = fused_sample(model, ids, mask, 8)
    torch.manual_seed(5)
    theirs = model.generate(
        input_ids=ids.repeat_interleave(2, 0),
        attention_mask=mask.repeat_interleave(2, 0),
        do_sample=True,
        max_new_tokens=8,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )[:, ids.shape[1] :]
    until_eos, _ = eos_mask(theirs, tok.eos_token_id)
    same = float(((mine[:, : theirs.shape[1]] == theirs).float() * until_eos).sum() / until_eos.sum())

    completion_mask = torch.ones(64, 8)
    attention, positions = packed_pair_inputs(mask.repeat(2, 1), completion_mask)
    packed = torch.cat([ids, torch.randint(3, 40, (32, 14))], 1)
    keep = 15
    hf = lambda: (
        model(  # noqa: E731
            input_ids=packed, attention_mask=attention[:, None], position_ids=positions, logits_to_keep=keep
        ).logits
    )
    fused = lambda: fused_forward(model, packed, attention[:, None], positions, keep)  # noqa: E731
    with torch.no_grad():
        logits_gap = float((hf() - fused()).abs().max())

    report = {
        **stamp(),
        "threads": args.threads,
        "sampling_64x8": {
            "transformers_generate": timed(lambda: generate(model, tok, prompts, 8, num_samples=2)),
            "hand_written_loop": timed(lambda: fused_sample(model, ids, mask, 8)),
            "same_tokens_until_eos": same,
        },
        "packed_forward_backward_32x20": {
            "transformers": timed(lambda: hf().square().mean().backward()),
            "hand_written_fused": timed(lambda: fused().square().mean().backward()),
            "max_logit_gap": logits_gap,
        },
    }
    print(write_report(report, args.out))


if __name__ == "__main__":
    main()
