"""The build's flow without Beam: parallel decode processes feeding one model, for machines without Beam.

The GPU machine lent to this project has no Beam (and no room to carry it), so the GPU bench
drives the build's own code here: ``probe_video``, ``plan_video``, the killable decode process
(``IsolatedDecoder``, decoding ahead as it does beside a GPU), ``expand_tasks``/``build_prompt`` and
``PlmRunner.answer`` in fixed batches of whole rows, as ``PlmModelHandler`` batches them under
RunInference. What it leaves out is Beam itself and the Parquet write.

``decoders`` is how many videos decode at once, each in its own process: 1 is what one Beam
worker thread does; more is what a worker with several threads (or several workers feeding one
GPU) does. Comparing the two shows whether CPU decoding starves the GPU.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from schemas.config import ClipSpec, DecodeConfig
from schemas.manifest import Question
from schemas.records import ClipFrames, ClipPrompt, VideoClips, VideoInput

if TYPE_CHECKING:
    from model_runner.loading import LoadedPlm
    from model_runner.runner import PlmRunner

_END = object()


@dataclass(frozen=True)
class FlowResult:
    """What one run of the flow did, and how long it took."""

    videos: int
    video_seconds: float
    clips: int
    rows: int
    batches: int
    failures: int
    wall_s: float
    model_s: float

    @property
    def video_hours_per_hour(self) -> float:
        """Indexed video time over the run's wall time (video-hours per GPU-hour when the run owns the GPU)."""
        return self.video_seconds / self.wall_s if self.wall_s > 0 else 0.0


def decoded_clips(uris: list[str], spec: ClipSpec, decode: DecodeConfig, questions: tuple[Question, ...],
                  decoders: int, seconds: list[float], waiting: int = 8) -> Iterator[ClipFrames]:
    """Every clip of ``uris``, decoded by ``decoders`` killable decode processes at once, as they come.

    Each decoder thread probes and plans a video, then streams its clips from its own decode
    process into one queue of at most ``waiting`` clips. A video's duration is appended to
    ``seconds`` once all its clips are out.
    """
    from transforms.decode.isolated import IsolatedDecoder
    from transforms.plan.planning import plan_video
    from transforms.probe.probing import probe_video

    todo: queue.Queue = queue.Queue()
    for uri in uris:
        todo.put(uri)
    ready: queue.Queue = queue.Queue(maxsize=max(1, waiting))
    failures: list[BaseException] = []

    def work() -> None:
        decoder = IsolatedDecoder()
        decoder.start()
        try:
            while True:
                try:
                    uri = todo.get_nowait()
                except queue.Empty:
                    return
                info = probe_video(VideoInput(uri=uri))
                video = VideoClips(info=info, clips=tuple(plan_video(info, spec, decode.num_frames, questions)))
                for clip in decoder.decode(video, decode):
                    ready.put(clip)
                seconds.append(info.duration_s)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            failures.append(exc)
        finally:
            decoder.close()
            ready.put(_END)

    threads = [threading.Thread(target=work, daemon=True, name=f"decode-{i}") for i in range(max(1, decoders))]
    for thread in threads:
        thread.start()
    running = len(threads)
    while running:
        item = ready.get()
        if item is _END:
            running -= 1
            continue
        yield item
    if failures:
        raise RuntimeError(f"decoding failed: {failures[0]}") from failures[0]


def run_flow(uris: list[str], runner: PlmRunner, loaded: LoadedPlm, *, spec: ClipSpec, decode: DecodeConfig,
             tasks: tuple[str, ...], caption_tokens: int, batch_size: int, questions: tuple[Question, ...] = (),
             decoders: int = 1) -> FlowResult:
    """Index ``uris`` through decode, prompts and ``runner.answer`` in batches of ``batch_size`` rows."""
    from transforms.prompt.building import build_prompt, expand_tasks

    start = time.perf_counter()
    seconds: list[float] = []
    pending: list[ClipPrompt] = []
    clips = rows = batches = failures = 0
    model_s = 0.0

    def infer(batch: list[ClipPrompt]) -> None:
        nonlocal rows, batches, failures, model_s
        began = time.perf_counter()
        answers = runner.answer(batch, loaded)
        model_s += time.perf_counter() - began
        rows += len(batch)
        batches += 1
        failures += sum(1 for answer in answers if not isinstance(answer, str))

    for clip in decoded_clips(uris, spec, decode, questions, decoders, seconds):
        clips += 1
        pending.extend(build_prompt(task) for task in expand_tasks(clip, tasks, caption_tokens))
        while len(pending) >= batch_size:
            infer(pending[:batch_size])
            pending = pending[batch_size:]
    if pending:
        infer(pending)
    return FlowResult(videos=len(seconds), video_seconds=sum(seconds), clips=clips, rows=rows, batches=batches,
                      failures=failures, wall_s=time.perf_counter() - start, model_s=model_s)


def default_decoders() -> int:
    """Decode processes for a machine: all its cores but two (the model's Python thread and the GPU feeder)."""
    return max(1, (os.cpu_count() or 1) - 2)
