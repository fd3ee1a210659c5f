"""Fine-tuning a cross-encoder reranker on the product's own data (see README.md)."""
