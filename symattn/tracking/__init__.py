"""What MLflow holds and how it is browsed: the stores, run lookup and batched metric writes
(`store`), `symattn ui` (`ui`, on a study's comparison: `ui_view`), and the servers it starts,
which die with it (`guard`)."""
