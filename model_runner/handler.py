"""``PlmModelHandler``: PerceptionLM behind Beam's RunInference (the generation itself is ``PlmRunner``'s)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from model_runner.loading import LoadedPlm
from model_runner.runner import CARRIED_LISTENERS, RUNAWAY_LISTENERS, PlmRunner, batch_bytes
from model_runner.stopping import RunawaySettings
from schemas.records import ClipPrompt

_RUNAWAY_ROWS = Metrics.counter("PlmModelHandler", "runaway_rows")
RUNAWAY_LISTENERS.append(_RUNAWAY_ROWS.inc)
_PREFIXES_CARRIED = Metrics.counter("PlmModelHandler", "prefixes_carried")
CARRIED_LISTENERS.append(_PREFIXES_CARRIED.inc)


class PlmModelHandler(PlmRunner, ModelHandler[ClipPrompt, PredictionResult, LoadedPlm]):
    """``PlmRunner`` with RunInference's hooks: load, run a batch, count its bytes, batch sizes.

    Batches are fixed at ``max_batch_size`` rows whenever the bundle holds that many
    (``min_batch_size`` defaults to it). Beam's adaptive batching starts at one row and fits batch
    time as linear in rows: on a GPU a batch of 16 costs about what one row does, and on the tiny
    CPU model it settled at 1-2 rows (31 model calls for 48 clips instead of 12), which also
    split a clip's caption and questions across many small batches.
    """

    def __init__(self, model: str, *, device: str = "auto", torch_threads: int = 0,
                 max_batch_size: int = 4, min_batch_size: int | None = None, share_prefix: bool = True,
                 runaway_guard: RunawaySettings | None = None, carry_prefix: bool = True) -> None:
        ModelHandler.__init__(self)
        PlmRunner.__init__(self, model, device=device, torch_threads=torch_threads, share_prefix=share_prefix,
                           runaway_guard=runaway_guard, carry_prefix=carry_prefix)
        fixed = max_batch_size if min_batch_size is None else min_batch_size
        self._batch = {"min_batch_size": fixed, "max_batch_size": max_batch_size}

    def load_model(self) -> LoadedPlm:
        return self.load()

    def run_inference(self, batch: Sequence[ClipPrompt], model: LoadedPlm,
                      inference_args: dict[str, Any] | None = None) -> Iterable[PredictionResult]:
        return [PredictionResult(example=item, inference=answer, model_id=model.model_id)
                for item, answer in zip(batch, self.answer(batch, model), strict=True)]

    def get_num_bytes(self, batch: Sequence[ClipPrompt]) -> int:
        """The batch's size for Beam's byte metrics, counted without pickling it.

        Beam's default pickles the whole batch (tens of MB of frames) only to take its length.
        Like Beam's own PyTorch and Hugging Face handlers, count the array bytes instead: each
        distinct frames array once (a clip's prompts share one), plus the prompt text.
        """
        return batch_bytes(batch)

    def batch_elements_kwargs(self) -> dict[str, int]:
        return dict(self._batch)

    def share_model_across_processes(self) -> bool:
        # One copy of the weights per GPU, shared by the worker's SDK processes. Asked while the
        # graph is built, often on a launcher without a GPU, so it must not insist on one.
        return self._device == "cuda" or (self._device == "auto" and torch.cuda.is_available())

    def get_metrics_namespace(self) -> str:
        return "PlmModelHandler"
