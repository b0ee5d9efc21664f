"""Text embeddings of segment rows (sentence-transformers behind Beam's RunInference)."""

from transforms.embed.embedding import (
    DEFAULT_MODEL_ID,
    EMBEDDING_DIM_DEFAULT,
    EmbedSegments,
    TextEmbeddingHandler,
    embed_texts,
    embedding_dim,
    embedding_metadata,
    load_embedding_model,
    metadata_model,
    model_label,
    resolve_model,
    row_text,
)

__all__ = ["DEFAULT_MODEL_ID", "EMBEDDING_DIM_DEFAULT", "EmbedSegments", "TextEmbeddingHandler", "embed_texts",
           "embedding_dim", "embedding_metadata", "load_embedding_model", "metadata_model", "model_label", "resolve_model", "row_text"]
