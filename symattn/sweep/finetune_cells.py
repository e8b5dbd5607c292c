"""Fine-tuning cells: one per (pre-training cell, kept step, task, fine-tuning seed) of a spec's
`finetune` block. They are queued with the pre-training cells; a worker runs one once its
pre-training cell is COMPLETE, from that cell's FINISHED run, in the same experiment."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from symattn import keys
from symattn.config import FinetuneConfig, digest
from symattn.naming import finetune_cell_name
from symattn.sweep.progress import RUN_ID
from symattn.sweep.spec import Cell, SweepSpec

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

PRETRAIN_CELL = "pretrain_cell"  # trial attribute: the id of the pre-training cell it starts from
# Settings that do not change a fine-tuning's result, left out of its cell's identity.
_NOT_IDENTITY = ("threads", "eval_batch_size")


@dataclass(frozen=True)
class FinetuneCell:
    id: str
    name: str
    index: int  # position in queue order, after every pre-training cell
    pretrain: Cell
    step: int
    config: FinetuneConfig


def expand_finetune(spec: SweepSpec, cells: list[Cell]) -> list[FinetuneCell]:
    """The fine-tuning cells of every pre-training cell; raises ValueError naming the first step
    that a cell does not keep."""
    if spec.finetune is None:
        return []
    block, out = spec.finetune, []
    base = FinetuneConfig.model_validate(block.config)
    for cell in cells:
        kept = cell.config.checkpoint.kept_steps(cell.config.optim.max_steps)
        if not kept:
            raise ValueError(
                f"finetune: cell {cell.name} keeps no weights; set checkpoint.keep or checkpoint.keep_every in base"
            )
        steps = kept if block.steps == "all" else block.steps
        missing = [s for s in steps if s not in kept]
        if missing:
            raise ValueError(
                f"finetune.steps {missing[0]} is not kept by cell {cell.name} (it keeps {kept}); "
                "add it to checkpoint.keep"
            )
        for step in steps:
            for task in block.tasks:
                for seed in block.seeds:
                    cfg = base.model_copy(update={"task": task, "seed": seed})
                    identity = {
                        k: v for k, v in cfg.model_dump(mode="json").items() if k not in _NOT_IDENTITY
                    }
                    out.append(
                        FinetuneCell(
                            digest({"pretrain": cell.id, "step": step, "finetune": identity}),
                            finetune_cell_name(cell.name, step, task, seed),
                            len(cells) + len(out),
                            cell,
                            step,
                            cfg,
                        )
                    )
    return out


def finetune_attrs(cell: FinetuneCell) -> dict:
    """A new fine-tuning cell's trial attributes."""
    return {
        "cell": cell.id,
        "name": cell.name,
        "group": cell.pretrain.group,
        "index": cell.index,
        "attempt": 1,
        keys.KIND: keys.FINETUNE,
        "experiment": cell.pretrain.config.tracking.experiment,
        PRETRAIN_CELL: cell.pretrain.id,
        keys.CHECKPOINT_STEP: cell.step,
        "config": cell.config.model_dump(mode="json"),
    }


def is_finetune(trial: FrozenTrial) -> bool:
    return trial.user_attrs.get(keys.KIND) == keys.FINETUNE


def finetune_config(trial: FrozenTrial, device: str, cpu_threads: int) -> FinetuneConfig:
    """The cell's fine-tuning config with this slot's threads (which do not change results)."""
    cfg = FinetuneConfig.model_validate(trial.user_attrs["config"])
    return cfg.model_copy(update={"threads": cpu_threads}) if device == "cpu" else cfg


class PretrainStages:
    """Where each pre-training cell of a study stands, from its newest trial: which fine-tuning
    cells may start, and whether any still wait for pre-training that is queued or running."""

    def __init__(self, trials: list[FrozenTrial]) -> None:
        from optuna.trial import TrialState

        newest: dict[str, FrozenTrial] = {}
        for t in trials:
            cell = t.user_attrs.get("cell")
            if cell and not is_finetune(t) and (cell not in newest or t.number > newest[cell].number):
                newest[cell] = t
        self.run_ids = {
            cell: t.user_attrs.get(RUN_ID) for cell, t in newest.items() if t.state == TrialState.COMPLETE
        }
        pending = {cell for cell, t in newest.items() if t.state in (TrialState.WAITING, TrialState.RUNNING)}
        self.awaited = any(
            is_finetune(t) and t.state == TrialState.WAITING and t.user_attrs[PRETRAIN_CELL] in pending
            for t in trials
        )

    def ready(self, trial: FrozenTrial) -> bool:
        """A pre-training cell is always ready; a fine-tuning cell once its pre-training is COMPLETE."""
        return not is_finetune(trial) or trial.user_attrs[PRETRAIN_CELL] in self.run_ids
