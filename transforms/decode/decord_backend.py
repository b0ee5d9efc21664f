"""decord decoding behind the same interface as PyAV.

decord 0.6.0 is unmaintained: it cannot open AV1, its ``get_batch`` can hang in native code,
and it has grown to several GB on long decodes. Like every backend it runs inside the isolated
decode process (``transforms.decode.isolated``), which is killed when the time limit passes.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from functools import partial

import numpy as np

from core import storage
from core.paths import is_faithful_text, local_path
from schemas.config import DecodeConfig
from schemas.records import ClipFrames, VideoClips
from transforms.decode.base import DecodeError, DecodeTimeout
from transforms.decode.frames import FrameImages

log = logging.getLogger(__name__)


def _decoder_resize(rgb: np.ndarray, size: int) -> np.ndarray:
    """decord's counterpart of resizing in the decoder: a plain bicubic interpolation."""
    import torch
    import torch.nn.functional as functional

    tensor = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float()
    out = functional.interpolate(tensor, size=(size, size), mode="bicubic", align_corners=False)
    return out.clamp(0, 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()


# decord prefixes its native errors with a log stamp and a source location, and may append a C++ stack trace.
_NATIVE_NOISE = re.compile(r"\[\d\d:\d\d:\d\d\] \S+\.(?:cc|h|cpp):\d+: ")


def decord_error(uri: str, exc: BaseException) -> DecodeError:
    """A decord failure (``DECORDError`` or the bare ``RuntimeError`` its native code raises) as a
    ``DecodeError`` naming the video, with decord's log stamp, source location and stack trace removed."""
    text = str(exc).split("Stack trace", 1)[0]
    text = _NATIVE_NOISE.sub("", text)
    text = " ".join(text.split()).rstrip(" :") or type(exc).__name__
    return DecodeError(f"decord could not decode {uri}: {text[:500]}")


def nearest_frames(starts: np.ndarray, planned: np.ndarray) -> np.ndarray:
    """Indices of the frames whose start times are nearest to the planned times."""
    count = len(starts)
    right = np.clip(np.searchsorted(starts, planned), 1, max(count - 1, 1))
    left = right - 1
    pick = np.where(np.abs(starts[left] - planned) <= np.abs(starts[np.minimum(right, count - 1)] - planned),
                    left, right)
    return np.clip(pick, 0, count - 1)


class DecordDecoder:
    """Decode each clip's sampled frames with decord's ``get_batch``, clips in order."""

    def decode(self, video: VideoClips, config: DecodeConfig) -> Iterator[ClipFrames]:
        import decord

        info = video.info
        deadline = time.monotonic() + config.timeout_s
        staged_dir = None
        path = local_path(info.uri)
        try:
            if storage.opens_by_path(info.uri) and not is_faithful_text(path):
                # decord takes only UTF-8 paths: open a file name that is not UTF-8 through a symlink.
                staged_dir = tempfile.mkdtemp(prefix="plm-decord-")
                alias = os.path.join(staged_dir, "video" + os.path.splitext(path)[1])
                os.symlink(os.fsencode(os.path.abspath(path)), os.fsencode(alias))
                path = alias
            if not storage.opens_by_path(info.uri):
                # decord reads paths (or whole files into memory): stage remote videos and tar
                # members to a temporary file once (removed after decoding).
                staged_dir = tempfile.mkdtemp(prefix="plm-decord-")
                path = os.path.join(staged_dir, "video" + os.path.splitext(info.uri)[1])
                with storage.open_read(info.uri) as src, open(path, "wb") as dst:
                    shutil.copyfileobj(src, dst, 8 << 20)
            reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=config.threads or 0)
            count = len(reader)
            if count > config.max_decoded_frames:
                raise DecodeTimeout(f"the video has {count} frames, more than the frame cap of "
                                    f"{config.max_decoded_frames}")
            starts = np.asarray(reader.get_frame_timestamp(np.arange(count))[:, 0], dtype=np.float64)
            starts -= starts[0] if count else 0.0
            size = config.frame_size
            for clip in video.clips:
                # Between clips only: a hang inside decord needs the isolated process to end it.
                if time.monotonic() > deadline:
                    raise DecodeTimeout(f"decoding took longer than the {config.timeout_s:g} s limit")
                # Planned times are matched to decord's own frame times (float32 seconds), never t * fps.
                wanted = nearest_frames(starts, np.asarray(clip.sample_times))
                unique = sorted({int(i) for i in wanted})
                by_index = dict(zip(unique, reader.get_batch(unique).asnumpy(), strict=True))
                # decord applies the display matrix itself (its frames come out upright).
                images = {i: FrameImages(partial(np.asarray, by_index[i]), size,
                                         partial(_decoder_resize, by_index[i], size)
                                         if config.resize == "decoder" else None) for i in unique}
                frames = np.stack([images[int(i)].plain() for i in wanted])
                regions = tuple(
                    (region.region_id,
                     np.stack([images[int(i)].with_box(box) if box is not None else images[int(i)].plain()
                               for i, box in zip(wanted, region.boxes, strict=True)]))
                    for region in clip.regions)
                # Keep the planned times where decord agrees (to float32 precision).
                used = tuple(p if abs(p - float(starts[int(i)])) < 1e-3 else float(starts[int(i)])
                             for p, i in zip(clip.sample_times, wanted, strict=True))
                if used != clip.sample_times:
                    ends = tuple(max(e, u) for e, u in zip(clip.sample_end_times, used, strict=True))
                    clip = replace(clip, sample_times=used, sample_end_times=ends)
                del by_index, images
                waiting = time.monotonic()
                yield ClipFrames(clip=clip, frames=frames, region_frames=regions)
                # The limit bounds decoding alone: time the consumer held this generator never counts.
                deadline += time.monotonic() - waiting
        except DecodeError:
            raise
        except (decord.DECORDError, RuntimeError, ValueError, IndexError, OSError) as exc:
            raise decord_error(info.uri, exc) from exc
        finally:
            if staged_dir:
                shutil.rmtree(staged_dir, ignore_errors=True)
