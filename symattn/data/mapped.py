"""Pages of memory-mapped Arrow files let go once read.

The build reads its Arrow files (a hub dataset's cache, `documents.arrow`, the tokenised shards)
memory-mapped, through `datasets` and pyarrow, in one sequential pass each, and the fingerprint
reads the token shards (`.npy`) back the same way. Every page read stays in
the process's resident set until the file is unmapped: a pass over a 4 GB file leaves 4 GB resident.
Those pages are clean page cache that the kernel could reclaim, but RSS, cgroup limits and schedulers
count them. `release_mapped()` drops them from the process's page tables (`madvise(MADV_DONTNEED)`);
they stay in the page cache and a later read faults them in again, so no data changes. Only mappings
that cannot be written are touched: dropping a written private page would lose the write.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

MADV_DONTNEED = 4  # Linux
EVERY_BATCHES = 16  # readers release every this many batches of a few thousand documents


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc


_LIBC = _libc()


def release_mapped(suffix: str = ".arrow") -> int:
    """Drop the resident pages of this process's read-only mappings of files named `*suffix` (all
    of them: pages another reader of the process still uses are faulted in again); the bytes of
    address space released (0 where the platform has no /proc or madvise)."""
    if _LIBC is None:
        return 0
    try:
        with open("/proc/self/maps") as f:
            lines = f.read().splitlines()
    except OSError:
        return 0
    released = 0
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or not fields[5].endswith(suffix) or "w" in fields[1]:
            continue
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if _LIBC.madvise(start, end - start, MADV_DONTNEED) == 0:
            released += end - start
    return released
