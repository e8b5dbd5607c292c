"""Fine-tuning pre-trained weights on downstream tasks: where the weights come from (`source`: a
run's kept step, a kept file, an HF folder) and the fine-tuning runs, one MLflow run per seed
(`run`)."""
