"""Fine-tuning (coming with its issue): chat logs to graded datasets, OpenAI/Azure and local LoRA
jobs, and embedding-model fine-tuning. Writes datasets, jobs and candidate models."""
