"""Turning bad input into one line that says what is wrong and how to fix it."""

from __future__ import annotations

from pydantic import ValidationError


class RunError(Exception):
    """A run that ended early for a reason the user can act on; `exit_code` is the process status."""

    exit_code = 1


class NonFiniteLoss(RunError):
    pass


class CheckpointNotWritten(RunError):
    """A checkpoint that could not be written (a full disk, a read-only folder): the last one stands,
    and the run continues from it with `--resume` once the folder can take it."""


class RunStopped(RunError):
    exit_code = 130


def one_line(exc: BaseException) -> str:
    """A single-line description of a configuration or input error."""
    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown setting; check its spelling"
            parts.append(f"{loc}: {msg}" if loc else msg)
        return "; ".join(parts)
    return " ".join(str(exc).split())
