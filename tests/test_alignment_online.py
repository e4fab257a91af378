"""Online DPO and XPO (spec alignment.md §1.4, §4.8): tie rule, EOS penalty, XPO's reductions inside the
trainer, and a short end-to-end run through transformers.Trainer."""

from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("transformers")

import datasets  # noqa: E402

from rlopt.alignment.models import build_tiny_model, load_causal_lm, load_tokenizer  # noqa: E402
from rlopt.alignment.online import OnlineDPOConfig, OnlineDPOTrainer, XPOConfig, XPOTrainer  # noqa: E402
from rlopt.alignment.tasks import get_task  # noqa: E402

TASK = get_task("sort5")


@pytest.fixture
def setup(tmp_path):
    path = build_tiny_model(tmp_path / "m", seed=0)
    prompts = datasets.Dataset.from_list([{"prompt": p} for p in TASK.train_prompts(16, seed=0)])
    return path, load_tokenizer(path), prompts


def gold(prompts, completions):
    return TASK.gold_rewards(prompts, completions)


def config(tmp_path, cls=OnlineDPOConfig, **kw):
    return cls(output_dir=str(tmp_path / "out"), report_to="none", per_device_train_batch_size=8, **kw)


def test_ties_choose_the_first_sample_and_eos_penalty(setup, tmp_path):
    path, tok, prompts = setup
    trainer = OnlineDPOTrainer(
        load_causal_lm(path),
        config(tmp_path, missing_eos_penalty=1.0),
        prompts,
        tok,
        reward_fn=lambda p, c: [0.0] * len(p),
    )
    same = torch.zeros(5)
    assert trainer.first_is_chosen(same, same).all()
    out = trainer.sample(trainer.model, TASK.eval_prompts(8))
    scores = trainer.scores(TASK.eval_prompts(8), out)
    torch.testing.assert_close(scores, -(~out.has_eos).float())


def test_bt_oracle_follows_scores_at_low_temperature(setup, tmp_path):
    path, tok, prompts = setup
    trainer = OnlineDPOTrainer(
        load_causal_lm(path), config(tmp_path, preference_temperature=1e-4), prompts, tok, reward_fn=gold
    )
    a, b = torch.tensor([0.5, -0.2, 0.9]), torch.tensor([0.1, 0.3, 0.8])
    assert trainer.first_is_chosen(a, b).tolist() == [True, False, True]


def test_xpo_reduces_to_online_dpo_and_adds_the_bonus(setup, tmp_path):
    """Reference = policy (same weights) and the same seed: XPO samples what online DPO samples, so at α = 0
    the losses are equal, and α > 0 adds exactly α · mean L_θ(ỹ) of the reference's samples."""
    path, tok, prompts = setup
    policy = load_causal_lm(path)
    batch = {"prompts": TASK.eval_prompts(8)}

    def loss_of(trainer):
        torch.manual_seed(7)
        return trainer.compute_loss(trainer.model, batch, return_outputs=True)

    class SequentialOnlineDPO(OnlineDPOTrainer):
        """Online DPO drawing its two samples in two calls, in XPO's order (the shipped one batches them)."""

        def sample_pair(self, policy, prompts):
            return self.sample(policy, prompts), self.sample(policy, prompts)

    online = SequentialOnlineDPO(policy, config(tmp_path), prompts, tok, reward_fn=gold)
    loss_dpo, out_dpo = loss_of(online)
    for alpha in (0.0, 0.05):
        xpo = XPOTrainer(
            policy,
            config(tmp_path, XPOConfig, alpha=alpha),
            prompts,
            tok,
            reward_fn=gold,
            ref_model=copy.deepcopy(policy),
        )
        loss_xpo, out_xpo = loss_of(xpo)
        assert torch.equal(out_xpo["first_is_chosen"], out_dpo["first_is_chosen"])
        bonus = alpha * out_xpo["policy_logps"][1].mean()
        assert loss_xpo.item() == pytest.approx(loss_dpo.item() + bonus.item(), abs=1e-6)
    assert abs(bonus.item()) > 1e-3


@pytest.mark.parametrize("cls", ["online_dpo", "xpo"])
def test_training_steps_move_the_policy_only(setup, tmp_path, cls):
    path, tok, prompts = setup
    policy = load_causal_lm(path)
    if cls == "xpo":
        trainer = XPOTrainer(
            policy,
            config(tmp_path, XPOConfig, alpha=0.01, max_steps=2, learning_rate=1e-3),
            prompts,
            tok,
            reward_fn=gold,
        )
    else:
        trainer = OnlineDPOTrainer(
            policy, config(tmp_path, max_steps=2, learning_rate=1e-3), prompts, tok, reward_fn=gold
        )
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    ref_before = {k: v.clone() for k, v in trainer.ref_model.state_dict().items()}
    trainer.train()
    assert any(not torch.equal(before[k], v) for k, v in policy.state_dict().items())
    assert all(torch.equal(ref_before[k], v) for k, v in trainer.ref_model.state_dict().items())


def test_prompt_only_dataset_is_required(setup, tmp_path):
    path, tok, _ = setup
    bad = datasets.Dataset.from_list([{"question": "1 2 |"}])
    with pytest.raises(ValueError, match=r"prompt-only dataset is missing column\(s\) \['prompt'\]"):
        OnlineDPOTrainer(load_causal_lm(path), config(tmp_path), bad, tok, reward_fn=gold)
