"""Run logging: metrics.jsonl (one JSON object per row), TensorBoard, a console progress bar, W&B opt-in."""

from __future__ import annotations

import json
import math
import time
from collections import deque
from pathlib import Path

from tqdm import tqdm


class Logger:
    """Writes metric rows to `<run_dir>/metrics.jsonl` and TensorBoard; drives the progress bar.

    On resume, rows after `start_step` (written after the checkpoint that is resumed) are dropped,
    so metrics.jsonl always describes one continuous run.
    """

    def __init__(
        self,
        run_dir: str | Path,
        total_steps: int,
        start_step: int = 0,
        progress: bool = True,
        tensorboard: bool = True,
        wandb_project: str | None = None,
        config: dict | None = None,
    ):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / "metrics.jsonl"
        if start_step > 0 and self.path.exists():
            kept = [
                line
                for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= start_step
            ]
            self.path.write_text("".join(line + "\n" for line in kept))
        elif start_step == 0 and self.path.exists():
            self.path.unlink()
        self.file = self.path.open("a")
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=start_step or None)
        self.wandb = None
        if wandb_project:
            import wandb  # opt-in dependency

            self.wandb = wandb.init(project=wandb_project, config=config, dir=str(self.run_dir), resume="allow")
        self.bar = tqdm(
            total=total_steps, initial=start_step, disable=not progress, unit="step", dynamic_ncols=True, smoothing=0.05
        )
        self.recent_returns: deque[float] = deque(maxlen=20)
        self.start_time = time.perf_counter()
        self.start_step = start_step

    def episode(self, returns: list[float]) -> None:
        self.recent_returns.extend(returns)

    def advance(self, step: int) -> None:
        """Move the progress bar to env step `step`."""
        self.bar.update(step - self.bar.n)
        if self.recent_returns:
            self.bar.set_postfix_str(f"return {sum(self.recent_returns) / len(self.recent_returns):.1f}", refresh=False)

    def steps_per_second(self, step: int) -> float:
        return (step - self.start_step) / max(time.perf_counter() - self.start_time, 1e-9)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        row = {"step": step}
        for key, value in metrics.items():
            value = float(value)
            row[key] = value if math.isfinite(value) else None
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        if self.writer is not None:
            for key, value in row.items():
                if key != "step" and value is not None:
                    self.writer.add_scalar(key, value, step)
        if self.wandb is not None:
            self.wandb.log(row, step=step)

    def close(self) -> None:
        self.bar.close()
        self.file.close()
        if self.writer is not None:
            self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
