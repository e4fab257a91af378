"""Sampling and log-probs (spec alignment.md §0.2): EOS masking, padding contributes nothing, and the
scored log-probs are those of the sampling distribution (same temperature, same positions)."""

from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("transformers")

from rlopt.alignment.losses import token_logprobs  # noqa: E402
from rlopt.alignment.models import build_tiny_model, load_causal_lm, load_tokenizer  # noqa: E402
from rlopt.alignment.rollout import eos_mask, generate, sequence_logprobs  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = build_tiny_model(tmp_path_factory.mktemp("tiny") / "policy", seed=0)
    return load_causal_lm(path).eval(), load_tokenizer(path)


def test_eos_mask_includes_the_first_eos_only():
    ids = torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8], [2, 0, 0, 0]])
    mask, has_eos = eos_mask(ids, eos_token_id=2)
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert has_eos.tolist() == [True, False, True]


def test_generate_layout_and_eos_truncation(tiny):
    model, tok = tiny
    torch.manual_seed(0)
    prompts = ["3 8 1 8 5 |", "1 |", "9 9 + 1 ="]
    out = generate(model, tok, prompts, max_new_tokens=8, num_samples=2)
    assert out.prompt_ids.shape[0] == 6 and out.completion_ids.shape == (6, 8)
    assert torch.equal(out.prompt_ids[0], out.prompt_ids[1])  # prompt-major rows
    assert out.prompt_mask[2:4, 0].tolist() == [0, 0]  # the short prompt is left-padded
    for row in range(6):
        n = int(out.completion_mask[row].sum())
        assert (out.completion_ids[row, n:] == tok.pad_token_id).all()  # pad after the first EOS
        if out.has_eos[row]:
            assert out.completion_ids[row, n - 1] == tok.eos_token_id and out.texts[row].endswith("<eos>")
        else:
            assert n == 8 and "<eos>" not in out.texts[row]
        assert "<pad>" not in out.texts[row]


def test_sequence_logprobs_reproduce_sampling_distribution(tiny):
    """Scores from a fresh forward pass equal the logits `generate` sampled from (left padding included),
    at the sampling temperature; tokens after EOS contribute exactly 0."""
    model, tok = tiny
    torch.manual_seed(1)
    prompts = ["3 8 1 8 5 |", "1 |"]
    enc = tok(prompts, padding=True, return_tensors="pt", add_special_tokens=False)
    gen = model.generate(
        **enc,
        do_sample=True,
        top_k=0,
        max_new_tokens=6,
        temperature=0.7,
        output_logits=True,
        return_dict_in_generate=True,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    completion = gen.sequences[:, enc["input_ids"].shape[1] :]
    mask, _ = eos_mask(completion, tok.eos_token_id)
    step_logits = torch.stack(gen.logits, 1)  # raw logits of each generation step [B, T, V]
    expected = token_logprobs(step_logits, completion, 0.7) * mask
    per_token, total = sequence_logprobs(model, enc["input_ids"], enc["attention_mask"], completion, mask, 0.7)
    torch.testing.assert_close(per_token, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(total, expected.sum(-1), atol=1e-5, rtol=1e-5)
    assert (per_token[mask == 0] == 0).all()
    # masked positions (after an EOS, or padding) contribute nothing, whatever tokens they hold
    short = mask.clone()
    short[:, 3:] = 0
    garbage = torch.where(short.bool(), completion, torch.full_like(completion, 7))
    _, clean = sequence_logprobs(model, enc["input_ids"], enc["attention_mask"], completion, short, 0.7)
    _, dirty = sequence_logprobs(model, enc["input_ids"], enc["attention_mask"], garbage, short, 0.7)
    torch.testing.assert_close(dirty, clean)
    torch.testing.assert_close(clean, expected[:, :3].sum(-1), atol=1e-5, rtol=1e-5)


def test_take_splits_two_samples_per_prompt(tiny):
    """Online DPO's batched pair: rows 0::2 and 1::2 are one sample of every prompt each, aligned with it."""
    model, tok = tiny
    torch.manual_seed(1)
    prompts = ["3 8 1 8 5 |", "1 |", "9 9 + 1 ="]
    out = generate(model, tok, prompts, max_new_tokens=8, num_samples=2)
    first, second = out.take(slice(0, None, 2)), out.take(slice(1, None, 2))
    single = tok(prompts, padding=True, return_tensors="pt", add_special_tokens=False)["input_ids"]
    for half, offset in ((first, 0), (second, 1)):
        assert torch.equal(half.prompt_ids, single) and half.texts == out.texts[offset::2]
        assert torch.equal(half.completion_ids, out.completion_ids[offset::2])
        assert torch.equal(half.has_eos, out.has_eos[offset::2])


def spy(fn, calls: list, name: str):
    def wrapped(*args, **kwargs):
        calls.append(name)
        return fn(*args, **kwargs)

    return wrapped


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("way", ["packed-sdpa", "packed-eager", "cache"])
def test_pair_logprobs_equal_sequence_logprobs_values_and_grads(tiny, arch, way, monkeypatch):
    """Prefix sharing changes no value and no gradient of the paired log-probs, both ways: one packed forward
    with a block mask (SDPA and eager attention) and the prompt's KV cache duplicated for both completions;
    unpaired rows fall back to the plain path."""
    from rlopt.alignment import rollout
    from rlopt.alignment.rollout import pair_logprobs

    model, tok = tiny
    if arch == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        cfg = LlamaConfig(
            vocab_size=16,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            pad_token_id=0,
        )
        model = LlamaForCausalLM(cfg)
    model = copy.deepcopy(model)  # the fixture's model is shared: switch the kernel on a copy
    model.set_attn_implementation("eager" if way == "packed-eager" else "sdpa")
    if way == "cache":
        monkeypatch.setattr(rollout, "PACKED_MAX_LENGTH", 0)
    calls = []
    monkeypatch.setattr(rollout, "_packed_pair_logprobs", spy(rollout._packed_pair_logprobs, calls, "packed"))
    monkeypatch.setattr(rollout, "_cached_pair_logprobs", spy(rollout._cached_pair_logprobs, calls, "cache"))
    torch.manual_seed(3)
    prompts = ["3 8 1 8 5 |", "1 |", "9 9 + 1 ="]
    a, b = generate(model, tok, prompts, 8), generate(model, tok, prompts, 8)
    both = [
        torch.cat([x, y])
        for x, y in zip(
            (a.prompt_ids, a.prompt_mask, a.completion_ids, a.completion_mask),
            (b.prompt_ids, b.prompt_mask, b.completion_ids, b.completion_mask),
        )
    ]
    weights = torch.linspace(-1, 2, 6)
    results = []
    for fn in (sequence_logprobs, pair_logprobs):
        model.zero_grad()
        per_token, seq = fn(model, *both, 0.7)
        (seq * weights).sum().backward()
        results.append((per_token.detach(), seq.detach(), [p.grad.clone() for p in model.parameters()]))
    (tok0, seq0, g0), (tok1, seq1, g1) = results
    torch.testing.assert_close(tok1, tok0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(seq1, seq0, atol=1e-5, rtol=1e-5)
    for x, y in zip(g1, g0):
        torch.testing.assert_close(x, y, atol=1e-4, rtol=1e-4)
    assert calls == [way.split("-")[0]]  # the way under test ran, once
    odd = [t[:5] for t in both]  # five rows: not a pairing, so the plain path
    torch.testing.assert_close(pair_logprobs(model, *odd)[1], sequence_logprobs(model, *odd)[1])


def _tiny_llama(vocab_size: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=0,
        eos_token_id=2,
    )
    return LlamaForCausalLM(cfg).eval()


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_shared_prefill_sampling_draws_what_generate_draws(tiny, arch, temperature, monkeypatch):
    """With several samples per prompt, `generate` prefills each prompt once and repeats its KV cache; under
    the same seed it draws the very tokens transformers' `generate` draws (padding after EOS included)."""
    from rlopt.alignment import rollout

    model, tok = tiny
    if arch == "llama":
        model = _tiny_llama(len(tok))
    prompts = ["3 8 1 8 5 |", "1 |", "9 9 + 1 =", "4 4 |"]
    assert rollout._plain_sampling_model(model)
    calls = []
    monkeypatch.setattr(rollout, "_sample_shared_prefill", spy(rollout._sample_shared_prefill, calls, "shared"))
    torch.manual_seed(11)
    fast = generate(model, tok, prompts, max_new_tokens=8, temperature=temperature, num_samples=3)
    assert calls == ["shared"]
    monkeypatch.setattr(rollout, "_plain_sampling_model", lambda m: False)  # force transformers' generate
    torch.manual_seed(11)
    slow = generate(model, tok, prompts, max_new_tokens=8, temperature=temperature, num_samples=3)
    assert torch.equal(fast.completion_ids, slow.completion_ids)
    assert torch.equal(fast.completion_mask, slow.completion_mask) and fast.texts == slow.texts
    assert fast.has_eos.any() and len(set(fast.texts)) > 3  # the comparison covered EOS and varied samples


def test_sampling_falls_back_to_generate_when_the_model_adds_processors(tiny, monkeypatch):
    """A generation config with a logits processor of its own (here a repetition penalty), top-k / top-p, or a
    single sample per prompt: transformers' `generate`, which applies them."""
    from rlopt.alignment import rollout

    model, tok = tiny
    model = copy.deepcopy(model)
    calls = []
    monkeypatch.setattr(rollout, "_sample_shared_prefill", spy(rollout._sample_shared_prefill, calls, "shared"))
    generate(model, tok, ["1 |"], max_new_tokens=4, num_samples=1)
    generate(model, tok, ["1 |"], max_new_tokens=4, num_samples=2, top_k=5)
    generate(model, tok, ["1 |"], max_new_tokens=4, num_samples=2, top_p=0.9)
    model.generation_config.repetition_penalty = 1.3
    assert not rollout._plain_sampling_model(model)
    generate(model, tok, ["1 |"], max_new_tokens=4, num_samples=2)
    assert calls == []


def test_shared_prefill_only_without_active_dropout():
    """In training mode a model with dropout samples through `generate` (independent masks per row); in
    evaluation mode, or with every dropout rate at 0, the shared prefill is used."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from rlopt.alignment.rollout import _plain_sampling_model

    cfg = dict(vocab_size=16, n_positions=32, n_embd=32, n_layer=1, n_head=2)
    with_dropout = GPT2LMHeadModel(GPT2Config(**cfg, resid_pdrop=0.1, embd_pdrop=0.0, attn_pdrop=0.0))
    assert not _plain_sampling_model(with_dropout.train()) and _plain_sampling_model(with_dropout.eval())
    no_dropout = GPT2LMHeadModel(GPT2Config(**cfg, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    assert _plain_sampling_model(no_dropout.train())
    llama = _tiny_llama(16)
    llama.config.attention_dropout = 0.1  # a functional dropout inside attention: no module to see
    assert not _plain_sampling_model(llama.train()) and _plain_sampling_model(llama.eval())


def test_cache_is_passed_under_the_installed_transformers_name(tiny):
    """transformers 5.x renamed the forward's `past_key_values` to `cache` (the old name is a deprecated alias, to
    be removed in 5.40): the shared-prefill sampler and the cached pair path use whichever name the model takes."""
    import warnings

    from rlopt.alignment import rollout

    model, tok = tiny
    llama = _tiny_llama(len(tok))
    prompts = ["3 8 1 |", "1 |"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for m in (model, llama):
            out = generate(m, tok, prompts, max_new_tokens=4, num_samples=2)
            tensors = (out.prompt_ids, out.prompt_mask, out.completion_ids, out.completion_mask)
            order = torch.tensor([0, 2, 1, 3])  # rows i and i + 2 share a prompt
            rollout._cached_pair_logprobs(m, *(t[order] for t in tensors), 1.0)
    assert not [w for w in caught if "past_key_values" in str(w.message)]


def test_forward_keywords_are_seen_through_a_ddp_wrapper():
    """Under accelerate's DDP the sampler and the pair paths get the wrapper, whose forward is (*inputs, **kwargs):
    the keyword checks read the wrapped model's forward, so logits_to_keep and the cache keyword still apply."""
    from rlopt.alignment import rollout

    llama = _tiny_llama(16)

    class Wrapper(torch.nn.Module):  # DistributedDataParallel's shape, without a process group
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, *inputs, **kwargs):
            return self.module(*inputs, **kwargs)

    wrapped = Wrapper(llama)
    assert rollout._logits_to_keep(wrapped, 3) == rollout._logits_to_keep(llama, 3) == {"logits_to_keep": 3}
    assert rollout._cache_argument(wrapped) == rollout._cache_argument(llama)
    assert rollout._logits_to_keep(torch.nn.Linear(2, 2), 3) == {}  # a forward without the keyword
