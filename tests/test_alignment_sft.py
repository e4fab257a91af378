"""SFT (completion-only token-mean NLL): equals the installed TRL SFTTrainer's loss and gradients on the
same prompt–completion batch, and learns the sort-5 task's answers on CPU in seconds."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("trl")

import datasets  # noqa: E402

from rlopt.alignment.models import build_tiny_model, load_causal_lm, load_tokenizer  # noqa: E402
from rlopt.alignment.sft import SFTConfig, SFTTrainer  # noqa: E402
from rlopt.alignment.tasks import get_task  # noqa: E402
from tests.helpers import assert_same_loss_and_grads  # noqa: E402


def test_sft_loss_and_gradients_equal_trl(tmp_path):
    import trl

    path = build_tiny_model(tmp_path / "m", seed=0)
    model, tok = load_causal_lm(path), load_tokenizer(path)
    data = datasets.Dataset.from_list(get_task("sort5").sft_examples(8, seed=0))
    ours = SFTTrainer(model, SFTConfig(output_dir=str(tmp_path / "o"), report_to="none"), data, tok)
    theirs = trl.SFTTrainer(
        model=model,
        args=trl.SFTConfig(output_dir=str(tmp_path / "t"), report_to="none", bf16=False),
        train_dataset=data,
        processing_class=tok,
    )
    assert_same_loss_and_grads(model, ours, theirs)


def test_prompt_tokens_are_not_trained(tmp_path):
    """Changing a prompt's tokens' targets cannot matter: the loss only reads completion positions."""
    path = build_tiny_model(tmp_path / "m", seed=0)
    model, tok = load_causal_lm(path), load_tokenizer(path)
    data = datasets.Dataset.from_list([{"prompt": "1 2 3 4 5 |", "completion": " 1 2 3 4 5 <eos>"}])
    trainer = SFTTrainer(model, SFTConfig(output_dir=str(tmp_path / "o"), report_to="none"), data, tok)
    batch = trainer.data_collator([trainer.train_dataset[0]])
    assert batch["completion_mask"].sum().item() == 6  # five digits and <eos>
    assert batch["prompt_ids"].shape[1] == 6


def test_malformed_sft_dataset_is_one_clear_error(tmp_path):
    path = build_tiny_model(tmp_path / "m", seed=0)
    bad = datasets.Dataset.from_list([{"prompt": "1 |", "answer": " 1 <eos>"}])
    with pytest.raises(ValueError, match=r"prompt-completion dataset is missing column\(s\) \['completion'\]"):
        SFTTrainer(
            load_causal_lm(path), SFTConfig(output_dir=str(tmp_path / "o"), report_to="none"), bad, load_tokenizer(path)
        )


@pytest.mark.slow
def test_sft_learns_sort5(tmp_path):
    """Learning check: SFT on correct sort-5 answers lifts the sampled gold reward of held-out prompts."""
    from rlopt.alignment.rollout import generate

    torch.manual_seed(0)
    task = get_task("sort5")
    path = build_tiny_model(tmp_path / "m", seed=0)
    model, tok = load_causal_lm(path), load_tokenizer(path)
    prompts = task.eval_prompts(128)

    def gold():
        model.eval()
        out = generate(model, tok, prompts, max_new_tokens=task.max_new_tokens)
        return sum(task.gold_rewards(prompts, out.texts)) / len(prompts)

    before = gold()
    data = datasets.Dataset.from_list(task.sft_examples(6400, seed=0, p_good=1.0))
    args = SFTConfig(
        output_dir=str(tmp_path / "o"),
        report_to="none",
        per_device_train_batch_size=64,
        num_train_epochs=2,
        learning_rate=3e-3,
        lr_scheduler_type="cosine",
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    SFTTrainer(model, args, data, tok).train()
    after = gold()
    print(f"sort-5 gold reward before SFT {before:.3f}, after {after:.3f}")
    assert before < 0.0 and after > 0.6, (before, after)
