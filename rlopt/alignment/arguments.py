"""The suite's base of every alignment config: `transformers.TrainingArguments` plus two defaults."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments


def _no_cuda() -> bool:
    return not torch.cuda.is_available()


@dataclass
class AlignmentArguments(TrainingArguments):
    """TrainingArguments that keep the token-id columns the collators need, and that run on CPU explicitly
    on machines without CUDA — which is what lets `accelerate launch` with several processes form a
    gloo process group there (configs/accelerate/cpu_2proc.yaml)."""

    remove_unused_columns: bool = False
    use_cpu: bool = field(default_factory=_no_cuda)
