"""A model-handler wrapper that lets bookkeeping records ride through RunInference without reaching the model.

The build keeps every stage from probe to commit in one fused chain (see ``schemas.work``), so
failures and "clip needed no prompt" records travel with the prompts. They are rare; this
wrapper hands only real model inputs to the wrapped handler and returns the others in place,
like Beam's own ``KeyedModelHandler`` wraps a handler to carry keys.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from apache_beam.ml.inference.base import ModelHandler

PASSED_BYTES = 64


class _SkipPassing:
    """A preprocess function applied to model inputs only."""

    def __init__(self, fn: Callable[[Any], Any], passes: Callable[[Any], bool]) -> None:
        self._fn = fn
        self._passes = passes
        hints = getattr(fn, "_type_hints", None)
        if hints is not None:  # the types ``fn`` declares (beam.typehints) are this one's too: Beam's Map reads them
            self._type_hints = hints

    def __call__(self, item: Any) -> Any:
        return item if self._passes(item) else self._fn(item)


class PassThroughHandler(ModelHandler[Any, Any, Any]):
    """Wraps ``inner``: items for which ``passes(item)`` is true skip the model and come out unchanged.

    The wrapped handler's preprocess functions run on model inputs only, and one that turns an
    input into a passing record (a prompt that could not be built) takes it off the model path too.
    """

    def __init__(self, inner: ModelHandler, passes: Callable[[Any], bool]) -> None:
        super().__init__()
        self._inner = inner
        self._passes = passes

    def load_model(self) -> Any:
        return self._inner.load_model()

    def run_inference(self, batch: Sequence[Any], model: Any,
                      inference_args: dict[str, Any] | None = None) -> Iterable[Any]:
        positions = [i for i, item in enumerate(batch) if not self._passes(item)]
        results = list(self._inner.run_inference([batch[i] for i in positions], model, inference_args)) \
            if positions else []
        out = list(batch)
        for position, result in zip(positions, results, strict=True):
            out[position] = result
        return out

    def get_num_bytes(self, batch: Sequence[Any]) -> int:
        inputs = [item for item in batch if not self._passes(item)]
        return (self._inner.get_num_bytes(inputs) if inputs else 0) + PASSED_BYTES * (len(batch) - len(inputs))

    def get_preprocess_fns(self) -> Iterable[Callable[[Any], Any]]:
        return [_SkipPassing(fn, self._passes) for fn in self._inner.get_preprocess_fns()]

    def get_postprocess_fns(self) -> Iterable[Callable[[Any], Any]]:
        return [_SkipPassing(fn, self._passes) for fn in self._inner.get_postprocess_fns()]

    def get_metrics_namespace(self) -> str:
        return self._inner.get_metrics_namespace()

    def get_resource_hints(self) -> dict:
        return self._inner.get_resource_hints()

    def batch_elements_kwargs(self) -> Any:
        return self._inner.batch_elements_kwargs()

    def validate_inference_args(self, inference_args: dict[str, Any] | None) -> None:
        return self._inner.validate_inference_args(inference_args)

    def update_model_path(self, model_path: str | None = None) -> None:
        return self._inner.update_model_path(model_path=model_path)

    def should_skip_batching(self) -> bool:
        return self._inner.should_skip_batching()

    def share_model_across_processes(self) -> bool:
        return self._inner.share_model_across_processes()

    def model_copies(self) -> int:
        return self._inner.model_copies()
