"""Evaluation (coming with its issue): Ragas scoring of champion against challenger on one
evaluation set, the promotion gate, and rollback. Writes eval runs and promotions."""
