"""The index contract between ingest (which writes) and rag, eval and finetune (which read): the
chunk record and its metadata keys (chunks.py), one way to page through a collection, opening the
Chroma collection (store.py), and the lexical index's reader and writer (lexical.py)."""
