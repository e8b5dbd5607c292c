"""A report's output folder, replaced as a whole.

A report writes its files into a new folder beside the output folder (`.NAME.partial-PID-*`) and,
once every file is written, swaps it in with one atomic exchange (Linux `renameat2`), so the
folder holds the earlier set or the new one, never a mix, and no file of an earlier report that
the new one no longer writes survives. A manifest (`MANIFEST`) lists the files a report wrote:
every other file of the folder (a hand-written README) is carried into the new set by a hard
link. A folder without a manifest (written before reports kept one) keeps all its files but those
the new report writes, since nothing tells which an earlier report wrote.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import secrets
import shutil
from pathlib import Path

MANIFEST = ".symattn-report.json"
_PARTIAL, _OLD = "partial", "old"


class OutDirError(ValueError, LookupError):
    """An output folder a report must not replace (bad input: refused before anything is written)."""


def written_by_report(folder: Path) -> set[str] | None:
    """The names the folder's last report wrote, from its manifest; None without one."""
    try:
        return set(json.loads((folder / MANIFEST).read_text())["files"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        raise OutDirError(
            f"{folder / MANIFEST} is not a report's manifest; remove it, or pick another output folder"
        ) from None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where the system or
    the file system has no such call."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sibling(out: Path, kind: str) -> Path:
    """A new folder beside `out`, named after it, its kind and this process (umask's mode)."""
    path = out.parent / f".{out.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"
    path.mkdir()
    return path


def _remove_leftovers(out: Path) -> None:
    """Folders a killed report left beside `out`: its partial set is removed; the earlier set it
    was replacing is put back where a kill between the two renames left `out` missing, else
    removed."""
    prefix = f".{out.name}."
    for path in sorted(out.parent.iterdir()):
        kind, _, rest = path.name.removeprefix(prefix).partition("-")
        pid = rest.partition("-")[0]
        if path.name.startswith(prefix) and kind in (_PARTIAL, _OLD) and pid.isdigit() and path.is_dir():
            if not _alive(int(pid)):
                if kind == _OLD and not out.exists() and (path / "set").is_dir():
                    (path / "set").replace(out)
                shutil.rmtree(path, ignore_errors=True)


def _carry(src: Path, dst: Path) -> None:
    """`src` into the new set: a hard link (the same file, not a copy), else a copy."""
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        shutil.copy2(src, dst, follow_symlinks=False)


class Staged:
    """`with Staged(out) as stage:` write into `stage.path`, then `stage.commit(written)`; a report
    that raises before it leaves `out` as it was."""

    def __init__(self, out) -> None:
        self.out = Path(out).resolve()
        if self.out.exists() and not self.out.is_dir():
            raise OutDirError(f"--out {out} is a file, not a folder; pick a folder")
        if Path.cwd().resolve().is_relative_to(self.out):
            raise OutDirError(
                f"--out {out} holds the current folder, and a report replaces its folder as a whole; "
                "pick a folder of its own"
            )
        ours = written_by_report(self.out) or set()  # a manifest that is not one: refused before any work
        folders = sorted(p.name for p in self.out.iterdir() if p.is_dir()) if self.out.is_dir() else []
        folders = [name for name in folders if name not in ours]  # a report's own folder (export/) is fine
        if folders:
            raise OutDirError(
                f"--out {out} holds folders a report does not write ({', '.join(folders[:3])}), and a "
                "report replaces its folder as a whole; pick a folder of its own"
            )
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            _remove_leftovers(self.out)
            self.path = _sibling(self.out, _PARTIAL)
        except PermissionError:
            raise OutDirError(
                f"cannot write in {self.out.parent}, where a report builds the new set of --out {out} "
                "before it swaps it in; pick a folder whose parent is writable"
            ) from None
        if self.out.is_dir():  # the new set keeps the folder's mode
            os.chmod(self.path, self.out.stat().st_mode & 0o7777)
        self.committed, self.kept, self.recorded = False, [], True

    def __enter__(self) -> "Staged":
        return self

    def __exit__(self, *exc) -> None:
        if not self.committed:
            shutil.rmtree(self.path, ignore_errors=True)

    def commit(self, written) -> list[Path]:
        """Swap the new set in; returns the written files at their final paths. `kept` names the
        files carried over from the earlier folder; `recorded` says whether it had a manifest."""
        # What the folder holds at its top: a file, or a folder of files (export/).
        relative = [Path(p).resolve().relative_to(self.path.resolve()) for p in written]
        names = list(dict.fromkeys(r.parts[0] for r in relative))
        (self.path / MANIFEST).write_text(json.dumps({"files": sorted(names)}, indent=1) + "\n")
        if self.out.is_dir():
            earlier = written_by_report(self.out)
            self.recorded = earlier is not None
            ours = set(names) | {MANIFEST} | (earlier or set())
            for entry in sorted(self.out.iterdir()):
                if entry.name not in ours:
                    _carry(entry, self.path / entry.name)
                    self.kept.append(entry.name)
            if _exchange(self.path, self.out):
                shutil.rmtree(self.path, ignore_errors=True)  # now the earlier set
            else:  # two renames: between them the earlier set waits complete under .NAME.old-*
                old = _sibling(self.out, _OLD)
                self.out.replace(old / "set")
                self.path.replace(self.out)
                shutil.rmtree(old, ignore_errors=True)
        else:
            self.path.replace(self.out)
        self.committed = True
        return [self.out / r for r in dict.fromkeys(relative)]

    def kept_text(self) -> str:
        """The line that names the files kept beside the new set, if any."""
        if not self.kept:
            return ""
        why = "not written by a report" if self.recorded else "no record says which an earlier report wrote"
        return f"Kept beside them ({why}): {', '.join(self.kept)}\n"
