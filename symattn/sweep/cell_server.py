"""The process that a worker's sweep cells fork from (multiprocessing's forkserver).

It starts once per worker, as early as possible, and imports what every cell needs (torch,
Lightning, MLflow's SQL store, the data layer) while the worker sets itself up. Each cell then
forks from it with all of that loaded and starts training in about a second. Imported by the
worker, this module stays light, so that the server starts before the worker's own imports; the
server imports it too (its preload), and only there does it load the cells' imports.

The server keeps the environment it started with; each cell gets the worker's environment at its
launch (`worker._cell_main`), except what the server's imports already read (OMP_*, TORCH_LOGS, ...).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
from multiprocessing import forkserver

_IN_SERVER = "SYMATTN_CELL_SERVER"  # set in the server's environment only


def context():
    """The forkserver context, its server started now (idempotent)."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    os.environ[_IN_SERVER] = "1"  # the server inherits the environment it starts with
    try:
        forkserver.ensure_running()
    finally:
        del os.environ[_IN_SERVER]
    return ctx


def _preload() -> None:
    # The server's own signals: Ctrl-C is the worker's to handle (the server would otherwise die of
    # it while still importing), and a SIGTERM sent to the whole process group must not take the
    # server down before the cells have stopped cleanly (a cell dies with the server). Each cell
    # restores both.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        import sqlalchemy.orm

        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401  MLflow's SQL store
        import symattn.data.masking  # noqa: F401
        import symattn.data.pretraining  # noqa: F401
        import symattn.run  # noqa: F401
        import symattn.sweep.worker  # noqa: F401

        # MLflow's ORM classes are mapped on first use; do it here, once, not in every cell.
        sqlalchemy.orm.configure_mappers()
    except Exception as exc:  # noqa: BLE001  the server must live: a cell then imports what it needs
        logging.getLogger("symattn.sweep").warning("cell server: preloading failed (%s); cells import on their own", exc)


if os.environ.get(_IN_SERVER):
    _preload()
