"""One pre-training run: `pretrain` puts it together (data, Lightning module `mlm`, Trainer) after
the checks of `preflight`, with the speed settings of `speed`; its parts are where its checkpoints
are (`checkpoints`), what it records in MLflow (`record`), how it is found, locked, resumed or
extended (`identity`), and the callback that ties its life to the store (`lifecycle`)."""
