"""`symattn queue --dry-run`: check a spec on the CPU without data or stores."""

from __future__ import annotations

from symattn.sweep.spec import Cell


def dry_run(cells: list[Cell], steps: int = 2, batch_size: int = 2) -> list[dict]:
    """Every cell (validated when the spec was expanded) builds its model and runs `steps`
    optimizer steps on random tokens at a tiny batch; nothing is written."""
    import torch

    from symattn.model import BertForMaskedLM, count_parameters
    from symattn.tokens import IGNORE_INDEX, NUM_SPECIAL_TOKENS

    rows = []
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
        rows.append({"cell": cell.name, "group": cell.group, **count_parameters(model), "loss": losses[-1]})
    return rows
