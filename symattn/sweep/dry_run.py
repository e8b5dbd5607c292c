"""`symattn queue --dry-run`: check a spec on the CPU without data or stores."""

from __future__ import annotations

from typing import Callable, Iterator

from symattn.sweep.spec import Cell


def dry_run(
    cells: list[Cell], steps: int = 2, batch_size: int = 2, say: Callable[[str], None] = print
) -> Iterator[dict]:
    """Every cell (validated when the spec was expanded) builds its model and runs `steps`
    optimizer steps on random tokens at a tiny batch; one row per cell, as each is done. Then
    `say` gets a line per data setting and budget of the cells: its tokens and how many epochs of
    the corpus they are, a warning beyond `symattn.data.budget.EPOCHS_WARNING` (`budget_lines`).
    Nothing is written, fetched or built."""
    import torch

    from symattn.model.bert import BertForMaskedLM, count_parameters
    from symattn.tokens import IGNORE_INDEX, NUM_SPECIAL_TOKENS

    for cell in cells:
        cfg = cell.config
        model_cfg = cfg.model
        if "vocab_size" not in model_cfg.model_fields_set and cfg.data.resolved_vocab_size:
            model_cfg = model_cfg.model_copy(update={"vocab_size": cfg.data.resolved_vocab_size})
        model = BertForMaskedLM(model_cfg, seed=cfg.seed)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, eps=cfg.optim.eps)
        g = torch.Generator().manual_seed(0)
        losses = []
        for _ in range(steps):
            ids = torch.randint(
                NUM_SPECIAL_TOKENS, model_cfg.vocab_size, (batch_size, cfg.data.seq_len), generator=g
            )
            labels = torch.where(
                torch.rand(ids.shape, generator=g) < cfg.data.mlm_probability, ids, IGNORE_INDEX
            )
            labels[:, 1] = ids[:, 1]  # at least one target per row
            loss = model(ids, labels=labels).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(loss.detach().item())
        yield {"cell": cell.name, "group": cell.group, **count_parameters(model), "loss": losses[-1]}
    for line in budget_lines(cells):
        say(line)


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
