"""A sweep spec's design expanded into its cells: the product of its axes, each cell a validated run
config with its id (the config's hash) and name, a matched group's cells adjacent."""

from __future__ import annotations

import copy
import itertools
import json
from typing import Any

from symattn import keys
from symattn.config import RunConfig, apply_overrides
from symattn.naming import cell_name, is_attention_axis
from symattn.sweep.spec import Cell, SweepSpec, check_axis_key


def _attention_last(axes: dict[str, list[Any]]) -> list[str]:
    """Axis order for the product: the attention axis varies fastest, so a group's cells are adjacent."""
    keys = list(axes)
    attention = [k for k in keys if is_attention_axis(k)]
    return [k for k in keys if k not in attention] + attention


def expand(spec: SweepSpec) -> list[Cell]:
    """Every cell of the design, validated; raises ValueError naming the first bad one. A spec with
    `tuned_from` reads its search study's best values here (its Optuna store must hold it, finished)."""
    for key in spec.axes:
        check_axis_key(key)
    tuned = None
    if spec.tuned_from is not None:
        from symattn.sweep.search import tuned_values

        tuned = tuned_values(spec.tuned_from, spec.stores.optuna)
    order = _attention_last(spec.axes)
    cells, seen = [], {}
    for i, values in enumerate(itertools.product(*(spec.axes[k] for k in order))):
        d = copy.deepcopy(spec.base)
        overrides = []
        for key, value in zip(order, values):
            overrides.append(f"{key}={json.dumps(value)}")
        apply_overrides(d, overrides)
        tracking = d.setdefault("tracking", {})
        tracking["experiment"] = spec.name
        if spec.stores.mlflow:
            tracking["uri"] = spec.stores.mlflow
        try:
            cfg = RunConfig.model_validate(d)
            if tuned is not None:
                # The matched group is the design's, before each variant takes its own tuned rate.
                tracking["tags"] = {**tracking.get("tags", {}), keys.GROUP: cfg.group_id()}
                cfg = RunConfig.model_validate(apply_overrides(d, [tuned.override(cfg)]))
        except ValueError as exc:
            from symattn.errors import one_line

            raise ValueError(f"cell {dict(zip(order, values))}: {one_line(exc)}") from None
        cell_id = cfg.config_hash()
        if cell_id in seen:
            raise ValueError(
                f"cells {seen[cell_id]} and {dict(zip(order, values))} are the same run; remove the duplicate"
            )
        seen[cell_id] = dict(zip(order, values))
        axes = dict(zip(order, values))
        cells.append(Cell(cell_id, cell_name(cfg, axes), cfg, i, {k: axes[k] for k in spec.axes}))
    if spec.analysis is not None:
        spec.analysis.check_cells(cells)
    return cells
