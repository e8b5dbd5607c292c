"""`symattn queue --dry-run`: check a spec on the CPU without stores: on random tokens, or on the
token store of a local slice of its corpus (`--data-slice`)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Optional

from symattn.sweep.spec import Cell


def dry_run(
    cells: list[Cell],
    steps: int = 2,
    batch_size: int = 2,
    say: Callable[[str], None] = print,
    data_slice: Optional[Path] = None,
) -> Iterator[dict]:
    """Every cell (validated when the spec was expanded) builds its model and runs `steps`
    optimizer steps at a tiny batch: on random tokens, or, with `data_slice`, on the cell's own
    batches (its data seed's order and masks) from the token store of that slice of its corpus,
    built as the full corpus would be (`slice_data`). One row per cell, as each is done. Then `say`
    gets a line per data setting and budget of the cells: its tokens and how many epochs of the
    corpus they are, a warning beyond `symattn.data.budget.EPOCHS_WARNING` (`budget_lines`).
    Nothing is written, fetched or built, but the slice's entry in the data cache."""
    import torch

    from symattn.model.bert import BertForMaskedLM, count_parameters

    for cell in cells:
        cfg = cell.config
        model_cfg = cfg.model
        batches = None
        if data_slice is not None:
            batches = slice_batches(cfg.data, data_slice, batch_size)
            model_cfg = model_cfg.model_copy(update={"vocab_size": batches.vocab_size})
        elif "vocab_size" not in model_cfg.model_fields_set and cfg.data.resolved_vocab_size:
            model_cfg = model_cfg.model_copy(update={"vocab_size": cfg.data.resolved_vocab_size})
        model = BertForMaskedLM(model_cfg, seed=cfg.seed)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, eps=cfg.optim.eps)
        g = torch.Generator().manual_seed(0)
        losses = []
        for step in range(steps):
            batch = (
                batches.batch(step) if batches is not None else _random_batch(cfg, model_cfg, batch_size, g)
            )
            loss = model(batch["input_ids"], labels=batch["labels"]).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(loss.detach().item())
        yield {"cell": cell.name, "group": cell.group, **count_parameters(model), "loss": losses[-1]}
    for line in budget_lines(cells):
        say(line)


def _random_batch(cfg, model_cfg, batch_size: int, g) -> dict:
    import torch

    from symattn.tokens import IGNORE_INDEX, NUM_SPECIAL_TOKENS

    ids = torch.randint(NUM_SPECIAL_TOKENS, model_cfg.vocab_size, (batch_size, cfg.data.seq_len), generator=g)
    labels = torch.where(torch.rand(ids.shape, generator=g) < cfg.data.mlm_probability, ids, IGNORE_INDEX)
    labels[:, 1] = ids[:, 1]  # at least one target per row
    return {"input_ids": ids, "labels": labels}


def slice_data(data, folder: Path):
    """A cell's data settings with its corpus replaced by the Parquet files of `folder` (a local
    slice in the format of the real source, for example a few of FineWeb-Edu's files), read with
    the source's text column."""
    from symattn.data.config import HFSource

    text_field = next((s.text_field for s in data.source if isinstance(s, HFSource)), "text")
    source = HFSource(name="parquet", data_files=str(Path(folder) / "*.parquet"), text_field=text_field)
    return data.model_copy(update={"source": [source]})


def slice_batches(data, folder: Path, batch_size: int):
    """The training batches of a cell's data seed from the streaming store of the slice."""
    from symattn.data import PretrainingBatches, prepare_pretraining

    cfg = slice_data(data, folder)
    return PretrainingBatches.from_config(prepare_pretraining(cfg), cfg, batch_size)


def budget_lines(cells: list[Cell]) -> list[str]:
    """One line per distinct data setting and budget of the cells (a cell runs on one device: a
    step is `batch_size` x `accumulate` sequences): `symattn.data.budget.budget_line`."""
    from symattn.data.budget import budget_line
    from symattn.data.sources import describe

    seen, lines = set(), []
    for cell in cells:
        data, optim = cell.config.data, cell.config.optim
        per_step = optim.batch_size * optim.accumulate
        key = (data.model_dump_json(exclude={"seed", "mlm_probability"}), optim.max_steps, per_step)
        if key in seen:
            continue
        seen.add(key)
        name = " + ".join(describe(s) for s in data.source)
        lines.append(budget_line(name, data, optim.max_steps, per_step))
    return lines
