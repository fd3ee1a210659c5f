"""Evaluation: Ragas scoring of model versions on evaluation sets, champion against challenger with
the promotion gate, scheduled evaluations and reports. Writes eval runs and promotions."""

import os

# Ragas reports usage to its makers unless told not to; this product never phones home.
os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")
