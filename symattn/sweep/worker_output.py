"""What a worker says: a `HH:MM:SS` line per cell event, whole even when slots say them at once,
and each slot's live progress (`SlotProgress`), a bar on a terminal and a line per evaluation in
a log."""

from __future__ import annotations

import signal
import sys
import threading
import time
from typing import Optional

from symattn.sweep.progress import STEP, VAL_LOSS, progress_text

_SAYING = threading.Lock()  # slots say their lines whole


def say(message: str) -> None:
    """A line on the worker's output per cell event (above the progress bars on a terminal)."""
    line = f"{time.strftime('%H:%M:%S')} {message}"
    with _SAYING:
        if sys.stdout.isatty():
            from tqdm import tqdm

            tqdm.write(line, file=sys.stdout)
        else:
            sys.stdout.write(line + "\n")
        sys.stdout.flush()


class SlotProgress:
    """One live line per slot while its cell trains, from what the cell reports to its trial: its
    name, step/total, last validation loss, step rate and ETA. On a terminal, a tqdm bar per slot,
    redrawn at each read; otherwise (a log, CI, a pipe) a plain line at each new evaluation, at most
    one per slot every `every` seconds."""

    def __init__(self, every: float) -> None:
        self.tty, self.every = sys.stdout.isatty(), every
        self.bars: dict = {}  # slot -> its tqdm bar (terminal)
        self.shown: dict[int, tuple] = {}  # slot -> (validation loss last shown, monotonic time)

    def start(self, slot: int, name: str, total: Optional[int]) -> None:
        self.shown[slot] = (None, float("-inf"))
        if self.tty:
            from tqdm import tqdm

            fmt = "{desc} |{bar:20}| starting" if total else "{desc}: fine-tuning, {elapsed}"
            self.bars[slot] = tqdm(
                total=total, desc=f"{name:<26}", position=slot, leave=False, file=sys.stdout, bar_format=fmt
            )

    def update(self, slot: int, name: str, attrs: dict, total: Optional[int]) -> None:
        if total is None:  # a fine-tuning cell reports no steps
            if slot in self.bars:
                self.bars[slot].refresh()
            return
        text = progress_text(attrs, total, time.time())
        if self.tty:
            bar = self.bars[slot]
            bar.n, bar.bar_format = min(attrs.get(STEP, 0), total), f"{{desc}} |{{bar:20}}| {text}"
            bar.refresh()
            return
        loss, at = self.shown[slot]
        if attrs.get(STEP, 0) >= total:  # the line saying it is COMPLETE follows
            return
        if attrs.get(VAL_LOSS) not in (None, loss) and time.monotonic() - at >= self.every:
            say(f"{name}: {text}")
            self.shown[slot] = (attrs[VAL_LOSS], time.monotonic())

    def end(self, slot: int) -> None:
        bar = self.bars.pop(slot, None)
        if bar is not None:
            bar.close()


def exit_text(code: Optional[int]) -> str:
    """A cell process's end in words: `exit code 1`, `killed by SIGKILL`."""
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            pass
    return f"exit code {code}"
