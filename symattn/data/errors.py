"""The data layer's error: one line saying what is wrong and how to fix it."""

from __future__ import annotations


class DataError(ValueError):
    """Bad or missing data, a failed fetch, or a cache entry that cannot be used.

    A `ValueError`, so the command line prints it as one line.
    """
