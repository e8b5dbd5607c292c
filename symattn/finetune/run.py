"""Fine-tuning of pre-trained weights on a downstream task (`symattn finetune`).

Each (source, task, fine-tuning seed) is one MLflow run of kind `finetune`. A source is a
pre-training run's kept step, or a Hugging Face folder (`finetune_source`). A kept step's runs are
children of its pre-training run, in the same experiment, tagged with its variant, size, seed and
group, the step, the task and the fine-tuning seed; they log the task's metrics on each dev set
under the names the analysis reads (`eval/accuracy`, `eval/accuracy_mm`, ...). Everything a
fine-tuning needs (the weights and their checksum, the task's data, the model's shape) is checked
before anything is written.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from symattn import keys, quiet  # noqa: F401  quiet: imported for its effect
from symattn.config import FinetuneConfig, apply_overrides, flatten
from symattn.data import DataError, TaskDataset, collate_task_batch, load_task
from symattn.errors import one_line
from symattn.finetune.source import Source
from symattn.model.bert import BertForSequenceClassification
from symattn.naming import finetune_cell_name
from symattn.run.speed import apply_speed_settings
from symattn.tracking.store import RunTracker, experiment_id, source_tags

DEFAULT_EXPERIMENT = "finetune"  # the runs of weights that come without a pre-training run


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


def prepare(sources: list[Source], tasks: list[str], cfg: FinetuneConfig):
    """Everything the fine-tunings need, checked once and before anything is written: each task's
    data, the tokenizer, and that the weights fit the model (every kept file of a run passed its
    checksum, so one that fits stands for all)."""
    first = sources[0]
    if cfg.max_length > first.model.max_positions:
        raise ValueError(
            f"max_length {cfg.max_length} exceeds the model's {first.model.max_positions} positions; "
            f"set max_length={first.model.max_positions}"
        )
    try:
        data = {task: load_task(task, glue_dir=cfg.glue_dir, cache_dir=first.cache_dir) for task in tasks}
        tokenizer = first.load_tokenizer()
    except DataError as exc:
        raise ValueError(one_line(exc)) from None
    _model(first, 1, cfg.seed)
    return data, tokenizer


def _weights(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    # Older transformers saved the position ids buffer with the weights.
    return {k: v for k, v in state.items() if not k.endswith("embeddings.position_ids")}


def _model(src: Source, num_labels: int, seed: int) -> BertForSequenceClassification:
    model = BertForSequenceClassification(src.model, num_labels, seed=seed)
    try:
        model.load_encoder(_weights(src.weights))
    except (RuntimeError, ValueError) as exc:  # shapes or names of another model
        raise ValueError(
            f"the weights at {src.weights} do not fit the model of {src.label} ({src.model.size}): "
            f"{one_line(exc)[:200]}"
        ) from None
    return model


def finetune_one(
    client,
    src: Source,
    task,
    tokenizer,
    cfg: FinetuneConfig,
    tags: dict | None = None,
    name: str | None = None,
    experiment: str | None = None,
) -> dict:
    """One fine-tuning run: train, evaluate the final model on every dev set, record it all.
    `tags`: more tags (a sweep cell's); `name`: the run's name (default: after its source);
    `experiment`: the experiment id of a source without a pre-training run."""
    apply_speed_settings(threads=cfg.threads)
    pl.seed_everything(cfg.seed, verbose=False)
    train = TaskDataset.cached(task.train, tokenizer, cfg.max_length, src.cache_dir)
    per_epoch = math.ceil(len(train) / cfg.batch_size)
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * per_epoch))
    model = _model(src, task.info.num_labels, cfg.seed)
    module = FinetuneModule(model, cfg, total)
    cell = keys.STUDY in (tags or {})  # a sweep's fine-tuning cell: a run of the worker
    tags = {
        keys.KIND: keys.FINETUNE,
        **src.tags,
        keys.TASK: cfg.task,
        keys.FINETUNE_SEED: cfg.seed,
        **source_tags(keys.WORK_COMMAND if cell else keys.FINETUNE_COMMAND),
        **(tags or {}),
    }
    params = {f"finetune.{k}": v for k, v in flatten(cfg.model_dump(mode="json")).items()}
    params["finetune.total_steps"] = total
    # Rows a task file held that could not be read (their lines are in the load's warning).
    splits = {"train": task.train, **task.dev}
    params.update({f"data.skipped_rows.{n}": s.skipped for n, s in splits.items() if s.skipped})
    name = name or finetune_cell_name(src.label, src.step, cfg.task, cfg.seed)
    tracker = RunTracker.create(client, src.experiment_id or experiment, name, tags, params)
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
            dataset = TaskDataset.cached(data, tokenizer, cfg.max_length, src.cache_dir)
            metrics.update(eval_metrics(split, task.metrics(module.predict_split(dataset), data.labels)))
        tracker.log(total, metrics)
        tracker.flush()
        tracker.set_status("FINISHED")
    except BaseException as exc:
        tracker.flush()
        tracker.set_tags({keys.FAILURE_REASON: f"{type(exc).__name__}: {one_line(exc)}"[:5000]})
        # Ctrl-C, and SIGTERM (Lightning exits on it), stop a run; anything else fails it.
        tracker.set_status("KILLED" if isinstance(exc, (KeyboardInterrupt, SystemExit)) else "FAILED")
        raise
    return {"run_id": tracker.run_id, "step": src.step, "task": cfg.task, "seed": cfg.seed, **metrics}


def finetune(
    client,
    sources: list[Source],
    tasks: list[str],
    seeds: list[int],
    cfg: FinetuneConfig,
    tags: dict | None = None,
    name: str | None = None,
    experiment: str | None = None,
    prepared: tuple | None = None,
) -> list[dict]:
    """Fine-tune every source (`finetune_source`) on every task and seed. Every combination is
    checked before the first run is created. `tags`, `name`: as `finetune_one` takes them (a sweep's
    cell fine-tunes one combination). `experiment`: where the runs of a source without a
    pre-training run go (an HF folder's). `prepared`: what `prepare(sources, tasks, cfg)` returned,
    for a caller that checks the tasks before it opens the store (an HF folder needs no store to
    find its weights)."""
    data, tokenizer = prepared if prepared is not None else prepare(sources, tasks, cfg)
    exp_id = None
    if any(src.experiment_id is None for src in sources):
        exp_id = experiment_id(client, experiment or DEFAULT_EXPERIMENT)
    results = []
    for task in tasks:
        for src in sources:
            for seed in seeds:
                run_cfg = cfg.model_copy(update={"task": task, "seed": seed})
                results.append(finetune_one(client, src, data[task], tokenizer, run_cfg, tags, name, exp_id))
    return results


def load_finetune_config(overrides: list[str]) -> FinetuneConfig:
    """A fine-tuning config from dotted `key=value` overrides of the paper's recipe."""
    return FinetuneConfig.model_validate(apply_overrides({}, list(overrides)))
