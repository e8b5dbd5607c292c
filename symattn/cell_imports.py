"""Imported once by the cell server (symattn.cell_server): everything a sweep cell would otherwise
import itself, each time, before its first step."""

import sqlalchemy.orm

import mlflow.store.tracking.sqlalchemy_store  # noqa: F401  MLflow's SQL store: ~3 s to import
import symattn.data  # noqa: F401
import symattn.run  # noqa: F401

# MLflow's ORM classes are mapped on first use (~1 s); do it here, once, not in every cell.
sqlalchemy.orm.configure_mappers()
