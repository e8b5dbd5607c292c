"""Imported once by the cell server (symattn.cell_server): everything a sweep cell would otherwise
import itself, each time, before its first step."""

import logging
import signal

# The server's own signals: Ctrl-C is the worker's to handle (the server would otherwise die of it
# while still importing), and a SIGTERM sent to the whole process group must not take the server
# down before the cells have stopped cleanly (a cell dies with the server). Each cell restores both.
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)

try:
    import sqlalchemy.orm

    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401  MLflow's SQL store: ~3 s to import
    import symattn.data.masking  # noqa: F401
    import symattn.data.pretraining  # noqa: F401
    import symattn.run  # noqa: F401

    # MLflow's ORM classes are mapped on first use (~1 s); do it here, once, not in every cell.
    sqlalchemy.orm.configure_mappers()
except Exception as exc:  # noqa: BLE001  the server must live: a cell then imports what it needs itself
    logging.getLogger("symattn.sweep").warning("cell server: preloading failed (%s); cells import on their own", exc)
