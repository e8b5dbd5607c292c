"""The names of a study's cells and of their MLflow runs: one rule, used by the sweep that names its
cells and by a run started on its own (`symattn train`, `symattn finetune`), so that a run has the
same name however it was started."""

from __future__ import annotations

from typing import Any, Optional

from symattn.config import RunConfig, digest


def is_attention_axis(key: str) -> bool:
    """Whether the axis varies the attention block, i.e. the cells of a matched group."""
    return key == "model.attention" or key.startswith("model.attention.")


_NAMED = ("seed", "model.size", "optim.lr")  # always in a cell's name, with the attention label


def cell_name(cfg: RunConfig, axes: dict[str, Any]) -> str:
    """The one name of a cell (and of its MLflow run): size-variant-lr-seed, then every other axis
    of the design as `<last key part><value>` (e.g. `-init_std0.049`), so that the cells of a grid
    keep distinct, readable names."""
    extra = "".join(
        f"-{key.rsplit('.', 1)[-1]}{_short(value)}"
        for key, value in axes.items()
        if key not in _NAMED and not is_attention_axis(key)
    )
    return f"{cfg.model.size}-{cfg.model.attention.label}-lr{cfg.optim.lr:g}-s{cfg.seed}{extra}"


def finetune_cell_name(source: str, step: Optional[int], task: str, seed: int) -> str:
    """The name of a fine-tuning cell (and of its MLflow run), after its pre-training cell's (or
    the source's name and no step, for weights from outside the suite)."""
    return f"{source}{'' if step is None else f'-step{step}'}-{task}-ft{seed}"


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (dict, list)):
        return digest(value, 6)
    return str(value)
