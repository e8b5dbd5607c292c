"""One typed config for a run: loaded from YAML, overridden with dotted `--set key=value`, validated
completely before anything is created or logged.

Blocks that change results: `seed`, `model`, `data`, `optim`, `eval`. Blocks that never change results
beyond float noise: `speed` (precision, threads, compile, loader workers, progress bar). Blocks that
say where things go: `tracking`, `checkpoint`. A matched group is every run whose result-changing
blocks agree except `model.attention`.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from symattn.data.config import BERT_UNCASED, BERT_UNCASED_VOCAB_SIZE, WORDPIECE, DataConfig
from symattn.model.config import ModelConfig


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OptimConfig(_Block):
    lr: float = Field(1e-3, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-6, gt=0)
    weight_decay: float = Field(0.01, ge=0)  # not applied to biases and LayerNorm, as BERT
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    warmup_steps: Optional[int] = Field(None, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, le=1)  # used when warmup_steps is not set
    max_steps: int = Field(1000, gt=0)
    batch_size: int = Field(32, gt=0)  # sequences per micro-batch
    accumulate: int = Field(1, gt=0)  # micro-batches per optimizer step
    grad_clip: Optional[float] = Field(1.0, gt=0)

    @property
    def warmup(self) -> int:
        return (
            self.warmup_steps if self.warmup_steps is not None else round(self.warmup_ratio * self.max_steps)
        )

    def check_extensible(self, what: str) -> None:
        """Refuse (ValueError) a budget whose steps would change if it were extended: a budget can
        grow only where no step's rate depends on it."""
        if self.schedule != "constant":
            raise ValueError(
                f"optim.schedule {self.schedule} decays over optim.max_steps, so a longer budget changes "
                f"every step's rate: {what} cannot be extended; start a new one"
            )
        if self.warmup_steps is None:
            raise ValueError(
                "optim.warmup_steps is not set, so the warm-up follows optim.max_steps (warmup_ratio): "
                f"{what} cannot be extended; set optim.warmup_steps in a new one"
            )

    @model_validator(mode="after")
    def _check(self) -> "OptimConfig":
        if self.warmup > self.max_steps:
            raise ValueError(f"warmup_steps {self.warmup} exceeds max_steps {self.max_steps}; lower it")
        return self


_FLOOR_LEVEL = re.compile(r"^\s*L\*\s*(?:([+-])\s*(\d+(?:\.\d*)?|\.\d+))?\s*$")


class StopBelow(_Block):
    """End a run once its validation loss has stayed below `level` for `evaluations` evaluations in
    a row (FINISHED, tag `stopped_early_at`), so that a cell that has escaped frees its core.
    `level` is a loss, or relative to the context-free floor of the run's validation targets (the
    level its escape is measured from, `data.val_context_free_loss`): "L* - 0.75"."""

    level: Union[float, str]
    evaluations: int = Field(3, gt=0)

    @field_validator("level")
    @classmethod
    def _level(cls, v):
        if isinstance(v, str) and not _FLOOR_LEVEL.match(v):
            raise ValueError(
                f"stop_below level {v!r} is neither a loss nor 'L* - <margin>' (e.g. 'L* - 0.75')"
            )
        return v

    def resolve(self, floor: float) -> float:
        """The loss level, given the data's floor L*."""
        if not isinstance(self.level, str):
            return float(self.level)
        sign, number = _FLOOR_LEVEL.match(self.level).groups()
        return floor + (0.0 if number is None else float(number) * (-1 if sign == "-" else 1))


class EvalConfig(_Block):
    every_n_steps: int = Field(100, gt=0)
    batches: int = Field(8, gt=0)  # validation batches of optim.batch_size, with fixed masks
    diagnostics: bool = True  # attention entropy, self-attention mass, coefficient spectra
    stop_below: Optional[StopBelow] = None  # early stop once escaped (off by default)


class SpeedConfig(_Block):
    """Settings that change speed, never results beyond float noise (bf16/fp16 within mixed-precision noise)."""

    precision: Literal["32", "bf16-mixed", "16-mixed", "bf16-true"] = "32"
    accelerator: str = "auto"  # cpu, gpu, auto
    devices: Any = 1  # passed to Lightning: 1, [0, 1], "auto"
    strategy: str = "auto"  # e.g. ddp for several GPUs (one MLflow run, logged from rank 0)
    threads: Optional[int] = Field(None, gt=0)  # CPU intra-op threads; None keeps torch's default
    flush_denormal: bool = True  # denormal floats make CPU steps several times slower
    compile: bool = False  # torch.compile the model
    loader_workers: int = Field(0, ge=0)  # batches are cheap slices of a memory-mapped array
    progress_bar: bool = True


class TrackingConfig(_Block):
    uri: Optional[str] = None  # default: $MLFLOW_TRACKING_URI, else sqlite:///<project>/mlflow.db
    experiment: str = "symattn"
    run_name: Optional[str] = None
    tags: dict[str, str] = Field(default_factory=dict)  # extra tags, e.g. study and cell of a sweep
    log_every_n_steps: int = Field(10, gt=0)
    system_metrics: bool = True  # MLflow's `system/*` (CPU, memory, GPU) beside the run's own metrics


class CheckpointConfig(_Block):
    dir: Optional[str] = None  # default: <project>/checkpoints
    every_n_steps: Optional[int] = Field(None, gt=0)  # default: eval.every_n_steps
    log_model: bool = True  # log the final weights (HF BERT names) as an MLflow artifact
    # Log every resumable checkpoint and kept weights file as artifacts of the run too, so that other
    # machines resume it and fine-tune its weights through the store; auto: where the store is an
    # MLflow server (run/stored_checkpoints.py).
    upload: Union[bool, Literal["auto"]] = "auto"
    # Weights kept at these steps (and every `keep_every`), beside the resumable checkpoint, for
    # fine-tuning over checkpoints. Step 0 keeps the initial weights.
    keep: list[int] = Field(default_factory=list)
    keep_every: Optional[int] = Field(None, gt=0)

    @field_validator("keep")
    @classmethod
    def _keep(cls, steps: list[int]) -> list[int]:
        if any(step < 0 for step in steps):
            raise ValueError(f"checkpoint.keep {steps} has a negative step; give optimizer steps >= 0")
        return sorted(set(steps))

    def keeps(self, step: int) -> bool:
        """Whether the weights at optimizer step `step` are kept."""
        return step in self.keep or (self.keep_every is not None and step > 0 and step % self.keep_every == 0)

    def kept_steps(self, max_steps: int) -> list[int]:
        """The series a run of `max_steps` keeps (fewer if it stops early)."""
        every = range(self.keep_every, max_steps + 1, self.keep_every) if self.keep_every else []
        return sorted({s for s in self.keep if s <= max_steps} | set(every))


class RunConfig(_Block):
    seed: int = 0
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    speed: SpeedConfig = Field(default_factory=SpeedConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)

    @model_validator(mode="before")
    @classmethod
    def _data_seed_follows_seed(cls, values: Any) -> Any:
        """`data.seed` (data order and masks) defaults to `seed`: a run of another seed is another
        draw of everything random, unless the config sets `data.seed` itself."""
        if not isinstance(values, dict) or "seed" not in values:
            return values
        data = values.get("data")
        if data is None or isinstance(data, dict) and "seed" not in data:
            return {**values, "data": {**(data or {}), "seed": values["seed"]}}
        if isinstance(data, DataConfig) and "seed" not in data.model_fields_set:
            return {**values, "data": data.model_copy(update={"seed": values["seed"]})}
        return values

    @model_validator(mode="after")
    def _check(self) -> "RunConfig":
        if self.data.seq_len > self.model.max_positions:
            raise ValueError(
                f"data.seq_len {self.data.seq_len} exceeds model.max_positions {self.model.max_positions}; "
                "lower data.seq_len or raise model.max_positions"
            )
        if "vocab_size" in self.model.model_fields_set:
            self._check_model_vocab()
        beyond = [step for step in self.checkpoint.keep if step > self.optim.max_steps]
        if beyond:
            raise ValueError(
                f"checkpoint.keep step {beyond[0]} is beyond optim.max_steps {self.optim.max_steps}, so it "
                f"would never be kept; remove it from checkpoint.keep or raise optim.max_steps to {beyond[-1]}"
            )
        return self

    def _check_model_vocab(self) -> None:
        """A model vocabulary given explicitly must be the tokenizer's (it follows the tokenizer
        otherwise): refused here where the tokenizer's size is known without building, BERT's, or at
        most `data.vocab_size` for a trained WordPiece (a tokenizer file's: `data.checks`)."""
        given, data = self.model.vocab_size, self.data
        if data.tokenizer == BERT_UNCASED and given != BERT_UNCASED_VOCAB_SIZE:
            raise ValueError(
                f"model.vocab_size {given} does not match the {BERT_UNCASED_VOCAB_SIZE} tokens of the "
                f"tokenizer {BERT_UNCASED}; remove model.vocab_size (it follows the tokenizer)"
            )
        if data.tokenizer == WORDPIECE and given > data.resolved_vocab_size:
            raise ValueError(
                f"model.vocab_size {given} exceeds data.vocab_size {data.resolved_vocab_size}, the most "
                "tokens the trained WordPiece vocabulary holds; remove model.vocab_size (it follows the "
                "tokenizer) or raise data.vocab_size"
            )

    @property
    def checkpoint_every(self) -> int:
        return self.checkpoint.every_n_steps or self.eval.every_n_steps

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def config_hash(self) -> str:
        """Identifies everything that changes results: two runs with the same hash are the same run."""
        return digest(self._identity())

    def group_id(self) -> str:
        """The matched group: everything that changes results except the attention block."""
        d = self._identity()
        d["model"].pop("attention")
        return digest(d)

    def _identity(self) -> dict:
        """What a run's hash covers: the settings that change results. The attention variant and
        a data source's type are hashed under their earlier name `kind`, so that every recorded
        run keeps its hash (and resumes) across the rename; so do the attention controls, hashed only
        where set."""
        d = self.to_dict()
        for block in ("speed", "tracking", "checkpoint"):
            d.pop(block)
        d["model"]["attention"] = self.model.attention.identity()
        d["data"]["source"] = [{"kind": s.pop("type"), **s} for s in d["data"]["source"]]
        return d


class FinetuneConfig(_Block):
    """Fine-tuning of a kept pre-training checkpoint on one task. The defaults are the paper's
    recipe (one for every GLUE task, the final model evaluated); the optimiser settings it does not
    give are those of the HF `run_glue` script it used."""

    task: str = "sst2"  # symattn.data.task_registry.TASKS: the GLUE tasks and the offline suite
    seed: int = Field(1, ge=0)  # the fine-tuning seed (classifier init, dropout, data order)
    epochs: float = Field(5.0, gt=0)  # paper
    max_steps: Optional[int] = Field(None, gt=0)  # instead of epochs: short runs
    lr: float = Field(1e-5, gt=0)  # paper
    warmup_ratio: float = Field(0.1, ge=0, le=1)  # paper; linear decay to 0 after it, as run_glue
    batch_size: int = Field(16, gt=0)  # paper
    max_length: int = Field(128, ge=8)  # paper
    weight_decay: float = Field(0.0, ge=0)  # run_glue's default
    eps: float = Field(1e-8, gt=0)  # run_glue's default (torch AdamW's)
    eval_batch_size: int = Field(64, gt=0)
    glue_dir: Optional[str] = None  # a GLUE folder (TSV layout); default $SYMATTN_GLUE_DIR, else HF datasets
    threads: Optional[int] = Field(None, gt=0)  # CPU intra-op threads


def digest(d: Any, length: int = 12) -> str:
    """A short stable hash of JSON-able data: run, group, cell and spec identities."""
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:length]


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}"""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


SHAPE = ("layers", "hidden", "heads", "intermediate")


def current_params(params: dict[str, str]) -> dict[str, str]:
    """A run's params as this version logs them (`symattn.run.record.run_params`): runs of earlier
    versions logged a size preset's shape as `None` and `data.source` as a Python repr, which would
    read as a different setting beside newer runs of the same design."""
    out = dict(params)
    shape = {k: params.get(f"model.{k}") for k in SHAPE}
    if params.get("model.size") and "None" in shape.values():
        try:
            given = {k: int(v) for k, v in shape.items() if v not in (None, "None")}
            model = ModelConfig(size=params["model.size"], **given)
            out.update({f"model.{k}": str(getattr(model, f"n_{k}")) for k in SHAPE})
        except (ValueError, TypeError):
            pass  # not a shape this version can read: left as logged
    source = params.get("data.source")
    if source and source.startswith("[{'"):
        from symattn.data.sources import source_param

        try:
            out["data.source"] = source_param(DataConfig(source=yaml.safe_load(source)).source)
        except (ValueError, yaml.YAMLError):
            pass
    return out


def apply_overrides(d: dict, overrides: list[str]) -> dict:
    """Apply `key.sub=value` strings (values parsed as YAML) to a nested dict, in order."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"override {item!r} is not of the form key=value (e.g. optim.lr=3e-4)")
        node = d
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"override {item!r}: {part!r} is a value, not a block")
            node = child
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    return d


def read_yaml_mapping(path: str | Path, what: str) -> dict:
    """A YAML file that holds a mapping; `what` names it in errors ("config file", "sweep spec")."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} {str(p)!r} not found; check the path")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{what} {str(p)!r} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{what} {str(p)!r} must hold a mapping of settings")
    return data


def load_config(path: Optional[str | Path] = None, overrides: Optional[list[str]] = None) -> RunConfig:
    """Read YAML (optional), apply dotted overrides, validate. Errors are `ValueError`s."""
    data = read_yaml_mapping(path, "config file") if path is not None else {}
    return RunConfig.model_validate(apply_overrides(data, list(overrides or [])))
