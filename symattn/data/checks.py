"""What a run's data settings need, checked before the data cache is created, locked or written:
that the cache folder can be made, that local corpus paths exist, that the validation split leaves
training documents where the corpus size is known without reading it (registry corpora), that a
tokenizer file loads, and that a model vocabulary given explicitly is the tokenizer's. Reads files,
writes nothing, imports no torch: `symattn train` runs it in its preflight, and
`prepare_pretraining` again before it touches the cache."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from symattn.data.cache import cache_path, check_cache_dir
from symattn.data.config import BERT_UNCASED, WORDPIECE, DataConfig, PathSource, RegistrySource
from symattn.data.errors import DataError
from symattn.data.sources import path_files
from symattn.data.split import check_split


def check_data(cfg: DataConfig, model_vocab_size: Optional[int] = None) -> None:
    """Refuse, in one line, data settings that cannot build; `model_vocab_size`: the model's
    vocabulary where the config sets it (else it follows the tokenizer)."""
    check_cache_dir(cache_path(cfg.cache_dir))
    files = {i: path_files(s) for i, s in enumerate(cfg.source) if isinstance(s, PathSource)}
    most = _most_documents(cfg, files)
    if most is not None and isinstance(cfg.val_docs, int):
        check_split(most, cfg.val_docs, exact=False)
    if cfg.tokenizer not in (WORDPIECE, BERT_UNCASED):
        from symattn.data.tokenizer import load_tokenizer_file

        size = load_tokenizer_file(cfg.tokenizer).get_vocab_size(with_added_tokens=True)
        if model_vocab_size is not None and model_vocab_size != size:
            raise DataError(
                f"model.vocab_size {model_vocab_size} does not match the {size} tokens of the tokenizer "
                f"{Path(cfg.tokenizer).expanduser()}; remove model.vocab_size (it follows the tokenizer)"
            )


def _most_documents(cfg: DataConfig, files: dict[int, list[Path]]) -> Optional[int]:
    """The most documents the corpus can hold, known without reading it (None if not): a registry
    corpus's count, a folder's number of files (one document per file); cleaning only drops some."""
    from symattn.data.registry import CORPORA
    from symattn.data.sources import path_split

    total = 0
    for i, source in enumerate(cfg.source):
        if isinstance(source, RegistrySource) and CORPORA[source.name].documents is not None:
            total += CORPORA[source.name].documents
        elif isinstance(source, PathSource) and path_split(source) == "file":
            total += len(files[i])
        else:
            return None
    return total
