"""Pages of memory-mapped Arrow files let go once read: the mapping's resident pages drop, the
data read afterwards is unchanged, and a writable mapping is left alone."""

import mmap
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from symattn.data.mapped import release_mapped

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/smaps is Linux's")


def resident(path: Path) -> int:
    """Bytes of `path`'s mappings resident in this process (/proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if "-" in line.split(" ", 1)[0] and line[0] in "0123456789abcdef":
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1]) * 1024
    return total


def test_a_read_mapping_lets_its_pages_go_and_reads_the_same(tmp_path):
    path = tmp_path / "numbers.arrow"
    values = np.arange(16 << 20, dtype=np.int32)  # 64 MiB
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, pa.schema([("x", pa.int32())])) as w:
        w.write_batch(pa.record_batch([pa.array(values)], names=["x"]))
    table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
    column = table.column("x").chunk(0).to_numpy()
    before = int(column.sum(dtype=np.int64))  # every page read
    assert resident(path) > 60 << 20

    assert release_mapped() >= 64 << 20
    assert resident(path) < 1 << 20
    assert int(column.sum(dtype=np.int64)) == before == int(values.sum(dtype=np.int64))  # faulted in again


def test_a_writable_mapping_keeps_its_pages(tmp_path):
    path = tmp_path / "scratch.arrow"
    path.write_bytes(b"\0" * (4 << 20))
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as m:
        m[:] = b"\1" * len(m)  # written, not yet flushed: dropping these pages would lose the write
        release_mapped()
        assert resident(path) >= 4 << 20 and m[:8] == b"\1" * 8
