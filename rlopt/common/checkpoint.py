"""Atomic checkpoints: nested state dicts -> safetensors (tensors) + JSON (everything else).

A checkpoint directory is written under a temporary name and renamed into place, so a run killed
mid-write never leaves a half checkpoint behind; `latest` is replaced atomically too.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

TENSOR_TAG = "__tensor__"
NUMPY_TAG = "__numpy__"


def split_state(state: Any, tensors: dict[str, torch.Tensor], path: str = "") -> Any:
    """Move every tensor/ndarray of a nested structure into `tensors`; return the JSON skeleton."""
    if isinstance(state, torch.Tensor):
        tensors[path] = state.detach().cpu().contiguous()
        return {TENSOR_TAG: path}
    if isinstance(state, np.ndarray):
        tensors[path] = torch.from_numpy(np.array(state, copy=True, order="C"))
        return {NUMPY_TAG: path}
    if isinstance(state, dict):
        return {str(k): split_state(v, tensors, f"{path}/{k}" if path else str(k)) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return [split_state(v, tensors, f"{path}/{i}") for i, v in enumerate(state)]
    if isinstance(state, (np.integer, np.floating, np.bool_)):
        return state.item()
    return state


def join_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of split_state."""
    if isinstance(skeleton, dict):
        if TENSOR_TAG in skeleton and len(skeleton) == 1:
            return tensors[skeleton[TENSOR_TAG]]
        if NUMPY_TAG in skeleton and len(skeleton) == 1:
            return tensors[skeleton[NUMPY_TAG]].numpy()
        return {k: join_state(v, tensors) for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [join_state(v, tensors) for v in skeleton]
    return skeleton


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def save_checkpoint(
    ckpt_dir: str | Path, weights: dict[str, torch.Tensor], state: dict, meta: dict, config_yaml: str, keep: int = 0
) -> Path:
    """Write checkpoints/step_<N> atomically: model.safetensors, state.safetensors, state.json, config.yaml.

    `weights` is the inference state (what `evaluate` needs); `state` holds optimisers, buffers,
    normaliser statistics, RNG states; `meta` holds counters. Keeps the `keep` newest (0 = all).
    """
    ckpt_dir = Path(ckpt_dir)
    root = ckpt_dir.parent
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp_{ckpt_dir.name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, str(tmp / "model.safetensors"))
    tensors: dict[str, torch.Tensor] = {}
    skeleton = split_state(state, tensors)
    save_file(tensors, str(tmp / "state.safetensors"))
    (tmp / "state.json").write_text(json.dumps({"meta": meta, "state": skeleton}))
    (tmp / "config.yaml").write_text(config_yaml)
    if ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    os.replace(tmp, ckpt_dir)
    write_json_atomic(root / "latest.json", {"checkpoint": ckpt_dir.name, **meta})
    if keep > 0:
        for old in list_checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return ckpt_dir


def list_checkpoints(root: str | Path) -> list[Path]:
    """step_<N> directories under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_") and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def resolve_checkpoint(run_dir: str | Path, name: str | None = None) -> Path:
    """The checkpoint directory `name` (e.g. step_40000) of a run, or its latest one."""
    run_dir = Path(run_dir)
    root = run_dir / "checkpoints"
    if name:
        path = root / name if not Path(name).is_dir() else Path(name)
        if not path.is_dir():
            raise FileNotFoundError(f"checkpoint {name!r} not found under {root}")
        return path
    found = list_checkpoints(root)
    if not found:
        raise FileNotFoundError(f"no checkpoint in {root} (is {run_dir} a run directory?)")
    return found[-1]


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """(weights, state, meta) from a checkpoint directory."""
    path = Path(path)
    weights = load_file(str(path / "model.safetensors"))
    data = json.loads((path / "state.json").read_text())
    tensors = load_file(str(path / "state.safetensors"))
    return weights, join_state(data["state"], tensors), data["meta"]


def rng_state() -> dict:
    """Python, NumPy and torch global RNG states (JSON/tensor mix)."""
    state = {
        "python": _tuples_to_lists(random.getstate()),
        "numpy": np.random.get_state(legacy=False),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples_to_lists(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_tuples_to_lists(v) for v in value]
    return value
