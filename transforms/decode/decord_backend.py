"""decord decoding, isolated in a child process under a hard time limit.

decord 0.6.0 is unmaintained: it cannot open AV1, its ``get_batch`` can hang in native code,
and it has grown to several GB on long decodes. It therefore runs in a spawned child process
that the parent kills when the time limit passes; clips come back one at a time at PLM size.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from functools import partial

import numpy as np

from schemas.config import DecodeConfig
from schemas.records import ClipFrames, VideoClips
from transforms import storage
from transforms.decode.base import DecodeError, DecodeTimeout
from transforms.decode.frames import FrameImages

log = logging.getLogger(__name__)

_DONE = "done"
_ERROR = "error"
_CLIP = "clip"


def _decode_in_child(path: str, video: VideoClips, config: DecodeConfig, out: mp.Queue) -> None:
    """Child process body: decode every clip with decord and send each back."""
    try:
        import decord

        import torchvision_shim  # noqa: F401

        reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=config.threads or 0)
        count = len(reader)
        if count > config.max_decoded_frames:
            raise DecodeTimeout(f"the video has {count} frames, more than the frame cap of {config.max_decoded_frames}")
        starts = np.asarray(reader.get_frame_timestamp(np.arange(count))[:, 0], dtype=np.float64)
        starts -= starts[0] if count else 0.0
        size = config.frame_size
        for clip in video.clips:
            # Match planned times to decord's own frame times (float32 seconds), never to t * fps:
            # the nearest frame start.
            planned = np.asarray(clip.sample_times)
            right = np.clip(np.searchsorted(starts, planned), 1, count - 1)
            wanted = np.where(np.abs(starts[right - 1] - planned) <= np.abs(starts[right] - planned), right - 1, right)
            wanted = np.clip(wanted, 0, count - 1)
            unique = sorted({int(i) for i in wanted})
            by_index = dict(zip(unique, reader.get_batch(unique).asnumpy(), strict=True))
            # decord applies the display matrix itself (its frames come out upright): rotation 0 here.
            images = {i: FrameImages(partial(np.asarray, by_index[i]), size,
                                     partial(_decoder_resize, by_index[i], size)
                                     if config.resize == "decoder" else None) for i in unique}
            frames = [images[int(i)].plain() for i in wanted]
            regions = tuple(
                (region.region_id, np.stack([images[int(i)].with_box(box) if box is not None else images[int(i)].plain()
                                             for i, box in zip(wanted, region.boxes, strict=True)]))
                for region in clip.regions)
            # Keep the planned times where decord agrees (it reports float32 seconds).
            used = tuple(p if abs(p - float(starts[int(i)])) < 1e-3 else float(starts[int(i)])
                         for p, i in zip(clip.sample_times, wanted, strict=True))
            out.put((_CLIP, clip.clip_index, used, (np.stack(frames), regions)))
            del by_index, images
        out.put((_DONE, None, None, None))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which decides
        out.put((_ERROR, type(exc).__name__, str(exc), None))


def _decoder_resize(rgb: np.ndarray, size: int) -> np.ndarray:
    """decord's counterpart of resizing in the decoder: a plain bicubic interpolation."""
    import torch
    import torch.nn.functional as functional

    tensor = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float()
    out = functional.interpolate(tensor, size=(size, size), mode="bicubic", align_corners=False)
    return out.clamp(0, 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()


class DecordDecoder:
    """decord backend behind the same interface as PyAV, in a killable child process."""

    def decode(self, video: VideoClips, config: DecodeConfig) -> Iterator[ClipFrames]:
        info = video.info
        staged_dir = None
        path = info.uri[len("file://"):] if info.uri.startswith("file://") else info.uri
        if storage.is_remote(info.uri):
            # decord reads paths (or whole files into memory); stage remote videos to disk once.
            staged_dir = tempfile.mkdtemp(prefix="plm-decord-")
            path = os.path.join(staged_dir, "video" + os.path.splitext(info.uri)[1])
            with storage.open_read(info.uri) as src, open(path, "wb") as dst:
                shutil.copyfileobj(src, dst, 8 << 20)
        context = mp.get_context("spawn")
        results: mp.Queue = context.Queue(maxsize=2)
        child = context.Process(target=_decode_in_child, args=(path, video, config, results), daemon=True)
        child.start()
        deadline = time.monotonic() + config.timeout_s
        clips = {clip.clip_index: clip for clip in video.clips}
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DecodeTimeout(f"decord took longer than the {config.timeout_s:g} s limit; "
                                        "the child process was killed")
                try:
                    kind, a, b, frames = results.get(timeout=min(remaining, 5.0))
                except queue.Empty:
                    if not child.is_alive():
                        raise DecodeError(f"the decord process died (exit code {child.exitcode})") from None
                    continue
                if kind == _DONE:
                    return
                if kind == _ERROR:
                    raise (DecodeTimeout if a == "DecodeTimeout" else DecodeError)(f"decord failed: {a}: {b}")
                clip = clips[a]
                plain, regions = frames
                if b != clip.sample_times:
                    ends = tuple(max(e, u) for e, u in zip(clip.sample_end_times, b, strict=True))
                    clip = replace(clip, sample_times=b, sample_end_times=ends)
                yield ClipFrames(clip=clip, frames=plain, region_frames=regions)
        finally:
            if child.is_alive():
                child.kill()
            child.join(timeout=5)
            results.close()
            if staged_dir:
                shutil.rmtree(staged_dir, ignore_errors=True)
