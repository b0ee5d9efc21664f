"""RunInference batches of ``PlmModelHandler``: full batches whatever the timings, not Beam's adaptive ramp."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from model_runner.handler import PlmModelHandler


class RecordingHandler(PlmModelHandler):
    """Fault injector: the real handler's batching settings, with a model call that records the batch
    size and takes time linear in rows (as a CPU model does: the case where Beam's estimator kept
    batches at 1-2 rows)."""

    sizes: list[int] = []

    def load_model(self) -> Any:
        return None

    def run_inference(self, batch: Sequence[Any], model: Any, inference_args: dict[str, Any] | None = None
                      ) -> Iterable[Any]:
        RecordingHandler.sizes.append(len(batch))
        time.sleep(0.02 * len(batch))
        return [item * 10 for item in batch]

    def get_num_bytes(self, batch: Sequence[Any]) -> int:
        return 8 * len(batch)


def test_the_batch_size_is_fixed_by_default() -> None:
    assert PlmModelHandler("unused", device="cpu", max_batch_size=16).batch_elements_kwargs() == {
        "min_batch_size": 16, "max_batch_size": 16}
    # Adaptive batching stays available on request.
    assert PlmModelHandler("unused", device="cpu", max_batch_size=16, min_batch_size=1).batch_elements_kwargs() == {
        "min_batch_size": 1, "max_batch_size": 16}


def test_run_inference_fills_each_batch() -> None:
    RecordingHandler.sizes = []
    with TestPipeline(runner="FnApiRunner") as p:
        out = (p | beam.Create(list(range(24)), reshuffle=False)
               | RunInference(RecordingHandler("unused", device="cpu", max_batch_size=4)))
        assert_that(out, equal_to([i * 10 for i in range(24)]))
    # Beam's own default (min 1) starts at one row and ramps: [1, 2, ...]. Fixed: six batches of four.
    assert RecordingHandler.sizes == [4] * 6
