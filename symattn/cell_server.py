"""The process that a worker's sweep cells fork from (multiprocessing's forkserver).

It starts once per worker, as early as possible, and imports what every cell needs (torch,
Lightning, MLflow's SQL store, the data layer: about 15 s on a small CPU) while the worker sets
itself up. Each cell then forks from it with all of that loaded and starts training in about a
second. This module stays light to import, so that the server starts before the worker's own imports.

The server keeps the environment it started with; each cell gets the worker's environment at its
launch (symattn.sweep), except what the server's imports already read (OMP_*, TORCH_LOGS, ...).
"""

from __future__ import annotations

import multiprocessing as mp
from multiprocessing import forkserver

PRELOAD = ["symattn.cell_imports"]


def context():
    """The forkserver context, its server started now (idempotent)."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    forkserver.ensure_running()
    return ctx
