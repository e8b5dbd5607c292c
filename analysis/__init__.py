"""Analysis of symattn runs and of the ACL 2024 paper's published results.

One data path for both: runs (from MLflow, `analysis.mlflow_runs`, or the paper's CSVs,
`analysis.paper_results`) become tidy pandas frames (`analysis.frames`), from which convergence
measures (`analysis.convergence`), statistics (`analysis.stats`), GLUE aggregates (`analysis.glue`),
figures (in the style of `analysis.figures`: `loss_figures`, `convergence_figures`, ...) and tables
(`analysis.tables`) are computed. `analysis.report` chains them for the `symattn figures` command.

Submodules are imported on demand so that `import analysis` stays cheap (no MLflow, no pyplot).
"""

from analysis.paths import PACKAGE_DIR, REFERENCE_DIR

__all__ = ["PACKAGE_DIR", "REFERENCE_DIR"]
