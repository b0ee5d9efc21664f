"""Cut a clip of a video to a file of its own, so an export stands alone (``--cut-clips``).

A stream copy is exact and costs no quality, but a copied file must start on a keyframe: the
frames before the first keyframe cannot be decoded. So a clip whose first frame is a keyframe is
copied, from that keyframe up to the next keyframe after the clip's last sampled frame (a copy
ends on a GOP boundary, where no kept frame refers to a dropped one); any other clip is
re-encoded (libx264) from its first frame to its last sampled frame. Keyframes and frame times
come from ffprobe (packets only, no decoding), and every cut is checked with ffprobe for the
number of frames it should hold; a copy that comes out wrong is re-encoded instead.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

from core.media import ffmpeg_binary, ffprobe_binary

COPY = "copy"
ENCODE = "encode"


class CutError(RuntimeError):
    """A clip could not be cut (ffmpeg failed, or the cut does not hold the frames it should)."""


@dataclass(frozen=True)
class StreamFrames:
    """The first video stream's frames in presentation order: start times and keyframe flags.

    ``times`` are seconds from the first frame (the index's convention); ``seek_origin`` is the
    first frame's time from the container's start, where ffmpeg's ``-ss`` counts from.
    """

    times: tuple[float, ...]
    keyframes: tuple[bool, ...]
    seek_origin: float

    def next_keyframe(self, after: int) -> int:
        """Index of the first keyframe after frame ``after``, or the frame count if none."""
        for index in range(after + 1, len(self.keyframes)):
            if self.keyframes[index]:
                return index
        return len(self.keyframes)


def _ffprobe(path: str, *args: str) -> str:
    command = [ffprobe_binary(), "-v", "error", "-select_streams", "v:0", *args, "-of", "csv=p=0", path]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise CutError(f"ffprobe could not read {path}: {done.stderr.strip()[-500:]}")
    return done.stdout


def stream_frames(path: str) -> StreamFrames:
    """Frame times and keyframes of ``path``'s first video stream, from its packets (ffprobe)."""
    packets = []
    for line in _ffprobe(path, "-show_entries", "packet=pts_time,flags").splitlines():
        fields = line.strip().split(",")
        if len(fields) < 2 or fields[0] in ("", "N/A"):
            continue
        packets.append((float(fields[0]), "K" in fields[1]))
    if not packets:
        raise CutError(f"{path} has no video frames with timestamps to cut")
    packets.sort()
    start = _ffprobe(path, "-show_entries", "format=start_time").strip().splitlines()
    container_start = float(start[0]) if start and start[0] not in ("", "N/A") else 0.0
    origin = packets[0][0]
    return StreamFrames(times=tuple(t - origin for t, _ in packets), keyframes=tuple(k for _, k in packets),
                        seek_origin=origin - container_start)


def count_frames(path: str) -> int:
    """Video packets (frames) in ``path``, counted by ffprobe without decoding."""
    out = _ffprobe(path, "-count_packets", "-show_entries", "stream=nb_read_packets").strip()
    return int(out.splitlines()[0]) if out else 0


@dataclass(frozen=True)
class Cut:
    """A cut file: how it was made, and which source frames it holds (``first`` .. ``first + frames - 1``)."""

    path: str
    method: str
    first: int
    frames: int


def cut_clip(source: str, stream: StreamFrames, first: int, last: int, out_path: str) -> Cut:
    """Cut source frames ``first`` .. ``last`` (at least) of ``source`` (a local file) to ``out_path``.

    A copy when ``first`` is a keyframe (it then runs on to the next keyframe), else a re-encode of
    exactly those frames. Raises ``CutError`` when ffmpeg fails or the frames do not add up.
    """
    if not 0 <= first <= last < len(stream.times):
        raise CutError(f"frames {first}..{last} are outside {source}, which has {len(stream.times)} frames")
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    if stream.keyframes[first]:
        frames = stream.next_keyframe(last) - first
        if _run_cut(source, stream, first, frames, out_path, copy=True):
            return Cut(out_path, COPY, first, frames)
    frames = last - first + 1
    if not _run_cut(source, stream, first, frames, out_path, copy=False):
        raise CutError(f"re-encoding frames {first}..{last} of {source} did not give {frames} frames")
    return Cut(out_path, ENCODE, first, frames)


def _run_cut(source: str, stream: StreamFrames, first: int, frames: int, out_path: str, *, copy: bool) -> bool:
    """Run one ffmpeg cut; whether the result holds ``frames`` frames (a wrong file is removed)."""
    # A frame period, from the frames around ``first``, to place -ss safely between two frames.
    period = (stream.times[-1] / (len(stream.times) - 1)) if len(stream.times) > 1 else 0.04
    start = stream.seek_origin + stream.times[first]
    # A copy seeks back to the keyframe at or before -ss (``first`` itself: -ss lies just after it);
    # a re-encode decodes from there and drops frames before -ss (so -ss lies just before ``first``).
    seek = start + period / 4 if copy else max(0.0, start - period / 4)
    codec = ["-c:v", "copy"] if copy else ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "18"]
    tmp = f"{out_path}.tmp-{os.getpid()}.mp4"
    command = [ffmpeg_binary(), "-loglevel", "error", "-y", "-ss", f"{seek:.6f}", "-i", source, "-map", "0:v:0",
               "-an", "-sn", "-dn", "-frames:v", str(frames), *codec, "-avoid_negative_ts", "make_zero", tmp]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise CutError(f"ffmpeg could not cut {source} at {start:.3f}s: {done.stderr.strip()[-500:]}")
    if count_frames(tmp) != frames:
        os.remove(tmp)
        return False
    os.replace(tmp, out_path)
    return True
