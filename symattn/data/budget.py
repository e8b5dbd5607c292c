"""How many epochs of its corpus a run's budget is: `max_steps` x sequences per step, against the
training blocks of its data. Known exactly once the data is built (the cache entry's `meta.json`);
before that, for a hub corpus, from a published token count (`HUB_CORPORA`). A budget of more than
`EPOCHS_WARNING` epochs repeats every block that many times, and the suite says so in one line
(`symattn queue --dry-run`, `budget_line`; a run, `epochs_warning`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from symattn.data.config import BERT_UNCASED, DataConfig, HFSource

EPOCHS_WARNING = 4.0  # more epochs than this is a warning: the corpus is too small for the budget


@dataclass(frozen=True)
class HubCorpus:
    """A published size of a hub corpus: its tokens (each document's, and one [SEP] after each),
    counted with `tokenizer`."""

    tokens: int
    tokenizer: str
    source: str


# (dataset, config) -> its size; used for a source of that dataset and config as a whole (split
# `train`, column `text`, no `data_files`, no `max_docs`) tokenised with the same tokenizer.
HUB_CORPORA: dict[tuple[str, Optional[str]], HubCorpus] = {
    ("HuggingFaceFW/fineweb-edu", "sample-10BT"): HubCorpus(
        9_720_051_144,  # 9,672,101 documents
        BERT_UNCASED,
        "the bert-base-uncased count of the hub dataset Hibiki711/fw-bert-tokenized-flattened",
    ),
}


@dataclass(frozen=True)
class CorpusSize:
    blocks: float  # training blocks of seq_len tokens
    tokens: float  # training tokens
    exact: bool  # counted in the built data; else estimated from `HUB_CORPORA`


def corpus_size(cfg: DataConfig, read_local: bool = True) -> Optional[CorpusSize]:
    """The training split's size for these data settings, if known without building or fetching."""
    from symattn.data.pretraining import built_meta

    meta = built_meta(cfg, read_local)
    if meta is not None and "train_blocks" in meta:
        return CorpusSize(meta["train_blocks"], meta.get("train_tokens", 0), True)
    if len(cfg.source) != 1 or not isinstance(cfg.source[0], HFSource):
        return None
    s = cfg.source[0]
    hub = HUB_CORPORA.get((s.name, s.config))
    whole = s.split == "train" and s.text_field == "text" and s.data_files is None and s.max_docs is None
    if hub is None or not whole or cfg.tokenizer != hub.tokenizer:
        return None
    return CorpusSize(hub.tokens / (cfg.seq_len - 2), hub.tokens, False)  # a block holds seq_len - 2


def epochs(max_steps: int, sequences_per_step: int, train_blocks: float) -> float:
    return max_steps * sequences_per_step / train_blocks


def _count(n: float) -> str:
    """2,881,491 -> 2.9M; 26,214,400,000 -> 26.2B."""
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= size:
            return f"{n / size:.3g}{unit}" if n < 100 * size else f"{n / size:,.0f}{unit}"
    return f"{n:,.0f}"


def _too_many(n_epochs: float) -> str:
    return (
        f": more than {EPOCHS_WARNING:g} epochs, so every block is seen about {n_epochs:,.0f} times; "
        "use a larger corpus or fewer steps"
    )


def budget_line(name: str, cfg: DataConfig, max_steps: int, sequences_per_step: int) -> str:
    """One line on a budget against its data `name`: its tokens and how many epochs they are,
    `warning: ...` when more than `EPOCHS_WARNING`."""
    tokens = max_steps * sequences_per_step * cfg.seq_len
    budget = f"{max_steps:,} steps x {sequences_per_step:,} sequences of {cfg.seq_len} tokens = {_count(tokens)} tokens"
    size = corpus_size(cfg)
    if size is None:
        from symattn.data.sources import fixed_identity

        if any(isinstance(s, HFSource) and fixed_identity(s) is None for s in cfg.source):
            why = "a hub dataset's built data is found without fetching it only at a pinned commit (revision)"
        else:
            why = "until its data is built (no cache entry here)"
        return f"data {name}: {budget}; epochs unknown {why}"
    n = epochs(max_steps, sequences_per_step, size.blocks)
    if size.exact:
        of = f"its {size.blocks:,.0f} training blocks ({_count(size.tokens)} tokens)"
    else:
        of = f"about {_count(size.tokens)} tokens (a published {cfg.tokenizer} count; not built here)"
    line = f"data {name}: {budget}, {n:,.1f} epochs of {of}"
    return f"warning: {line}{_too_many(n)}" if n > EPOCHS_WARNING else line


def epochs_warning(name: str, max_steps: int, sequences_per_step: int, train_blocks: int) -> Optional[str]:
    """For a run whose data is built: a one-line warning when its budget is more than
    `EPOCHS_WARNING` epochs of its training blocks, else None."""
    n = epochs(max_steps, sequences_per_step, train_blocks)
    if n <= EPOCHS_WARNING:
        return None
    return (
        f"warning: {max_steps:,} steps x {sequences_per_step:,} sequences are {n:,.1f} epochs of the "
        f"{train_blocks:,} training blocks of {name}{_too_many(n)}"
    )
