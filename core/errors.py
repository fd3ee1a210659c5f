"""The project's error tree. Messages say what to do; only the edges turn these into exit codes."""


class RagError(Exception):
    """Base class for errors a user can act on."""


class ConfigError(RagError):
    """Settings are missing, contradictory or name an unknown provider."""


class EmbeddingMismatchError(RagError):
    """A collection is opened with an embedding model other than the one that built it."""


class SourceError(RagError):
    """A document or data source cannot be read (corrupt, empty, binary, missing)."""


class ProviderError(RagError):
    """A model provider (LLM or embeddings) failed in a way the user must fix."""
