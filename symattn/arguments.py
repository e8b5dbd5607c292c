"""The checks of command-line arguments, shared by every command: each is an argparse `type=` or
action, so a bad argument is refused while the command line is parsed, before any store, cache or
network is touched, in one line (`symattn CMD: error: argument --X: what is wrong; the fix`, exit
2). What needs two arguments together, or a store, is the command's own check; this module only
reads the file system (a path that must be a file or a folder).

No heavy imports here: a refused command answers in a fraction of a second.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import re
from pathlib import Path
from typing import Callable, Iterable, Optional

Error = argparse.ArgumentTypeError


def whole(low: Optional[int] = None, high: Optional[int] = None, what: str = "a whole number") -> Callable:
    """A whole number within [low, high] (either end open when None); `what` says the range."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise Error(f"{text!r} is not a whole number; give {what}") from None
        if (low is not None and value < low) or (high is not None and value > high):
            raise Error(f"{value} is out of range; give {what}")
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


def real(low: Optional[float] = None, above: Optional[float] = None, what: str = "a number") -> Callable:
    """A finite number, at least `low` or strictly above `above`."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise Error(f"{text!r} is not {what}; give a number such as 5.0") from None
        if not math.isfinite(value):
            raise Error(f"{text!r} is not finite; give a finite number")
        if low is not None and value < low:
            raise Error(f"{value:g} is out of range; give {what} of at least {low:g}")
        if above is not None and value <= above:
            raise Error(f"{value:g} is out of range; give {what} above {above:g}")
        return value

    parse.__name__ = what
    return parse


positive = whole(1, what="a whole number of at least 1")
count = whole(0, what="a whole number of at least 0")
port = whole(1, 65535, what="a port from 1 to 65535")
seconds = real(above=0, what="a number of seconds")


def listed(item: Callable[[str], object] = str, choices: Optional[Iterable[str]] = None) -> Callable:
    """A comma-separated list (`a,b,c`): each item parsed by `item` or one of `choices`, none empty,
    none repeated (a repeat would run or time the same thing twice)."""
    allowed = None if choices is None else list(choices)

    def parse(text: str) -> list:
        parts = [p.strip() for p in text.split(",")]
        if not text.strip() or any(p == "" for p in parts):
            raise Error(f"{text!r} has an empty item; give comma-separated values such as a,b")
        values = []
        for part in parts:
            if allowed is not None and part not in allowed:
                raise Error(f"unknown value {part!r}; choose from {', '.join(allowed)}")
            values.append(item(part))
        repeated = _first_repeat(values)
        if repeated is not None:
            raise Error(f"{text!r} repeats {repeated}; give each value once")
        return values

    parse.__name__ = "list"
    return parse


def _first_repeat(values: list) -> Optional[object]:
    seen = set()
    for v in values:
        if v in seen:
            return v
        seen.add(v)
    return None


class AppendOnce(argparse.Action):
    """A repeatable option (`--task a --task b`) that refuses a value given twice; with
    `key=`, values are compared by that (e.g. an override's setting name)."""

    def __init__(self, *args, key: Optional[Callable[[object], object]] = None, **kwargs):
        self.key = key or (lambda v: v)
        super().__init__(*args, **kwargs)

    def __call__(self, parser, namespace, value, option_string=None):
        values = list(getattr(namespace, self.dest, None) or [])
        if any(self.key(v) == self.key(value) for v in values):
            raise argparse.ArgumentError(self, f"{self.key(value)} is given twice; give it once")
        setattr(namespace, self.dest, [*values, value])


def override(text: str) -> str:
    """A dotted `key=value` override (its value is checked with the config)."""
    key, sep, _ = text.partition("=")
    if not sep or not key.strip():
        raise Error(f"{text!r} is not key=value; give a dotted setting and its value, e.g. optim.lr=3e-4")
    return text


def override_key(text: str) -> str:
    return text.partition("=")[0].strip()


def existing_file(text: str) -> str:
    path = Path(text).expanduser()
    if not path.exists():
        raise Error(f"{text} does not exist; give the path of a file")
    if not path.is_file():
        raise Error(f"{text} is not a file; give the path of a file")
    return text


def existing_folder(text: str) -> str:
    path = Path(text).expanduser()
    if not path.exists():
        raise Error(f"{text} does not exist; give the path of a folder")
    if not path.is_dir():
        raise Error(f"{text} is not a folder; give the path of a folder")
    return text


def parquet_folder(text: str) -> str:
    existing_folder(text)
    if not any(Path(text).expanduser().glob("*.parquet")):
        raise Error(f"{text} holds no .parquet file; give a folder of the corpus's Parquet files")
    return text


def _writable_from(path: Path, text: str) -> None:
    """The nearest existing folder above `path` (where missing folders would be created) must be a
    writable folder."""
    for above in path.parents:
        if above.exists():
            if not above.is_dir():
                raise Error(f"{text}: {above} is a file, not a folder; give another path")
            if not os.access(above, os.W_OK | os.X_OK):
                raise Error(f"{text}: {above} cannot be written; give a path in a writable folder")
            return


def output_file(text: str) -> str:
    """A file to write (replaced if it exists); '' for none."""
    if text == "":
        return text
    path = Path(text).expanduser().absolute()
    if path.is_dir():
        raise Error(f"{text} is a folder; give the path of a file to write")
    if path.exists() and not os.access(path, os.W_OK):
        raise Error(f"{text} cannot be written; give another path")
    _writable_from(path, text)
    return text


def output_folder(text: str) -> str:
    """A folder to write (created with its parents if missing; its new contents are made beside
    it and swapped in, so the folder above must be writable too)."""
    path = Path(text).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise Error(f"{text} is a file; give the path of a folder to write into")
    if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
        raise Error(f"{text} cannot be written; give a writable folder")
    _writable_from(path, text)
    return text


def run_id(text: str) -> str:
    """An MLflow run id: 32 hexadecimal characters."""
    if not re.fullmatch(r"[0-9a-f]{32}", text):
        raise Error(
            f"{text!r} is not an MLflow run id (32 hexadecimal characters); copy it from "
            "`symattn status` or the MLflow UI"
        )
    return text


def resume(text: str) -> str:
    """`--resume RUN_ID` (or `auto`: the newest unfinished run of the config)."""
    if "=" in text:
        raise Error(f"{text!r} is not a run id; put overrides before --resume")
    return text if text == "auto" else run_id(text)


NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"  # a study's name, as a sweep spec's `name` takes it


def study(text: str) -> str:
    if not re.fullmatch(NAME.strip("^$"), text):
        raise Error(f"{text!r} is not a study name (letters, digits, _ . -); give the name of a queued spec")
    return text


def name(text: str) -> str:
    if not text.strip():
        raise Error("the name is empty; give a name")
    return text


def host(text: str) -> str:
    """An interface to listen on: an IP address or a host name."""
    try:
        ipaddress.ip_address(text)
        return text
    except ValueError:
        pass
    labels = text.rstrip(".").split(".")
    if text and all(re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?", label) for label in labels):
        return text
    raise Error(f"{text!r} is not an IP address or host name; give e.g. 127.0.0.1 or 0.0.0.0")


def devices(text: str) -> str:
    """cpu, auto, or GPU indices `0,1` (whether they exist is the worker's check)."""
    if text in ("cpu", "auto"):
        return text
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isdigit() for p in parts):
        raise Error(f"{text!r} is not cpu, auto, or GPU indices; give e.g. --devices 0,1")
    repeated = _first_repeat([int(p) for p in parts])
    if repeated is not None:
        raise Error(f"{text!r} repeats GPU {repeated}; give each GPU once")
    return text


def tracking_uri(text: str) -> str:
    from symattn.paths import check_uri

    try:
        return check_uri(text)
    except ValueError as exc:
        raise Error(str(exc)) from None


def add_set(p, what: str) -> None:
    """`--set KEY=VALUE` (repeatable, each key once): dotted overrides of `what`."""
    p.add_argument(
        "--set",
        action=AppendOnce,
        key=override_key,
        type=override,
        default=[],
        metavar="KEY=VALUE",
        help=f"dotted override of {what}, e.g. optim.lr=3e-4 (repeatable)",
    )
