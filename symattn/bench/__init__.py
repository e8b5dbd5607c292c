"""`symattn bench` (`command`): the training step of every variant beside HF BERT, its spec, batches
and models, the timed race and its table; and what a sweep cell costs besides its steps
(`cell_overhead`)."""
