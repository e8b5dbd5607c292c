"""A sweep: Optuna as the queue of a design's cells, MLflow as the record of their runs.

Each cell is one enqueued Optuna trial, handed out exactly once; workers pinned to devices pull
cells until none are left; each cell trains in a child process of its own. A cell whose MLflow run
is FINISHED is never run again. A cell whose worker died stops sending heartbeats; the next worker
that looks fails it and enqueues a retry, which resumes the same MLflow run from its last
checkpoint. The Optuna trial and the MLflow run name each other.

Modules: `spec` (what a sweep is: a base config and axes, expanded into cells), `storage` (Optuna
storage URLs), `records` (what a cell's trial and run record, and how one finds the other),
`queue`, `search` (a TPE search per cell on the final loss or the escape step; the best values
for a `tuned_from` spec), `worker`, `status`, `dry_run`,
`cell_server` (the process cells fork from) and `optuna_internals` (the one module that calls
Optuna's private API). This package imports nothing heavy itself.
"""
