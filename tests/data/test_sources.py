"""Corpus sources on data the tests write: cleaning, local text, datasets, and bad input."""

import csv
import io

import pytest

from symattn.data import DataConfig, DataError
from symattn.data.registry import parse_news_articles_csv
from symattn.data.sources import clean_text, finish, load_corpus


def corpus(cfg_source, cache):
    return load_corpus(DataConfig(source=cfg_source).source, cache)


def test_clean_text():
    assert clean_text("  a\u00a0b\u200b \ufffdc\r\n\r\n\r\n d  ") == "a b c\n\nd"


def test_finish_drops_empty_and_duplicates():
    docs, stats = finish(["one", "  ", "two", "one "])
    assert docs == ["one", "two"] and stats == {"documents": 2, "empty_dropped": 1, "duplicates_dropped": 1}


def test_news_csv_articles_and_broken_quotes():
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["article_id", "publish_date", "article_source_link", "title", "subtitle", "text"])
    w.writerow([1, "2017/2/7", "http://x", "Vote today", "", 'DeVos"?highly contested. "?Yes,"?said Pence.'])
    w.writerow([2, "2017/2/7", "http://y", "Empty", "sub", "  "])
    w.writerow([3, "2017/2/8", "http://z", "Title", "Subtitle", "Body text."])
    docs, stats = parse_news_articles_csv(buf.getvalue().encode())
    assert docs == [
        'Vote today\n\nDeVos" highly contested. "Yes," said Pence.',
        "Title\n\nSubtitle\n\nBody text.",
    ]
    assert stats == {"empty_dropped": 1}


def test_folder_is_one_document_per_file(corpus_dir, cache):
    c = corpus(f"path:{corpus_dir}", cache)
    assert len(c.documents) == 60 and c.documents[0].startswith("Report number 0:")
    assert c.identity == corpus(f"path:{corpus_dir}", cache).identity
    (corpus_dir / "doc000.txt").write_text("changed text", encoding="utf-8")
    assert c.identity != corpus(f"path:{corpus_dir}", cache).identity


def test_single_file_is_split_on_blank_lines(tmp_path, cache):
    f = tmp_path / "book.txt"
    f.write_text("First paragraph\nstill first.\n\n\nSecond one.\n \nThird.\n", encoding="utf-8")
    assert corpus(f"path:{f}", cache).documents == ["First paragraph\nstill first.", "Second one.", "Third."]
    per_file = {"type": "path", "path": str(f), "split": "file"}
    assert len(corpus(per_file, cache).documents) == 1


def test_invalid_utf8_is_skipped_and_counted_or_refused(corpus_dir, cache):
    (corpus_dir / "latin1.txt").write_bytes("un caf\xe9 \xa315".encode("latin-1"))
    c = corpus(f"path:{corpus_dir}", cache)
    assert len(c.documents) == 60 and c.stats["invalid_utf8_skipped"] == 1
    with pytest.raises(DataError, match=r"latin1.txt is not valid UTF-8 \(1 file\(s\) in all\); convert it"):
        corpus({"type": "path", "path": str(corpus_dir), "invalid_utf8": "error"}, cache)


def test_missing_empty_and_blank_corpora(tmp_path, cache):
    with pytest.raises(DataError, match="does not exist"):
        corpus(f"path:{tmp_path / 'nope'}", cache)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="has no files matching"):
        corpus(f"path:{tmp_path / 'empty'}", cache)
    (tmp_path / "blank").mkdir()
    (tmp_path / "blank" / "a.txt").write_text(" \n\n ")
    with pytest.raises(DataError, match="has no documents"):
        corpus(f"path:{tmp_path / 'blank'}", cache)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "a.txt").write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(DataError, match="has no UTF-8 text"):
        corpus(f"path:{tmp_path / 'bin'}", cache)


def test_sources_combine_and_deduplicate(corpus_dir, tmp_path, cache):
    extra = tmp_path / "extra.txt"
    extra.write_text((corpus_dir / "doc001.txt").read_text() + "\n\nA new paragraph.", encoding="utf-8")
    c = corpus([f"path:{corpus_dir}", f"path:{extra}"], cache)
    assert len(c.documents) == 61 and c.documents[-1] == "A new paragraph."
    assert c.stats["duplicates_dropped"] == 1


def test_hf_datasets_source_from_local_files(tmp_path, cache):
    datasets = pytest.importorskip("datasets")
    rows = [{"text": f"Line {i} of a small wiki.", "id": i} for i in range(20)] + [{"text": "", "id": 99}]
    ds = datasets.Dataset.from_list(rows)
    ds.to_json(str(tmp_path / "wiki.jsonl"))
    spec = {"type": "hf", "name": "json", "data_files": str(tmp_path / "wiki.jsonl"), "max_docs": 15}
    c = corpus(spec, cache)
    assert c.documents == [f"Line {i} of a small wiki." for i in range(15)]
    ds.save_to_disk(str(tmp_path / "saved"))
    assert len(corpus({"type": "hf", "name": str(tmp_path / "saved")}, cache).documents) == 20
    with pytest.raises(DataError, match="has no column 'body'.*set text_field"):
        corpus({**spec, "text_field": "body"}, cache)
    with pytest.raises(DataError, match="cannot load dataset"):
        corpus({"type": "hf", "name": "json", "data_files": str(tmp_path / "missing.jsonl")}, cache)


def test_local_data_files_are_identified_by_their_bytes_without_reading_the_text(tmp_path, monkeypatch):
    """An `hf:` source of local files is hashed at disk speed (names and bytes, not the decoded
    text): the same files elsewhere have the same identity, a changed byte or setting another."""
    import shutil

    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    from symattn.data import sources
    from symattn.data.config import HFSource

    first = tmp_path / "first"
    first.mkdir()
    for part in range(2):
        texts = [f"Document {part}-{i} about rivers." for i in range(50)]
        pq.write_table(pa.table({"text": texts, "id": list(range(50))}), first / f"part-{part}.parquet")
    second = tmp_path / "second"
    shutil.copytree(first, second)

    def spec(folder, **more):
        return HFSource(name="parquet", data_files=str(folder / "*.parquet"), **more)

    monkeypatch.setattr(sources, "_hf_texts", lambda spec: pytest.fail("the text was read"))
    same = sources.hf_identity(spec(first))
    assert same.startswith("hf-files:") and sources.hf_identity(spec(second)) == same
    assert sources.hf_identity(HFSource(name=str(second))) != same  # a folder: datasets' own reading
    assert sources.hf_identity(HFSource(name=str(second))).startswith("hf-files:")
    assert sources.hf_identity(spec(first, max_docs=10)) != same
    assert sources.hf_identity(spec(first, text_field="id")) != same
    pq.write_table(pa.table({"text": ["Changed."], "id": [0]}), second / "part-1.parquet")
    assert sources.hf_identity(spec(second)) != same
    monkeypatch.undo()
    saved = tmp_path / "saved"
    pytest.importorskip("datasets").Dataset.from_dict({"text": ["One.", "Two."]}).save_to_disk(str(saved))
    assert sources.hf_identity(HFSource(name=str(saved))).startswith("hf:")  # not data files: its text
