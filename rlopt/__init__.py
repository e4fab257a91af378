"""rlopt: reinforcement learning and RLHF as optimization."""

__version__ = "0.1.0"
