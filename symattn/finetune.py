"""Fine-tuning of kept pre-training weights on a downstream task (`symattn finetune`).

Each (pre-training run, step, task, fine-tuning seed) is one MLflow run of kind `finetune`, a child
of its pre-training run in the same experiment, tagged with the pre-training run's variant, size,
seed and group, the step, the task and the fine-tuning seed; it logs the task's metrics on each dev
set under the names the analysis reads (`eval/accuracy`, `eval/accuracy_mm`, ...). Everything a
fine-tuning needs (the run, the kept weights and their checksum, the task's data, the model's shape)
is checked before anything is written.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import yaml
from torch.utils.data import DataLoader

from symattn import keys, quiet  # noqa: F401  quiet: imported for its effect
from symattn.config import FinetuneConfig, RunConfig, apply_overrides, flatten
from symattn.data import DataError, TaskDataset, collate_task_batch, load_prepared, load_task
from symattn.data.cache import sha256_file
from symattn.errors import one_line
from symattn.model import BertForSequenceClassification
from symattn.speed import apply_speed_settings
from symattn.tracking import RunTracker, kept_checkpoints

# Params a pre-training run logs beside its config (`pretrain.run_params`).
_NOT_CONFIG = {
    *keys.PARAM_COUNTS,
    keys.FLOPS_PER_TOKEN,
    keys.DATA_FLOOR,
    keys.UNIGRAM_ENTROPY,
    keys.VAL_FLOOR,
}


@dataclass(frozen=True)
class Source:
    """What a fine-tuning starts from: a pre-training run's kept weights at one step."""

    run: object  # mlflow.entities.Run
    config: RunConfig
    step: int
    weights: Path


def config_from_params(params: dict[str, str]) -> RunConfig:
    """The resolved config a pre-training run logged as flattened params (MLflow keeps them as
    text: a setting whose default is text stays text, e.g. `speed.precision: "32"`)."""
    defaults = flatten(RunConfig().to_dict())
    config: dict = {}
    for key, text in params.items():
        if key in _NOT_CONFIG:
            continue
        value = (
            None if text == "None" else text if isinstance(defaults.get(key), str) else yaml.safe_load(text)
        )
        *blocks, leaf = key.split(".")
        node = config
        for block in blocks:
            node = node.setdefault(block, {})
        node[leaf] = value
    return RunConfig.model_validate(config)


def pretraining_run(client, run_id: str):
    """The pre-training run `run_id`, or a one-line `ValueError`."""
    try:
        run = client.get_run(run_id)
    except Exception:
        raise ValueError(
            f"no MLflow run {run_id!r} in {client.tracking_uri}; check the run id (symattn status, or the MLflow UI)"
        ) from None
    if run.data.tags.get(keys.KIND, keys.PRETRAIN) != keys.PRETRAIN:
        raise ValueError(f"run {run_id} is a {run.data.tags[keys.KIND]} run; give a pre-training run")
    return run


def source(client, run_id: str, step: int) -> Source:
    """The pre-training run `run_id` at kept step `step`, checked: a one-line `ValueError` names
    what is wrong and how to fix it."""
    run = pretraining_run(client, run_id)
    kept = kept_checkpoints(run)
    if step not in kept:
        have = ", ".join(f"{s:,}" for s in sorted(kept)) or "none (set checkpoint.keep when pre-training)"
        raise ValueError(f"run {run_id} kept no weights at step {step:,}; kept steps: {have}")
    path = Path(kept[step]["path"])
    if not path.is_file():
        raise ValueError(
            f"the weights of run {run_id} at step {step:,} are missing ({path}); they were moved or deleted"
        )
    if sha256_file(path) != kept[step]["sha256"]:
        raise ValueError(
            f"the weights of run {run_id} at step {step:,} ({path}) do not match their recorded sha256"
        )
    return Source(run, config_from_params(run.data.params), step, path)


class FinetuneModule(pl.LightningModule):
    """A sequence classifier (regression for STS-B) on the pre-trained encoder: AdamW without decay
    on biases and LayerNorm, a linear warm-up then a linear decay to 0 over `total_steps`."""

    def __init__(self, model: BertForSequenceClassification, cfg: FinetuneConfig, total_steps: int) -> None:
        super().__init__()
        self.model, self.cfg, self.total_steps = model, cfg, total_steps
        self.losses: list[float] = []

    def training_step(self, batch, batch_idx):
        loss = self.model(**batch).loss
        self.losses.append(float(loss.detach()))
        return loss

    def configure_optimizers(self):
        no_decay = ("bias", "LayerNorm.weight")
        named = list(self.model.named_parameters())
        groups = [
            {
                "params": [p for n, p in named if not n.endswith(no_decay)],
                "weight_decay": self.cfg.weight_decay,
            },
            {"params": [p for n, p in named if n.endswith(no_decay)], "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(groups, lr=self.cfg.lr, eps=self.cfg.eps)
        warmup = math.ceil(self.cfg.warmup_ratio * self.total_steps)  # as HF's get_warmup_steps

        def factor(step: int) -> float:
            if step < warmup:
                return step / max(1, warmup)
            return max(0.0, (self.total_steps - step) / max(1, self.total_steps - warmup))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return [optimizer], [{"scheduler": scheduler, "interval": "step"}]

    @torch.no_grad()
    def predict_split(self, dataset: TaskDataset) -> np.ndarray:
        self.model.eval()
        loader = DataLoader(dataset, batch_size=self.cfg.eval_batch_size, collate_fn=collate_task_batch)
        out = [self.model(**{k: v for k, v in b.items() if k != "labels"}).logits for b in loader]
        return torch.cat(out).float().numpy()


class _ReportLoss(pl.Callback):
    def __init__(self, tracker: RunTracker, every: int = 10) -> None:
        self.tracker, self.every = tracker, every

    def on_train_batch_end(self, trainer, pl_module: FinetuneModule, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.every == 0 or step == pl_module.total_steps:
            window = pl_module.losses
            loss = sum(window) / max(1, len(window))
            if not math.isfinite(loss):
                raise ValueError(f"fine-tuning loss became {loss} by step {step}; lower lr")
            self.tracker.log(step, {keys.TRAIN_LOSS: loss})
            window.clear()


def eval_metrics(split: str, metrics: dict[str, float]) -> dict[str, float]:
    """A dev set's metrics under the names the analysis reads: `eval/accuracy`; MNLI's mismatched
    set `eval/accuracy_mm`."""
    suffix = keys.MISMATCHED_SUFFIX if split == "dev_mismatched" else ""
    return {f"{keys.EVAL_PREFIX}{name}{suffix}": value for name, value in metrics.items()}


def prepare(client, run_id: str, steps: list[int], tasks: list[str], cfg: FinetuneConfig):
    """Everything the fine-tunings need, checked once and before anything is written: the sources
    (weights verified against their sha256), each task's data, and the pre-training tokenizer."""
    sources = [source(client, run_id, step) for step in steps]
    first = sources[0].config
    if cfg.max_length > first.model.max_positions:
        raise ValueError(
            f"max_length {cfg.max_length} exceeds the model's {first.model.max_positions} positions; "
            f"set max_length={first.model.max_positions}"
        )
    try:
        data = {
            task: load_task(task, glue_dir=cfg.glue_dir, cache_dir=first.data.cache_dir) for task in tasks
        }
        tokenizer = load_prepared(
            sources[0].run.data.tags[keys.DATA_FINGERPRINT], first.data.cache_dir
        ).tokenizer
    except DataError as exc:
        raise ValueError(one_line(exc)) from None
    # Every kept file of the run passed its checksum, so one that fits the model stands for all.
    _model(sources[0], 1, cfg.seed)
    return sources, data, tokenizer


def _model(src: Source, num_labels: int, seed: int) -> BertForSequenceClassification:
    model = BertForSequenceClassification(src.config.model, num_labels, seed=seed)
    try:
        model.load_encoder(torch.load(src.weights, map_location="cpu", weights_only=True))
    except RuntimeError as exc:  # shapes of another model size
        raise ValueError(
            f"the weights at {src.weights} do not fit run {src.run.info.run_id}'s model "
            f"({src.config.model.size}): {one_line(exc)[:200]}"
        ) from None
    return model


def finetune_one(client, src: Source, task, tokenizer, cfg: FinetuneConfig) -> dict:
    """One fine-tuning run: train, evaluate the final model on every dev set, record it all."""
    apply_speed_settings(threads=cfg.threads)
    pl.seed_everything(cfg.seed, verbose=False)
    train = TaskDataset(task.train, tokenizer, cfg.max_length)
    per_epoch = math.ceil(len(train) / cfg.batch_size)
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * per_epoch))
    model = _model(src, task.info.num_labels, cfg.seed)
    module = FinetuneModule(model, cfg, total)
    pre = src.run.data.tags
    tags = {
        keys.KIND: keys.FINETUNE,
        keys.PARENT_RUN_ID: src.run.info.run_id,
        keys.PRETRAIN_RUN_ID: src.run.info.run_id,
        keys.CHECKPOINT_STEP: src.step,
        keys.TASK: cfg.task,
        keys.FINETUNE_SEED: cfg.seed,
        **{
            key: pre[key]
            for key in (
                keys.VARIANT,
                keys.ATTENTION,
                keys.SCHEME,
                keys.INIT,
                keys.SIZE,
                keys.SEED,
                keys.GROUP,
                keys.STUDY,
                keys.DATA_FINGERPRINT,
            )
            if key in pre
        },
    }
    params = {f"finetune.{k}": v for k, v in flatten(cfg.model_dump(mode="json")).items()}
    params["finetune.total_steps"] = total
    name = f"{src.run.info.run_name or src.run.info.run_id[:8]}-{cfg.task}-step{src.step}-ft{cfg.seed}"
    tracker = RunTracker.create(client, src.run.info.experiment_id, name, tags, params)
    tracker.set_status("RUNNING")
    try:
        generator = torch.Generator().manual_seed(cfg.seed)
        loader = DataLoader(
            train, batch_size=cfg.batch_size, shuffle=True, generator=generator, collate_fn=collate_task_batch
        )
        trainer = pl.Trainer(
            max_steps=total,
            accelerator="cpu" if cfg.threads else "auto",
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            gradient_clip_val=1.0,
            callbacks=[_ReportLoss(tracker)],
        )
        started = time.perf_counter()
        trainer.fit(module, train_dataloaders=loader)
        metrics = {keys.TRAIN_SECONDS: time.perf_counter() - started}
        for split, data in task.dev.items():
            dataset = TaskDataset(data, tokenizer, cfg.max_length)
            metrics.update(eval_metrics(split, task.metrics(module.predict_split(dataset), data.labels)))
        tracker.log(total, metrics)
        tracker.flush()
        tracker.set_status("FINISHED")
    except BaseException as exc:
        tracker.flush()
        tracker.set_tags({keys.FAILURE_REASON: f"{type(exc).__name__}: {one_line(exc)}"[:5000]})
        tracker.set_status("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    return {"run_id": tracker.run_id, "step": src.step, "task": cfg.task, "seed": cfg.seed, **metrics}


def finetune(
    client, run_id: str, steps, tasks: list[str], seeds: list[int], cfg: FinetuneConfig
) -> list[dict]:
    """Fine-tune run `run_id` at `steps` ("all": its whole kept series) on every task and seed.
    Every combination is checked before the first run is created."""
    if steps == "all":
        steps = sorted(kept_checkpoints(pretraining_run(client, run_id)))
        if not steps:
            raise ValueError(f"run {run_id} kept no weights; set checkpoint.keep when pre-training")
    sources, data, tokenizer = prepare(client, run_id, list(steps), tasks, cfg)
    results = []
    for task in tasks:
        for src in sources:
            for seed in seeds:
                run_cfg = cfg.model_copy(update={"task": task, "seed": seed})
                results.append(finetune_one(client, src, data[task], tokenizer, run_cfg))
    return results


def load_finetune_config(overrides: list[str]) -> FinetuneConfig:
    """A fine-tuning config from dotted `key=value` overrides of the paper's recipe."""
    return FinetuneConfig.model_validate(apply_overrides({}, list(overrides)))
