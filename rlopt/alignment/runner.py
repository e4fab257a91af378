"""Alignment runs from one YAML config: `python train.py --config configs/alignment/<algo>/<task>.yaml`.

A config is flat: `transformers.TrainingArguments` names (`output_dir`, `max_steps`, `learning_rate`,
`per_device_train_batch_size`, `report_to`, ...), the algorithm's own fields (`beta`, `alpha`, ...) and
these run keys:

    algo: sft | rm | dpo | vpo | online_dpo | xpo | online_vpo | apo
    model_name_or_path: hub id, local folder, or "tiny" (the §8.1 model built fresh from `model_seed`)
    ref_model_name_or_path: the reference (default: the initial policy)
    task: sort5 | add2          # synthetic task: gold reward, generated data, held-out evaluation
    dataset: {...}              # DatasetSpec: a user dataset (`path`) or generation settings
    reward: {...}               # RewardSpec: gold | gold_bt | model (online methods and APO)
    evaluation: {...}           # EvalSpec: final and periodic evaluation
    lora: {...}                 # LoraSpec: r > 0 trains LoRA adapters (reference = adapters disabled)

The output folder is an HF model folder plus `config.yaml` (the resolved config), `eval.json` and, with
periodic evaluation, `eval_history.jsonl`. `resume_from_checkpoint=true` continues from the latest
`checkpoint-*` folder of `output_dir`.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rlopt.alignment_names import ALIGNMENT_ALGOS
from rlopt.config import ConfigError, _coerce, build

RUN_KEYS = ("algo", "model_name_or_path", "ref_model_name_or_path", "task", "dataset", "reward", "evaluation", "lora")


@dataclass
class DatasetSpec:
    """Training data: a user dataset (`path`: hub name, local JSON/JSONL/Parquet/CSV, or a saved folder), or,
    with an empty `path`, generated from the task and saved under `<output_dir>/data`."""

    path: str = ""
    split: str = "train"
    num_examples: int = 0  # generated rows (prompts for preference data); 0 = the spec's default for the algo
    held_out: int = 1000  # generated preference pairs kept out of training (RM accuracy, pair accuracy)
    p_good: float | None = None  # SFT data: probability of the correct answer (None = task default)
    temperature: float = 0.1  # Bradley–Terry temperature of generated preference labels
    generator: str = ""  # model that samples generated preference pairs (default: the reference)
    seed: int = 0

    def __post_init__(self):
        if self.num_examples < 0:
            raise ConfigError(f"dataset.num_examples: must be >= 0, got {self.num_examples}")
        if self.temperature <= 0:
            raise ConfigError(f"dataset.temperature: must be > 0, got {self.temperature}")
        if self.p_good is not None and not 0 <= self.p_good <= 1:
            raise ConfigError(f"dataset.p_good: must be in [0, 1], got {self.p_good}")


@dataclass
class RewardSpec:
    """Where online methods get their labels: `gold` (the task's program, pairs ordered by score), `gold_bt`
    (the gold Bradley–Terry oracle at `temperature`) or `model` (a reward-model folder at `path`)."""

    source: str = "gold_bt"
    path: str = ""
    temperature: float = 0.1

    def __post_init__(self):
        if self.source not in ("gold", "gold_bt", "model"):
            raise ConfigError(f"reward.source: must be gold, gold_bt or model, got {self.source!r}")
        if self.source == "model" and not self.path:
            raise ConfigError("reward.path: required with reward.source=model (a reward-model folder)")
        if self.temperature <= 0:
            raise ConfigError(f"reward.temperature: must be > 0, got {self.temperature}")


@dataclass
class EvalSpec:
    every_steps: int = 0  # periodic evaluation (eval_history.jsonl); 0 = only at the end
    prompts: int = 1000  # held-out prompts of the final evaluation
    samples_per_prompt: int = 4
    periodic_prompts: int = 256  # held-out prompts of each periodic evaluation
    seed: int = 1234


@dataclass
class LoraSpec:
    r: int = 0  # 0 = full fine-tuning
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] | None = None  # None = peft's default for the architecture


@dataclass
class RunSpec:
    algo: str
    model_name_or_path: str = "tiny"
    ref_model_name_or_path: str = ""
    task: str = ""
    model_seed: int = 0  # seed of a freshly built "tiny" model
    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    reward: RewardSpec = field(default_factory=RewardSpec)
    evaluation: EvalSpec = field(default_factory=EvalSpec)
    lora: LoraSpec = field(default_factory=LoraSpec)


# algo -> (config class, dataset kind, default generated rows)
def algorithms() -> dict[str, tuple[type, str, int]]:
    from rlopt.alignment.apo import APOConfig
    from rlopt.alignment.dpo import DPOConfig
    from rlopt.alignment.online import OnlineDPOConfig, XPOConfig
    from rlopt.alignment.reward_model import RewardConfig
    from rlopt.alignment.sft import SFTConfig
    from rlopt.alignment.vpo import OnlineVPOConfig, VPOConfig

    return {
        "sft": (SFTConfig, "prompt-completion", 20_000),
        "rm": (RewardConfig, "preference", 10_000),
        "dpo": (DPOConfig, "preference", 10_000),
        "vpo": (VPOConfig, "preference", 10_000),
        "online_dpo": (OnlineDPOConfig, "prompt-only", 25_600),
        "xpo": (XPOConfig, "prompt-only", 25_600),
        "online_vpo": (OnlineVPOConfig, "prompt-only", 25_600),
        "apo": (APOConfig, "prompt-only", 10_000),
    }


# TrainingArguments defaults that suit the tiny CPU test bed (a config or override still wins)
DEFAULTS = {
    "report_to": "tensorboard",
    "save_strategy": "steps",
    "save_steps": 100,
    "save_total_limit": 2,
    "logging_steps": 10,
    "per_device_train_batch_size": 64,
    "seed": 0,
    "ddp_find_unused_parameters": False,  # every policy parameter takes part in the loss
}


@dataclass
class AlignmentRun:
    spec: RunSpec
    args: Any  # the algorithm's TrainingArguments subclass
    raw: dict  # the resolved flat config (what config.yaml holds)

    @property
    def output_dir(self) -> Path:
        return Path(self.args.output_dir)


def _simple(tp) -> bool:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return all(_simple(a) for a in typing.get_args(tp))
    return tp in (int, float, bool, str, type(None))


def build_arguments(cls: type, values: dict):
    """The algorithm's TrainingArguments subclass from flat values: unknown keys and wrong simple types are a
    ConfigError naming the key; TrainingArguments' own checks are reported the same way."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(
                f"{key}: unknown key for algo config {cls.__name__} (TrainingArguments names, the run keys "
                f"{', '.join(RUN_KEYS)}, or the algorithm's fields)"
            )
        if key == "resume_from_checkpoint" and isinstance(value, bool):
            value = "latest" if value else None  # `resume_from_checkpoint=true`: the last checkpoint-* of output_dir
        if value is False and not _simple(hints.get(key)):
            value = "no"  # YAML reads `save_strategy: no` as False; the strategy fields take the string "no"
        kwargs[key] = _coerce(value, hints[key], key) if _simple(hints.get(key)) else value
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{cls.__name__}: {err}") from None


def run_spec(values: dict) -> RunSpec:
    """The run keys of a config (sections given as null take their defaults)."""
    values = {k: v for k, v in values.items() if k in (*RUN_KEYS, "model_seed")}
    for key in ("dataset", "reward", "evaluation", "lora"):
        if values.get(key) is None:
            values.pop(key, None)
    return build(RunSpec, values)


def load_alignment_config(data: dict) -> AlignmentRun:
    """Split a flat config dict into the run spec and the algorithm's TrainingArguments."""
    data = dict(data)
    algo = str(data.get("algo", ""))
    table = algorithms()
    if algo not in table:
        raise ConfigError(f"algo: unknown alignment algorithm {algo!r}; choose from {', '.join(ALIGNMENT_ALGOS)}")
    spec = run_spec({k: data.pop(k) for k in [*RUN_KEYS, "model_seed"] if k in data})
    if spec.task:
        from rlopt.alignment.tasks import TASKS

        if spec.task not in TASKS:
            raise ConfigError(f"task: unknown task {spec.task!r}; choose from {', '.join(sorted(TASKS))}")
    if not data.get("output_dir"):
        raise ConfigError("output_dir: missing (where the model, checkpoints and eval.json go)")
    values = {**DEFAULTS, **data}
    args = build_arguments(table[algo][0], values)
    raw = {**dataclasses.asdict(spec), **{k: v for k, v in values.items()}}
    return AlignmentRun(spec, args, raw)


# ----------------------------------------------------------------------------- models, data, rewards


def resolve_model_path(spec: RunSpec, out: Path, reward_model: bool = False) -> str:
    """A hub id or folder as given, or a freshly built tiny model under `<output_dir>/init`."""
    if spec.model_name_or_path == "tiny":
        from rlopt.alignment.models import build_tiny_model

        init = out / "init"
        if not (init / "config.json").is_file():
            build_tiny_model(init, seed=spec.model_seed, reward_model=reward_model)
        return str(init)
    path = Path(spec.model_name_or_path)
    looks_local = spec.model_name_or_path.startswith((".", "/", "runs")) or path.exists()
    if looks_local and not (path / "config.json").is_file():
        raise ConfigError(
            f"model_name_or_path: {spec.model_name_or_path} is not a model folder (no config.json); "
            "train it first (e.g. configs/alignment/sft/*.yaml) or give a hub id"
        )
    return spec.model_name_or_path


def generated_dataset(run: AlignmentRun, kind: str, default_rows: int, generator=None, tokenizer=None):
    """(train, held_out or None) generated from the task, saved under `<output_dir>/data` and reloaded
    from there on later runs (so a resumed run trains on the same rows)."""
    import datasets

    spec, task_name = run.spec, run.spec.task
    if not task_name:
        raise ConfigError("dataset.path or task: give a dataset to load, or a synthetic task to generate one")
    from rlopt.alignment.tasks import get_task

    task = get_task(task_name)
    d = spec.dataset
    rows = d.num_examples or default_rows
    folder = run.output_dir / "data"
    if (folder / "train" / "dataset_info.json").is_file():
        train = datasets.load_from_disk(str(folder / "train"))
        held = folder / "held_out"
        return train, (datasets.load_from_disk(str(held)) if held.is_dir() else None)
    held_out = None
    if kind == "prompt-completion":
        train = datasets.Dataset.from_list(task.sft_examples(rows, seed=d.seed, p_good=d.p_good))
    elif kind == "prompt-only":
        train = datasets.Dataset.from_dict({"prompt": task.train_prompts(rows, seed=d.seed)})
    else:
        from rlopt.alignment.tasks import sample_preference_pairs

        prompts = task.train_prompts(rows, seed=d.seed + 7)
        pairs = sample_preference_pairs(task, generator, tokenizer, prompts, temperature=d.temperature, seed=d.seed)
        n_held = min(d.held_out, len(pairs) // 10)
        train = datasets.Dataset.from_list(pairs[: len(pairs) - n_held])
        held_out = datasets.Dataset.from_list(pairs[len(pairs) - n_held :]) if n_held else None
    if run.args.process_index == 0:
        train.save_to_disk(str(folder / "train"))
        if held_out is not None:
            held_out.save_to_disk(str(folder / "held_out"))
    return train, held_out


def reward_function(spec: RunSpec, task, device="cpu"):
    """reward_fn(prompts, completions) -> list of floats for the online trainers, and the Bradley–Terry
    temperature to order pairs with (None: by score)."""
    r = spec.reward
    if r.source == "model":
        from transformers import AutoModelForSequenceClassification

        from rlopt.alignment.models import load_tokenizer
        from rlopt.alignment.reward_model import score

        if not (Path(r.path) / "config.json").is_file():
            raise ConfigError(f"reward.path: {r.path} is not a reward-model folder (no config.json)")
        model = AutoModelForSequenceClassification.from_pretrained(r.path).to(device).eval()
        tokenizer = load_tokenizer(r.path)
        return (lambda prompts, completions: score(model, tokenizer, prompts, completions).tolist()), None
    if task is None:
        raise ConfigError(f"reward.source={r.source} needs a task (the gold reward is the task's program)")
    return task.gold_rewards, (r.temperature if r.source == "gold_bt" else None)


def apply_lora(model, spec: LoraSpec):
    """Wrap the policy in LoRA adapters (peft); the frozen base with adapters disabled is the reference."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ConfigError("lora.r > 0 needs peft: pip install 'rlopt[alignment]' (or pip install peft)") from None
    config = LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=spec.target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


# ----------------------------------------------------------------------------- evaluation callback


def periodic_eval_callback(run: AlignmentRun, ref, tokenizer, task, proxy=None):
    import torch
    from transformers import TrainerCallback

    from rlopt.alignment.evaluation import evaluate_policy

    every = run.spec.evaluation.every_steps
    path = run.output_dir / "eval_history.jsonl"
    prompts = task.eval_prompts(run.spec.evaluation.periodic_prompts)

    class PeriodicEval(TrainerCallback):
        def evaluate(self, state, model, step_key="step", step_value=None):
            if not state.is_world_process_zero:
                return
            with torch.random.fork_rng(devices=[]):  # evaluation seeds its own sampling; training RNG untouched
                metrics = evaluate_policy(
                    model,
                    ref,
                    tokenizer,
                    task,
                    prompts,
                    samples_per_prompt=2,
                    seed=run.spec.evaluation.seed,
                    proxy_reward=proxy,
                )
            model.train()
            row = {step_key: state.global_step if step_value is None else step_value, **metrics}
            with path.open("a") as fh:
                fh.write(json.dumps(row) + "\n")

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            if state.global_step == 0 and not path.exists():
                self.evaluate(state, model)

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if every and state.global_step % every == 0:
                self.evaluate(state, model)

    return PeriodicEval()


# ----------------------------------------------------------------------------- the run


def run_alignment(run: AlignmentRun, stop_at: int = 0) -> dict:
    """Train, save the model folder + config.yaml, and evaluate on the task's held-out prompts (eval.json)."""
    import torch

    from rlopt.alignment.models import load_causal_lm, load_tokenizer

    spec, args = run.spec, run.args
    out = run.output_dir
    out.mkdir(parents=True, exist_ok=True)
    if args.process_index == 0:
        (out / "config.yaml").write_text(yaml.safe_dump(run.raw, sort_keys=False))
    torch.manual_seed(args.seed)
    task = None
    if spec.task:
        from rlopt.alignment.tasks import get_task

        task = get_task(spec.task)
    algo = spec.algo
    kind, default_rows = algorithms()[algo][1:]
    with args.main_process_first(desc="model and data"):
        model_path = resolve_model_path(spec, out, reward_model=algo == "rm")
        ref_path = spec.ref_model_name_or_path or model_path
        tokenizer = load_tokenizer(model_path)
        if algo == "rm":
            from transformers import AutoModelForSequenceClassification

            model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=1)
        else:
            model = load_causal_lm(model_path)
        ref = None if algo in ("sft", "rm") else load_causal_lm(ref_path).eval()
        held_out = None
        if spec.dataset.path:
            from rlopt.alignment.data import load_user_dataset

            train = load_user_dataset(spec.dataset.path, spec.dataset.split)
        else:
            generator = None
            if kind == "preference":
                generator = load_causal_lm(spec.dataset.generator) if spec.dataset.generator else ref
                if generator is None:
                    generator = load_causal_lm(model_path)
            train, held_out = generated_dataset(run, kind, default_rows, generator, tokenizer)
    if spec.lora.r > 0:
        if algo == "rm":
            raise ConfigError("lora: LoRA is supported for policies (not the reward model) in this version")
        model = apply_lora(model, spec.lora)
        ref = None  # the reference is the base with adapters disabled
    # the reward source, built once: the online methods' and APO's labels, and the proxy score in evaluations
    needs_reward = algo in ("online_dpo", "xpo", "online_vpo", "apo") or spec.reward.source == "model"
    reward = reward_function(spec, task) if needs_reward else None
    trainer = None if algo == "apo" else make_trainer(run, model, ref, tokenizer, train, reward)
    if trainer is not None and task is not None and algo != "rm" and (spec.evaluation.every_steps or algo != "sft"):
        eval_ref = ref if ref is not None else load_causal_lm(ref_path).eval()
        proxy = reward[0] if spec.reward.source == "model" else None
        trainer.add_callback(periodic_eval_callback(run, eval_ref, tokenizer, task, proxy))
    resume = args.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() in ("true", "latest", "yes"):
        resume = True
    checkpoint = None
    if resume is True:
        from transformers.trainer_utils import get_last_checkpoint

        checkpoint = get_last_checkpoint(str(out)) if out.is_dir() else None
        if checkpoint is None:
            raise ConfigError(f"resume_from_checkpoint: no checkpoint-* folder in {out} to resume from")
    elif resume:
        checkpoint = str(resume)
    if stop_at and trainer is not None:
        trainer.add_callback(stop_callback(stop_at))
    history = out / "eval_history.jsonl"
    if args.process_index == 0 and history.exists():
        if checkpoint is None:
            history.unlink()  # a fresh run into an old folder starts a fresh history
        else:  # drop evaluations past the checkpoint we resume from (they are recomputed)
            step = int(Path(checkpoint).name.split("-")[-1])
            rows = [json.loads(x) for x in history.read_text().splitlines() if x.strip()]
            history.write_text("".join(json.dumps(r) + "\n" for r in rows if r.get("step", 0) <= step))
    if trainer is None:
        from rlopt.alignment.apo import run_apo

        run_apo(run, model, tokenizer, train, task, reward)
    else:
        trainer.train(resume_from_checkpoint=resume or None)
    if args.process_index != 0:
        return {}
    if spec.lora.r > 0:
        model = model.merge_and_unload()  # the output folder is a plain model; adapters stay in checkpoint-*
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    result = {"algo": algo, "output_dir": str(out)}
    if task is not None:
        result.update(evaluate_run(out, held_out=held_out))
    return result


def make_trainer(run: AlignmentRun, model, ref, tokenizer, train, reward):
    """The method's trainer; `reward` = (reward_fn, Bradley–Terry temperature or None) for the online ones."""
    args, algo = run.args, run.spec.algo
    if algo == "sft":
        from rlopt.alignment.sft import SFTTrainer

        return SFTTrainer(model, args, train, tokenizer)
    if algo == "rm":
        from rlopt.alignment.reward_model import RewardTrainer

        return RewardTrainer(model, args, train, tokenizer)
    if algo in ("dpo", "vpo"):
        from rlopt.alignment.dpo import DPOTrainer
        from rlopt.alignment.vpo import VPOTrainer

        cls = VPOTrainer if algo == "vpo" else DPOTrainer
        return cls(model, args, train, tokenizer, ref_model=ref)
    from rlopt.alignment.online import OnlineDPOTrainer, XPOTrainer
    from rlopt.alignment.vpo import OnlineVPOTrainer

    reward_fn, temperature = reward
    if args.preference_temperature is None and temperature is not None:
        args.preference_temperature = temperature
    cls = {"online_dpo": OnlineDPOTrainer, "xpo": XPOTrainer, "online_vpo": OnlineVPOTrainer}[algo]
    return cls(model, args, train, tokenizer, reward_fn=reward_fn, ref_model=ref)


def stop_callback(step: int):
    """Stop (after saving a checkpoint) at `step`, as if interrupted: the resume tests' and `--stop-at`'s hook."""
    from transformers import TrainerCallback

    class StopAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= step:
                control.should_save = True
                control.should_training_stop = True

    return StopAt()


# ----------------------------------------------------------------------------- evaluation of a run folder


def evaluate_run(
    run_dir: str | Path,
    checkpoint: str | None = None,
    held_out=None,
    prompts: int | None = None,
    samples_per_prompt: int | None = None,
) -> dict:
    """Evaluate an alignment run folder (or one of its checkpoints) on its task; writes eval.json."""
    import datasets

    from rlopt.alignment.models import load_causal_lm, load_tokenizer

    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} not found (is {run_dir} an alignment run folder?)")
    raw = yaml.safe_load(cfg_path.read_text())
    spec = run_spec(raw)
    if not spec.task:
        raise ConfigError(f"{cfg_path}: no task, so there is no gold reward to evaluate with")
    from rlopt.alignment.tasks import get_task

    task = get_task(spec.task)
    model_dir = run_dir / checkpoint if checkpoint else run_dir
    adapters = (model_dir / "adapter_config.json").is_file()  # a LoRA run's checkpoint-* holds adapters only
    if not (model_dir / "config.json").is_file() and not adapters:
        raise FileNotFoundError(f"{model_dir} holds no model (config.json or adapter_config.json)")
    result: dict[str, Any] = {"algo": spec.algo, "task": spec.task, "model": str(model_dir)}
    if held_out is None and (run_dir / "data" / "held_out").is_dir():
        held_out = datasets.load_from_disk(str(run_dir / "data" / "held_out"))
    ev = spec.evaluation
    n_prompts = prompts or ev.prompts
    k = samples_per_prompt or ev.samples_per_prompt
    if spec.algo == "rm":
        result.update(reward_model_accuracy(model_dir, held_out, task))
    else:
        init = run_dir / "init" if spec.model_name_or_path == "tiny" else spec.model_name_or_path
        ref_path = spec.ref_model_name_or_path or str(init)
        if adapters:
            from peft import AutoPeftModelForCausalLM

            policy = AutoPeftModelForCausalLM.from_pretrained(str(model_dir)).merge_and_unload().eval()
        else:
            policy = load_causal_lm(model_dir).eval()
        ref = load_causal_lm(ref_path).eval()
        tokenizer = load_tokenizer(model_dir)
        from rlopt.alignment.evaluation import evaluate_policy

        proxy = None
        if spec.reward.source == "model" and spec.reward.path:
            proxy = reward_function(spec, task)[0]
        metrics = evaluate_policy(
            policy, ref, tokenizer, task, task.eval_prompts(n_prompts), k, seed=ev.seed, proxy_reward=proxy
        )
        result.update({"reference": str(ref_path), "prompts": n_prompts, **metrics})
    (run_dir / "eval.json").write_text(json.dumps(result, indent=1))
    return result


def reward_model_accuracy(model_dir: Path, held_out, task) -> dict:
    """Held-out pair accuracy of a reward model against the noiseless gold order (ties in gold skipped)."""
    from transformers import AutoModelForSequenceClassification

    from rlopt.alignment.models import load_tokenizer
    from rlopt.alignment.reward_model import score

    if held_out is None or len(held_out) == 0:
        return {"heldout_accuracy": None}
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
    tokenizer = load_tokenizer(model_dir)
    rows = [r for r in held_out if r["gold_chosen"] != r["gold_rejected"]]
    prompts = [r["prompt"] for r in rows]
    s_w = score(model, tokenizer, prompts, [r["chosen"].strip() for r in rows])
    s_l = score(model, tokenizer, prompts, [r["rejected"].strip() for r in rows])
    gold_w_better = [r["gold_chosen"] > r["gold_rejected"] for r in rows]
    correct = [(bool(a > b) == g) for a, b, g in zip(s_w.tolist(), s_l.tolist(), gold_w_better)]
    return {"heldout_accuracy": sum(correct) / max(len(correct), 1), "heldout_pairs": len(rows)}
