"""Causal LMs and tokenizers: any Hugging Face model by hub id or local folder, and the tiny offline
model of the synthetic test bed (spec alignment.md §8.1), saved as an ordinary HF folder.

Nothing here downloads unless given a hub id: tests and demos build the tiny model from a config
and its tokenizer from the task vocabulary with `tokenizers`, then load it back with
`from_pretrained` like any other checkpoint.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch

from rlopt.alignment.tasks import BOS, EOS, PAD, SYMBOLS

TINY_GPT2 = dict(n_positions=32, n_embd=64, n_layer=2, n_head=4, n_inner=256)


def tiny_tokenizer():
    """The 16-symbol WordLevel tokenizer (whitespace pre-tokenizer) wrapped in PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {symbol: i for i, symbol in enumerate(SYMBOLS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token=PAD))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins tokens with single spaces
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=PAD
    )
    tokenizer.padding_side = "left"  # prompts are left-padded for generation
    return tokenizer


def tiny_gpt2_config(vocab_size: int = len(SYMBOLS), **overrides):
    """GPT-2 of spec §8.1: 2 layers, width 64, 4 heads, 32 positions, no dropout, untied head (~0.1 M)."""
    from transformers import GPT2Config

    kwargs = dict(
        vocab_size=vocab_size,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=False,
        pad_token_id=SYMBOLS.index(PAD),
        bos_token_id=SYMBOLS.index(BOS),
        eos_token_id=SYMBOLS.index(EOS),
        **TINY_GPT2,
    )
    kwargs.update(overrides)
    return GPT2Config(**kwargs)


def build_tiny_model(path: str | Path, seed: int = 0, reward_model: bool = False) -> Path:
    """Write a freshly initialised tiny policy (or a `num_labels=1` sequence classifier) + tokenizer to
    `path` as an HF folder; returns the path. Same seed, same weights."""
    from transformers import GPT2ForSequenceClassification, GPT2LMHeadModel

    torch.manual_seed(seed)
    if reward_model:
        model = GPT2ForSequenceClassification(tiny_gpt2_config(num_labels=1))
    else:
        model = GPT2LMHeadModel(tiny_gpt2_config())
    path = Path(path)
    model.save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def load_tokenizer(name_or_path: str | Path):
    """AutoTokenizer with a pad token (EOS when the model has none) and left padding for generation."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_causal_lm(name_or_path: str | Path, dtype: torch.dtype | str | None = None):
    """AutoModelForCausalLM by hub id or local folder (fp32 unless a dtype is given)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(name_or_path), dtype=dtype or torch.float32)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def is_peft_model(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


@contextmanager
def reference(ref_model, policy):
    """The frozen reference model: `ref_model`, or — for a LoRA policy without one — the policy itself with
    its adapters disabled (the base weights, which LoRA never changes)."""
    if ref_model is not None:
        yield ref_model
        return
    if not is_peft_model(policy):
        raise ValueError("no reference model: pass ref_model, or train LoRA adapters (reference = adapters off)")
    with policy.disable_adapter():
        yield policy
