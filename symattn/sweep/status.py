"""`symattn status`: one row per cell, from its newest trial alone (what the cell reported to it),
so that it answers without opening MLflow, and under a FAILED cell's row why it failed; with
`--watch`, again every few seconds with the study's ETA until no cell is waiting or running."""

from __future__ import annotations

import sys
import textwrap
import time
from datetime import datetime
from typing import Callable, Optional, TextIO

import optuna
from optuna.trial import FrozenTrial

from symattn import keys
from symattn.config import RunConfig
from symattn.sweep.finetune_cells import is_finetune
from symattn.sweep.progress import ERROR, RUN_ID, STEP, VAL_LOSS, cell_eta, cell_rate, duration, study_eta
from symattn.sweep.records import FAILURE
from symattn.sweep.storage import load_study, open_existing_storage

ACTIVE = ("WAITING", "RUNNING")
WIDTH = 110  # a FAILED cell's reason is wrapped to this many columns under its row
REASON_CHARS = 400  # and cut at this many characters


def status_rows(
    study_name: str, storage_url: Optional[str] = None, now: Optional[float] = None
) -> list[dict]:
    """One row per cell: its latest trial's state, attempts, MLflow run id, progress and last loss,
    why it failed (a FAILED cell), and what the study's ETA is computed from (`progress.study_eta`)."""
    storage = open_existing_storage(study_name, storage_url)
    study = load_study(study_name, storage, storage_url)
    trials = list(study.get_trials(deepcopy=False))
    for name in study.user_attrs.get("searches", {}):
        trials += optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    latest: dict[str, FrozenTrial] = {}
    for t in trials:  # the newest attempt of each cell
        cell = t.user_attrs.get("cell")
        if cell and (cell not in latest or t.number > latest[cell].number):
            latest[cell] = t
    now = time.time() if now is None else now
    return [_row(t, now) for t in sorted(latest.values(), key=lambda t: t.user_attrs.get("index", 0))]


def _row(t: FrozenTrial, now: float) -> dict:
    # A fine-tuning cell reports no progress: it runs in about a minute on the CPU.
    finetune = is_finetune(t)
    total = None if finetune else RunConfig.model_validate(t.user_attrs["config"]).optim.max_steps
    attrs, state = t.user_attrs, t.state.name
    started = t.datetime_start.timestamp() if t.datetime_start else None
    running = state == "RUNNING"
    rate = cell_rate(attrs) if running else None
    return {
        "cell": attrs["name"],
        "group": attrs["group"],
        "state": state,
        "attempts": attrs.get("attempt", 1),
        "run_id": attrs.get(RUN_ID, ""),
        "progress": f"{attrs.get(STEP, 0)}/{total}" if total else "-",
        "val_loss": attrs.get(VAL_LOSS),
        # as its worker recorded it, else as the cell reported it (its worker died first)
        "failure": (attrs.get(FAILURE) or attrs.get(ERROR) or "no reason recorded")
        if state == "FAIL"
        else None,
        # what the study's ETA is computed from
        "kind": keys.FINETUNE if finetune else keys.PRETRAIN,
        "seconds": (t.datetime_complete.timestamp() - started)
        if state in ("COMPLETE", "PRUNED") and started and t.datetime_complete
        else None,
        "elapsed": now - started if running and started else None,
        "eta": cell_eta(attrs, total, now) if running else None,
        "estimate": (now - started) + cell_eta(attrs, total, now) if rate and started else None,
    }


def format_status(rows: list[dict]) -> str:
    w = max([34, *(len(r["cell"]) for r in rows)])  # fine-tuning cells have the longest names
    head = (
        f"{'cell':<{w}} {'group':<12} {'state':<9} {'try':>3} {'run':<32} {'progress':>13} "
        f"{'val/loss':>9} {'eta':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        loss = f"{r['val_loss']:.4f}" if r["val_loss"] is not None else "-"
        eta = duration(r["eta"]) if r["state"] == "RUNNING" and r.get("kind") == keys.PRETRAIN else "-"
        lines.append(
            f"{r['cell']:<{w}} {r['group']:<12} {r['state']:<9} {r['attempts']:>3} {r['run_id']:<32} "
            f"{r['progress']:>13} {loss:>9} {eta:>7}"
        )
        if r.get("failure"):
            lines.extend(_reason(r["failure"]))
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    lines.append(", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())) or "no cells")
    return "\n".join(lines)


def _reason(text: str) -> list[str]:
    """A FAILED cell's reason, under its row: `  failed: ...`, wrapped to `WIDTH` columns, its
    closing `(exit code 1)` kept whole."""
    text = text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 3] + "..."
    head, paren, tail = text.rpartition(" (")
    if paren and tail.endswith(")"):
        text = head + paren + tail.replace(" ", "\xa0")  # not a place to break the line
    lines = textwrap.wrap(
        text, WIDTH, initial_indent="  failed: ", subsequent_indent=" " * 10, break_on_hyphens=False
    )
    return [line.replace("\xa0", " ") for line in lines]


def eta_line(rows: list[dict]) -> str:
    """The study's ETA in a line: `ETA 12m30s (3 cells left, 2 running)`, or why it is unknown."""
    left = [r for r in rows if r["state"] in ACTIVE]
    if not left:
        return "no cell is waiting or running"
    seconds, why = study_eta(rows)
    running = sum(r["state"] == "RUNNING" for r in left)
    counts = f"{len(left)} cells left, {running} running"
    if seconds is None:
        return f"ETA unknown ({why}; {counts})"
    finish = datetime.fromtimestamp(time.time() + seconds).strftime("%H:%M")
    return f"ETA {duration(seconds)}, about {finish} ({counts})"


def watch(
    study_name: str,
    storage_url: Optional[str] = None,
    interval: float = 5.0,
    out: Optional[TextIO] = None,
    sleep: Callable[[float], None] = time.sleep,
    max_refreshes: Optional[int] = None,
) -> int:
    """Print the status and ETA to `out` (default: stdout) every `interval` seconds (clearing a
    terminal's screen first) until no cell is waiting or running, or `max_refreshes` times;
    returns the number of refreshes. Ctrl-C is the caller's."""
    out = out or sys.stdout
    clear = out.isatty()
    refreshes = 0
    while True:
        rows = status_rows(study_name, storage_url)
        text = f"{format_status(rows)}\n{eta_line(rows)}"
        stamp = time.strftime("%H:%M:%S")
        if clear:
            out.write(f"\033[H\033[2J{study_name} at {stamp} (every {interval:g}s, Ctrl-C to stop)\n{text}\n")
        else:
            out.write(f"{stamp} {study_name}\n{text}\n\n")
        out.flush()
        refreshes += 1
        if not any(r["state"] in ACTIVE for r in rows) or refreshes == max_refreshes:
            return refreshes
        sleep(interval)
