"""``FlowRecordCoder``: the build's frame-carrying steps are sized by their arrays, never by pickling them."""

from __future__ import annotations

import datetime as dt
import pickle
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.pipeline import PipelineVisitor

from index.runs import RunRecord
from pipeline.graph import pipeline
from schemas.config import BuildConfig, ClipSpec, DecodeConfig, ModelConfig
from schemas.records import ClipPlan, ClipPrompt, FlowRecord, approx_bytes
from schemas.rows import RunContext
from transforms.coders import FlowRecordCoder


@dataclass(frozen=True)
class Unpicklable(FlowRecord):
    """Fault injector: a record whose pickling fails, so sizing it by pickling would raise."""

    frames: np.ndarray

    def __reduce__(self) -> tuple:
        raise pickle.PicklingError("sized by pickling")


def a_prompt(frames: np.ndarray, prompt: str = "Describe.") -> ClipPrompt:
    clip = ClipPlan(video_id="v", uri="a.mp4", clip_index=0, start_s=0.0, end_s=4.0, sample_frame_indices=(0, 30),
                    sample_times=(0.0, 1.0), sample_end_times=(1.0, 4.0))
    return ClipPrompt(clip=clip, frames=frames, task="caption", prompt=prompt, max_new_tokens=8)


def test_the_estimate_counts_each_array_once_and_never_pickles() -> None:
    frames = np.zeros((32, 448, 448, 3), np.uint8)
    coder = FlowRecordCoder()
    assert coder.estimate_size(Unpicklable(frames)) == frames.nbytes
    with pytest.raises(pickle.PicklingError):
        coder.encode(Unpicklable(frames))
    one = a_prompt(frames)
    assert frames.nbytes < approx_bytes(one) < frames.nbytes + 1000
    # A caption and a question on one clip share its frames: counted once, as in memory.
    assert approx_bytes([one, a_prompt(frames, "What?")]) < frames.nbytes + 2000
    # Beam sizes a batch through ListCoder, element by element, with this coder's estimate.
    batch = beam.coders.ListCoder(coder).get_impl().estimate_size([one, one])
    assert 2 * frames.nbytes <= batch < 2 * frames.nbytes + 2000


def test_it_round_trips_a_record() -> None:
    frames = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    coder = FlowRecordCoder()
    back = coder.decode(coder.encode(a_prompt(frames)))
    assert back == a_prompt(frames) and np.array_equal(back.frames, frames)
    assert beam.coders.registry.get_coder(FlowRecord) == coder


def test_the_build_sizes_its_frame_carrying_steps_with_it(tmp_path) -> None:
    config = BuildConfig(input=str(tmp_path), output=str(tmp_path / "out"), clips=ClipSpec(mode="fixed", window_s=4),
                         decode=DecodeConfig(), model=ModelConfig(model="unused", device="cpu"))
    run = RunContext(run_id="r", settings_hash="s", model_id="m", generation="{}", pipeline_version="v",
                     created_at=dt.datetime.now(dt.UTC))
    record = RunRecord(run_id="r", status="running", started_at="t", input=config.input, settings_hash="s",
                       model_id="m", pipeline_version="v", force=True)
    p = beam.Pipeline(runner="FnApiRunner")
    pipeline(p, config, run, record, "unused", force=True)
    coders: dict[str, str] = {}

    class Coders(PipelineVisitor):
        def visit_transform(self, node) -> None:  # noqa: ANN001 - Beam's visitor signature
            for output in node.outputs.values():
                coders[node.full_label] = type(beam.coders.registry.get_coder(output.element_type)).__name__

    p.visit(Coders())
    assert coders["Decode"] == coders["Tasks"] == coders["Infer/BeamML_RunInference_Preprocess-0"] == "FlowRecordCoder"
    assert coders["Infer/BatchElements/ParDo(_GlobalWindowsBatchingDoFn)"] == "ListCoder"
