"""The chat app: a RAG pipeline over the Chroma collection, its answer providers and the web UI."""
