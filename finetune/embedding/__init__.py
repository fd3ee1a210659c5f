"""Fine-tuning the embedding model: training pairs (data.py), sentence-transformers training
(train.py), the linear query adapter (adapter.py), held-out retrieval figures (evaluate.py) and
the command line (cli.py) that registers candidates for the evaluation gate."""
