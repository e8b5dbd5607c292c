"""MLM pre-training in Lightning: the LightningModule and the DataModule over deterministic batches
(`symattn.run.pretrain` runs them as one tracked run)."""

from __future__ import annotations

import hashlib
import math
from typing import Optional

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from symattn import keys
from symattn.config import RunConfig
from symattn.model.bert import BertForMaskedLM
from symattn.model.diagnostics import attention_stats, weight_stats
from symattn.tokens import IGNORE_INDEX

NO_DECAY = ("bias", "LayerNorm.weight")  # as BERT: no weight decay on biases and LayerNorm


def step_seed(seed: int, micro_step: int, rank: int = 0) -> int:
    """The seed of dropout at one micro-step: resuming from step s draws what step s drew."""
    digest = hashlib.sha256(f"dropout:{seed}:{micro_step}:{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def lr_lambda(schedule: str, warmup: int, total: int):
    """Linear warm-up from 0, then linear or cosine decay to 0 at `total` (or constant)."""

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return step / warmup
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


class MicroBatches(Dataset):
    """Micro-batches `start`..`stop` in order: item i is micro-step start + i, a pure function of
    (data seed, micro-step). Map-style, so loader workers split the steps instead of repeating them."""

    def __init__(self, batches, start: int, stop: int) -> None:
        self.batches, self.start, self.stop = batches, start, stop

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __getitem__(self, i: int) -> dict:
        batch = self.batches.batch(self.start + i)
        batch["micro_step"] = torch.tensor(self.start + i)
        return batch


def validation_batches(cfg: RunConfig, data) -> list[dict]:
    """The run's fixed validation batches: the first `eval.batches` batches of validation blocks,
    with the masks every run of the data set is measured on."""
    from symattn.data import val_batches

    bs = cfg.optim.batch_size
    return val_batches(data, bs, mlm_probability=cfg.data.mlm_probability, limit=cfg.eval.batches * bs)


class PretrainingDataModule(pl.LightningDataModule):
    def __init__(self, cfg: RunConfig, data) -> None:
        super().__init__()
        self.cfg, self.data = cfg, data

    def train_dataloader(self) -> DataLoader:
        from symattn.data import PretrainingBatches

        t, d = self.trainer, self.cfg.data
        world, rank = (t.world_size, t.global_rank) if t else (1, 0)
        # Each device takes its slice of the same global micro-batch.
        batches = PretrainingBatches(
            self.data,
            self.cfg.optim.batch_size * world,
            d.seed,
            d.mlm_probability,
            rank=rank,
            world_size=world,
        )
        # Lightning restores a checkpoint's step before asking for data: continue where it stopped.
        o = self.cfg.optim
        start = t.global_step * o.accumulate if t else 0
        # As long as a whole run from any start: the run is one epoch, and Lightning restores the
        # epoch's batch index with a checkpoint's step, so a loader of the steps left would end the
        # epoch early and draw the batches from the resume step again. Training stops at max_steps.
        return DataLoader(
            MicroBatches(batches, start, start + o.max_steps * o.accumulate),
            batch_size=None,
            num_workers=self.cfg.speed.loader_workers,
            persistent_workers=self.cfg.speed.loader_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(validation_batches(self.cfg, self.data), batch_size=None)


def _correct_and_masked(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked tokens whose target has the top score (the argmax prediction, ties aside), and masked
    tokens, as device tensors: no sync, a small fraction of a step (a max is ~15x cheaper than an
    argmax on the CPU). The model scores only the masked positions: row i of `logits` is the i-th."""
    selected = (labels != IGNORE_INDEX).flatten()
    masked = selected.sum()
    n = logits.shape[0]
    if n == 0:
        return masked * 0, masked
    # Each row's target: masked positions scatter to their row, the others to a spare slot n.
    row = torch.where(selected, selected.cumsum(0) - 1, n)
    targets = labels.new_zeros(n + 1).scatter_(0, row, labels.flatten())[:n]
    logits = logits.detach()
    return (logits.gather(1, targets[:, None])[:, 0] == logits.amax(-1)).sum(), masked


class MLMPretraining(pl.LightningModule):
    def __init__(self, cfg: RunConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = BertForMaskedLM(cfg.model, seed=cfg.seed)
        self.model_forward = torch.compile(self.model) if cfg.speed.compile else self.model
        self.window_loss = torch.zeros(())  # sum of training losses since the last report
        self.window_steps = 0
        # Masked tokens since the last report, and those predicted right (from the step's logits).
        self.window_correct = torch.zeros((), dtype=torch.long)
        self.window_masked = torch.zeros((), dtype=torch.long)
        self.last_lr = 0.0
        self.last_grad_norm: Optional[float] = None
        self.val_metrics: dict[str, float] = {}
        self._val_sum = self._val_count = self._val_correct = None

    # --- training ---
    def on_train_batch_start(self, batch, batch_idx) -> None:
        torch.manual_seed(step_seed(self.cfg.seed, int(batch["micro_step"]), self.global_rank))

    def training_step(self, batch, batch_idx):
        batch = {k: v for k, v in batch.items() if k != "micro_step"}
        out = self.model_forward(**batch)
        loss = out.loss
        self.window_loss = self.window_loss.to(loss.device) + loss.detach() / self.cfg.optim.accumulate
        # No sync: tensors on the device, read when the window is reported.
        correct, masked = _correct_and_masked(out.logits, batch["labels"])
        self.window_correct = self.window_correct.to(loss.device) + correct
        self.window_masked = self.window_masked.to(loss.device) + masked
        self.log("loss", loss, prog_bar=True, logger=False)
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        self.window_steps += 1
        self.last_lr = optimizer.param_groups[0]["lr"]
        if (self.global_step + 1) % self.cfg.tracking.log_every_n_steps == 0:
            grads = [p.grad for p in self.parameters() if p.grad is not None]
            self.last_grad_norm = float(
                torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
            )

    def pop_train_window(self) -> float:
        mean = float(self.window_loss) / max(1, self.window_steps)
        self.window_loss, self.window_steps = torch.zeros((), device=self.window_loss.device), 0
        return mean

    def pop_train_accuracy(self) -> float:
        """The fraction of the masked tokens since the last call predicted right (NaN if none)."""
        correct, masked = int(self.window_correct), int(self.window_masked)
        self.window_correct = torch.zeros_like(self.window_correct)
        self.window_masked = torch.zeros_like(self.window_masked)
        return correct / masked if masked else float("nan")

    def train_window_finite(self) -> bool:
        return bool(torch.isfinite(self.window_loss))

    # --- validation ---
    def on_validation_epoch_start(self) -> None:
        self._val_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        self._val_count = torch.zeros((), device=self.device, dtype=torch.float64)
        self._val_correct = torch.zeros((), device=self.device, dtype=torch.float64)
        self.val_metrics = {}

    def validation_step(self, batch, batch_idx):
        batch = {k: v for k, v in batch.items() if k != "micro_step"}
        n = (batch["labels"] != IGNORE_INDEX).sum()
        if self.cfg.eval.diagnostics and batch_idx == 0:
            out = self.model(**batch, output_attentions=True)
            self.val_metrics.update(attention_stats(out.attentions, batch["attention_mask"]))
        else:
            out = self.model_forward(**batch)
        # Token-weighted: the mean over every masked token of the fixed validation set.
        self._val_sum += out.loss.double() * n
        self._val_count += n
        self._val_correct += _correct_and_masked(out.logits, batch["labels"])[0]

    @torch.no_grad()
    def diagnostics_now(self) -> dict[str, float]:
        """The diagnostics of an evaluation (on its first batch), without the loss: at step 0 they
        show where each variant starts (initial logit sd, entropy, self-attention mass)."""
        batch = next(iter(self.trainer.datamodule.val_dataloader()))
        batch = {k: v.to(self.device) for k, v in batch.items() if k != "micro_step"}
        was_training = self.model.training
        self.model.eval()
        try:
            out = self.model(**batch, output_attentions=True)
        finally:
            self.model.train(was_training)
        layers = [layer.attention.self for layer in self.model.bert.encoder.layer]
        return {**attention_stats(out.attentions, batch["attention_mask"]), **weight_stats(layers)}

    def on_validation_epoch_end(self) -> None:
        total = self.trainer.strategy.reduce(self._val_sum, reduce_op="sum")
        count = self.trainer.strategy.reduce(self._val_count, reduce_op="sum")
        correct = self.trainer.strategy.reduce(self._val_correct, reduce_op="sum")
        self.val_metrics[keys.VAL_LOSS] = float(total / count.clamp(min=1))
        self.val_metrics[keys.VAL_ACCURACY] = float(correct / count.clamp(min=1))
        if self.cfg.eval.diagnostics:
            self.val_metrics.update(
                weight_stats([layer.attention.self for layer in self.model.bert.encoder.layer])
            )
        # Already reduced over devices above.
        self.log(
            "val_loss", self.val_metrics[keys.VAL_LOSS], prog_bar=True, logger=False, rank_zero_only=True
        )

    # --- optimisation ---
    def configure_optimizers(self):
        o = self.cfg.optim
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            (no_decay if name.endswith(NO_DECAY) else decay).append(p)
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=o.lr,
            betas=o.betas,
            eps=o.eps,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(o.schedule, o.warmup, o.max_steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
