"""Optuna storages from URLs: a journal file (the default, safe for parallel workers), sqlite:///,
postgresql:// or mysql://."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import optuna

from symattn.paths import project_root, redact


def default_storage() -> str:
    return str(project_root() / "optuna.journal")


def open_storage(url: Optional[str] = None) -> optuna.storages.BaseStorage:
    """An Optuna storage from a URL (sqlite:///, postgresql://, mysql://) or a journal file path."""
    url = url or default_storage()
    if "://" in url and not url.startswith("journal://"):
        if not url.startswith(("sqlite:", "postgresql", "mysql")):
            raise ValueError(
                f"Optuna storage {redact(url)!r} is not understood; use a journal file path, sqlite:///, or postgresql://"
            )
        try:
            return optuna.storages.RDBStorage(_with_driver(url), skip_compatibility_check=False)
        except Exception as exc:  # unreachable server, bad credentials, missing driver
            why = " ".join(str(exc).split())
            if isinstance(exc, ImportError) and exc.__cause__ is not None:
                why += f" ({exc.__cause__})"
            raise ValueError(f"cannot open Optuna storage {redact(url)!r}: {why[:300]}") from None
    path = Path(url.removeprefix("journal://"))
    if not path.parent.is_dir():
        raise ValueError(
            f"folder of Optuna journal {str(path)!r} does not exist; create it or fix stores.optuna"
        )
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def open_existing_storage(study_name: str, url: Optional[str] = None) -> optuna.storages.BaseStorage:
    """The storage of a study that must exist already: a journal or sqlite file that does not exist
    is refused, not created (status and work only read or run what `queue` made)."""
    url = url or default_storage()
    path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else url.removeprefix("journal://")
    if "://" not in path and not Path(path).exists():
        raise ValueError(
            f"no study {study_name!r}: there is no Optuna store at {path}; queue it first with `symattn queue SPEC`"
        )
    return open_storage(url)


def load_study(name: str, storage, url: Optional[str] = None) -> optuna.Study:
    """The study `name`, or a one-line error saying how to create it."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise ValueError(
            f"no study {name!r} in {redact(url or default_storage())}; queue it first with "
            "`symattn queue SPEC`"
        ) from None


def _with_driver(url: str) -> str:
    """A bare postgresql:// URL with a driver that is installed: SQLAlchemy 2.1 maps it to psycopg (3),
    2.0 to psycopg2; either one serves."""
    import importlib.util

    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.drivername != "postgresql":
        return url
    for module, driver in (("psycopg", "postgresql+psycopg"), ("psycopg2", "postgresql+psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return u.set(drivername=driver).render_as_string(hide_password=False)
    raise ValueError("no PostgreSQL driver is installed: pip install 'psycopg[binary]' (or psycopg2-binary)")
