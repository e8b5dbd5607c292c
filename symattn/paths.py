"""Where local stores live by default: beside the project when run from a checkout, else the CWD."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse


def code_checkout() -> Path | None:
    """The source checkout holding this package (an editable install); None for an installed one.
    Where the code comes from, whatever `SYMATTN_HOME` says about where the stores are."""
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file() and (checkout / "symattn").is_dir():
        return checkout
    return None


def project_root() -> Path:
    """The checkout holding this package (an editable install), else the current directory.

    `SYMATTN_HOME` overrides both, e.g. to keep stores on a larger disk.
    """
    if os.environ.get("SYMATTN_HOME"):
        return Path(os.environ["SYMATTN_HOME"]).resolve()
    return code_checkout() or Path.cwd()


def default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def default_checkpoint_dir() -> Path:
    return project_root() / "checkpoints"


def resolve_uri(uri: Optional[str]) -> str:
    """The MLflow tracking URI in force: the one given, else the default store."""
    return uri or default_tracking_uri()


def is_server(uri: str) -> bool:
    """Whether the store is an MLflow server (reached over HTTP), which other machines share."""
    return uri.startswith(("http://", "https://", "databricks"))  # `databricks` alone is one too


def sqlite_path(uri: str) -> Optional[Path]:
    """The database file of a `sqlite:///` tracking URI (None for any other store)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = Path(uri.removeprefix("sqlite:///"))
    return path if path.name else None


def check_uri(uri: Optional[str] = None) -> str:
    """Refuse a tracking URI MLflow cannot use, before anything is created (MLflow not imported)."""
    uri = resolve_uri(uri)
    scheme = urlparse(uri).scheme
    path = sqlite_path(uri)
    if scheme == "sqlite" and path is None:
        raise ValueError(
            f"tracking URI {uri!r} names no database file; use sqlite:///mlflow.db (three slashes, then "
            "a relative path) or sqlite:////abs/path/mlflow.db"
        )
    if path is not None and not path.parent.exists():
        raise ValueError(
            f"tracking store folder {str(path.parent)!r} does not exist; create it or fix tracking.uri"
        )
    if scheme != "sqlite" and scheme.split("+")[
        0
    ] not in (  # a database may name its driver: postgresql+psycopg2
        "http",
        "https",
        "file",
        "databricks",
        "postgresql",
        "mysql",
        "mssql",
        "",
    ):
        raise ValueError(
            f"tracking URI {uri!r} is not one MLflow can use; use sqlite:///path/mlflow.db or http://host:port"
        )
    return uri


def check_writable(uri: str) -> None:
    """Refuse a sqlite store that cannot be written (a read-only folder or file system) before a run
    or a worker starts, rather than failing at its first write."""
    db = sqlite_path(uri)
    if db is None:
        return
    folder = db.resolve().parent
    if not os.access(folder, os.W_OK) or (db.exists() and not os.access(db, os.W_OK)):
        raise ValueError(
            f"the MLflow store {db} cannot be written (read-only); make {folder} writable or give "
            "another tracking.uri"
        )


def redact(url: str) -> str:
    """A storage URL fit for logs: its password replaced by ***."""
    if "://" not in url:
        return url
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("://", 1)[0] + "://..."
