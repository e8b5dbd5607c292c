"""The on-disk cache: where it lives, and writes that are all-or-nothing.

Everything under the cache is written to a temporary name first and renamed into place, so an
interrupted fetch or build never leaves a half-written entry that a later run would trust.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from filelock import FileLock, Timeout

from symattn.data.errors import DataError

ENV_VAR = "SYMATTN_CACHE"


def default_cache_dir() -> Path:
    """`$SYMATTN_CACHE`, else `$XDG_CACHE_HOME/symattn`, else `~/.cache/symattn`."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "symattn"


def resolve_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder, created if needed."""
    path = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"cannot create the data cache {path} ({exc.strerror}); set {ENV_VAR} or data.cache_dir "
            "to a writable folder"
        ) from exc
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def stable_hash(obj: Any) -> str:
    """sha256 of a JSON-serialisable object, independent of dict order."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a fresh temporary folder beside `final`; on success rename it to `final`.

    If `final` appeared meanwhile (another worker built the same entry), ours is dropped: entries
    are named by what they contain, so both are the same.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; a shared cache needs the usual mode
    try:
        yield tmp
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: Path, obj: Any) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n").encode())


@contextlib.contextmanager
def build_lock(cache: Path, key: str) -> Iterator[None]:
    """Serialise builds of one cache entry across processes (a sweep's workers start together):
    the second builder waits for the first, then finds the entry built.

    The lock is `locks/<key>.lock` under the cache (an flock on Unix; the file stays, and is
    created as any cache file, under the umask). Were two builds to overlap anyway, they would only
    waste time, since entries are renamed into place whole.
    """
    lock_dir = cache / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(lock_dir / f"{key}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:  # say why this process waits (a build takes a minute or more)
        print(
            f"{time.strftime('%H:%M:%S')} data: another process is building this entry; waiting for it",
            file=sys.stderr,
            flush=True,
        )
        lock.acquire()
    try:
        yield
    finally:
        lock.release()
