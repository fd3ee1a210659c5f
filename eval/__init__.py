"""Evaluation: Ragas scoring of model versions on evaluation sets, champion against challenger with
the promotion gate, scheduled evaluations and reports. Writes eval runs and promotions."""
