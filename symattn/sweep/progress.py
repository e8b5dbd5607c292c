"""What a running cell reports to its trial, so that `symattn status` reads a study from the Optuna
store alone (MLflow is not imported): the cell's MLflow run id when training starts, the step and
validation loss at each evaluation, and the step with its time every few seconds in between; a cell
that fails reports its error in a line (reported by `trial_report.TrialReport`).

From these a reader computes a cell's step rate and ETA, and a study's ETA (`cell_eta`,
`study_eta`: pure functions of the reported attributes, no clock of their own)."""

from __future__ import annotations

from typing import Optional

from symattn import keys

# A cell's progress, as user attributes of its trial (beside those named in `records`): its run id,
# the last step and when it was reported (Unix time), the last validation loss, and the step and
# time at which this attempt's training began (what its step rate counts from); and the error it
# failed with, in a line (`error_line`).
RUN_ID, STEP, VAL_LOSS = "mlflow_run_id", "step", "val_loss"
STEP_TIME, TRAIN_START, ERROR = "step_time", "train_start", "error"
PROGRESS = (RUN_ID, STEP, VAL_LOSS, STEP_TIME, TRAIN_START, ERROR)  # a retry reports its own
REPORT_SECONDS = 5.0  # the step is reported at most this often between evaluations


def cell_rate(attrs: dict) -> Optional[float]:
    """A running cell's training steps per second since this attempt began, from what it reported;
    None before it has reported a step past its start."""
    start, step, at = attrs.get(TRAIN_START), attrs.get(STEP), attrs.get(STEP_TIME)
    if not start or step is None or at is None:
        return None
    step0, time0 = start
    if step <= step0 or at <= time0:
        return None
    return (step - step0) / (at - time0)


def cell_eta(attrs: dict, total: Optional[int], now: float) -> Optional[float]:
    """Seconds until a running cell reaches `total` steps at its rate so far (counted from its last
    report, never below 0); None when unknown."""
    rate = cell_rate(attrs)
    if rate is None or not total:
        return None
    return max(0.0, (total - attrs[STEP]) / rate - (now - attrs[STEP_TIME]))


def study_eta(cells: list[dict]) -> tuple[Optional[float], str]:
    """Seconds until no cell is waiting or running, and why it is unknown (else "").

    `cells`: one dict per cell with `state` (WAITING, RUNNING, COMPLETE, PRUNED, FAIL), `kind`
    (pre-training or fine-tuning: each is measured on its own), and as known `seconds` (a finished
    cell's duration), `elapsed` (a running cell's time so far), `eta` (a running cell's `cell_eta`)
    and `estimate` (a running cell's whole duration at its rate). A cell of a kind takes the mean
    duration of the finished cells of that kind, else the mean estimate of its running ones; the
    work left is shared by the running cells (one per busy slot), and is at least the longest
    running cell's."""
    left = [c for c in cells if c["state"] in ("WAITING", "RUNNING")]
    if not left:
        return 0.0, ""
    running = [c for c in left if c["state"] == "RUNNING"]
    if not running:
        return None, "no cell is running"
    per_cell = {}
    for kind in {c["kind"] for c in cells}:
        done = [c["seconds"] for c in cells if c["kind"] == kind and c.get("seconds") is not None]
        guesses = [c["estimate"] for c in running if c["kind"] == kind and c.get("estimate") is not None]
        measured = done or guesses
        per_cell[kind] = sum(measured) / len(measured) if measured else None
    work, longest = 0.0, 0.0
    for c in left:
        if c.get("eta") is not None:
            rest = c["eta"]
        elif per_cell[c["kind"]] is not None:
            rest = max(0.0, per_cell[c["kind"]] - (c.get("elapsed") or 0.0))
        else:
            return None, f"no {c['kind']} cell measured yet"
        work += rest
        if c["state"] == "RUNNING":
            longest = max(longest, rest)
    return max(work / len(running), longest), ""


def duration(seconds: Optional[float]) -> str:
    """`7s`, `4m05s`, `1h02m`; `?` for None."""
    if seconds is None:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def progress_text(attrs: dict, total: Optional[int], now: float) -> str:
    """A running cell's progress in a few words: `step 1,200/3,000, val/loss 6.1234, 4.1 steps/s,
    ETA 7m20s` (what is not yet reported is left out; `ETA ?` until a rate is measured)."""
    parts = [f"step {attrs.get(STEP, 0):,}" + (f"/{total:,}" if total else "")]
    if attrs.get(VAL_LOSS) is not None:
        parts.append(f"{keys.VAL_LOSS} {attrs[VAL_LOSS]:.4f}")
    rate = cell_rate(attrs)
    if rate is not None:
        parts.append(f"{rate:.1f} steps/s")
    parts.append(f"ETA {duration(cell_eta(attrs, total, now))}")
    return ", ".join(parts)


def error_line(exc: BaseException, limit: int = 500) -> str:
    """An exception in a line: its type and the first line of its message (`NonFiniteLoss: training
    loss became nan by step 12; lower optim.lr or enable grad_clip`), at most `limit` characters."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0].strip()}" if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
