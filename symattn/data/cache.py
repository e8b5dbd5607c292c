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


def cache_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder (`cache_dir`, else the default), not created."""
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def check_cache_dir(path: Path) -> None:
    """That the cache folder exists and can be written, or can be created; nothing is created."""
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    reason = None
    if not existing.is_dir():
        reason = f"{existing} is not a folder"
    elif not os.access(existing, os.W_OK | os.X_OK):
        reason = f"{existing} is not writable"
    if reason is not None:
        raise DataError(
            f"cannot create the data cache {path} ({reason}); set {ENV_VAR} or data.cache_dir to a writable folder"
        )


def resolve_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder, created if needed."""
    path = cache_path(cache_dir)
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

    The lock is `locks/<key>.lock` under the cache (an flock on Unix, created as any cache file,
    under the umask). It stays after a build, and a failed build removes the one it made, so that a
    refused build leaves the cache as it was. Were two builds to overlap (a process waiting on a
    removed file, and a newcomer), they would only waste time, since entries are renamed into place
    whole.
    """
    lock_dir = cache / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    path = lock_dir / f"{key}.lock"
    ours = not path.exists()
    lock = FileLock(path)
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
    except BaseException:
        lock.release()
        if ours:
            with contextlib.suppress(OSError):
                path.unlink()
        raise
    else:
        lock.release()


# The cache's folders, each before the folder that holds it.
_FOLDERS = ("locks", "wheels", "vocab/bert-base-uncased", "vocab", "index", "pretrain", "build", "tasks", ".")


@contextlib.contextmanager
def leave_as_found(cache: Path) -> Iterator[None]:
    """On a failure, remove the cache's folders that this block created and left empty (the cache
    itself included), so that a refused build leaves a cold cache uncreated."""
    folders = [cache / name for name in _FOLDERS]
    existed = {folder for folder in folders if folder.exists()}
    try:
        yield
    except BaseException:
        for folder in folders:
            if folder not in existed:
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only if empty
        raise
