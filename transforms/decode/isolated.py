"""Decoding in a child process that is killed when a video's hard time limit passes.

A pathological file can hang a decoder inside native code (decord's ``get_batch`` is known
to), where no Python-level check runs. Each decode stage instance therefore keeps one spawned
decode process, sends it one video at a time, and receives the clips back one by one. If the
time limit passes, the process is killed (and started again for the next video), so a worker is
never stuck. The process is started once per stage instance, not per video.

Frames travel as raw bytes over a pipe straight into arrays the parent allocates: no pickling of
pixel data (pickling a clip through a queue cost about 100 ms on two cores), and no trip through
``Connection.recv_bytes_into``, which reads into a growing BytesIO and copies again (for 48 clips
of 32 x 448 px it cost the parent 1.3 s of CPU, ``os.readv`` straight into the array 0.2 s).
How far the child decodes ahead is ``DecodeConfig.prefetch_clips``. Where a GPU runs the model,
a sender thread keeps decoded clips in flight so decoding overlaps the GPU's work. On a CPU-only
worker the child decodes the next clip only when the parent asks for it (lockstep): decoding ahead
there only takes cores from torch's threads while the model runs (measured on two cores: one clip
ahead ran the build at 0.89x of a bare loop; see the README's benchmark table).

The time limit bounds decoding alone: it counts only the time the parent spends waiting for the
child's next clip. The child's start (seconds of imports, announced by a ready message) and the time
the parent's consumers hold a clip (inference of earlier clips) never count.

The child dies with its parent, however the parent ends (SIGTERM, SIGINT, SIGKILL): it starts
through ``core.lifeline.run_child``, whose watchdog runs before any heavy import.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np

from core.lifeline import run_child
from schemas.config import DecodeConfig
from schemas.records import ClipFrames, VideoClips
from transforms.decode.base import DecodeError, DecodeTimeout

log = logging.getLogger(__name__)

_CLIP, _DONE, _ERROR, _READY = "clip", "done", "error", "ready"
_NEXT = "next"  # lockstep: the parent is ready for the next clip
POLL_S = 2.0
# How long a starting child may take to import its libraries before it is declared dead (not decode time).
START_TIMEOUT_S = 600.0


def _cuda_visible() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return bool(torch.cuda.is_available())


def prefetch_clips(config: DecodeConfig) -> int:
    """How many clips the decode process decodes ahead: the config's, else 1 with a GPU and 0 without."""
    if config.prefetch_clips is not None:
        return config.prefetch_clips
    return 1 if _cuda_visible() else 0


def _widen_pipe(fd: int) -> None:
    """Ask for a 1 MiB pipe buffer (Linux; the default 64 KiB means ~300 wake-ups per 19 MB clip).

    Measured with 48 clips: the parent's CPU to receive them 0.19-0.22 s against 0.25-0.38 s without.
    """
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except (OSError, ImportError):
        pass


def _write_raw(fd: int, array: np.ndarray) -> None:
    """Write an array's bytes straight to the pipe: no framing, no copy into a message."""
    view = memoryview(array).cast("B")
    while view:
        view = view[os.write(fd, view):]


def _read_raw(fd: int, array: np.ndarray) -> None:
    """Fill ``array`` straight from the pipe (``Connection.recv_bytes_into`` copies through a BytesIO)."""
    view = memoryview(array).cast("B")
    while view:
        got = os.readv(fd, [view])
        if got == 0:
            raise EOFError("the decode process closed its pipe mid-clip")
        view = view[got:]


def _arrays_of(clip: ClipFrames) -> list[np.ndarray]:
    return [clip.frames, *(frames for _, frames in clip.region_frames)]


def _send_clip(conn: Any, clip: ClipFrames) -> None:
    arrays = [np.ascontiguousarray(a) for a in _arrays_of(clip)]
    header = replace(clip, frames=np.empty(0, np.uint8),
                     region_frames=tuple((rid, np.empty(0, np.uint8)) for rid, _ in clip.region_frames))
    conn.send((_CLIP, header, [(a.shape, a.dtype.str) for a in arrays]))
    for array in arrays:
        _write_raw(conn.fileno(), array)


def _serve(requests: Any, conn: Any) -> None:
    """Child process: decode each requested video and stream its clips back (after a ready message)."""
    from transforms.decode.backends import decoder_for

    conn.send((_READY, None, None))
    outbox: queue.Queue = queue.Queue(maxsize=1)  # resized per video to its prefetch depth

    def sender() -> None:
        while True:
            message = outbox.get()
            if isinstance(message, ClipFrames):
                _send_clip(conn, message)
            else:
                conn.send(message)

    threading.Thread(target=sender, daemon=True).start()
    while True:
        request = requests.get()
        if request is None:
            return
        video, config, ahead = request
        outbox.maxsize = max(1, ahead)
        try:
            for clip in decoder_for(config).decode(video, config):
                outbox.put(clip)
                if ahead == 0 and requests.get() != _NEXT:
                    return  # the parent stopped this video without a kill: nothing more to do
            outbox.put((_DONE, None, None))
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which decides
            outbox.put((_ERROR, type(exc).__name__, str(exc)))


class IsolatedDecoder:
    """Runs a backend in a killable child process, with the same ``decode`` interface."""

    def __init__(self) -> None:
        self._context = mp.get_context("spawn")
        self._process: Any = None
        self._requests: Any = None
        self._results: Any = None
        self._lifeline: Any = None
        self._ready = False

    def start(self) -> None:
        """Start the child now (it takes seconds to import its libraries), if it is not running."""
        if self._process is None or not self._process.is_alive():
            self._start()

    def _start(self) -> None:
        self._requests = self._context.Queue()
        self._results, child_end = self._context.Pipe(duplex=False)
        _widen_pipe(child_end.fileno())
        lifeline_child, self._lifeline = self._context.Pipe(duplex=False)
        main_thread = threading.current_thread() is threading.main_thread()
        # The child starts in core.lifeline (standard library only) so that it dies with this process
        # even while it is still importing its decoders.
        self._process = self._context.Process(target=run_child, daemon=True, name="plm-index-decoder",
                                              args=(os.getpid(), lifeline_child, main_thread,
                                                    f"{__name__}:_serve", self._requests, child_end))
        self._process.start()
        self._ready = False
        child_end.close()
        lifeline_child.close()

    def _await_ready(self) -> None:
        """Wait for the started child's ready message; its start never counts against a video's limit."""
        if self._ready:
            return
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._results.poll(POLL_S):
            if not self._process.is_alive():
                raise DecodeError(f"the decode process died while starting (exit code {self._process.exitcode})")
            if time.monotonic() > deadline:
                raise DecodeError(f"the decode process did not start within {START_TIMEOUT_S:g} s")
        try:
            kind, _, _ = self._results.recv()
        except EOFError:
            raise DecodeError(f"the decode process died while starting (exit code {self._process.exitcode})") from None
        if kind != _READY:
            raise DecodeError(f"the decode process sent {kind!r} before it was ready")
        self._ready = True

    def close(self) -> None:
        """Stop the child process."""
        if self._process is not None:
            if self._process.is_alive():
                self._process.kill()
            self._process.join(timeout=5)
            self._process = None
            self._results.close()
            self._lifeline.close()
            # Release the request queue's semaphores now (left to exit, they are reported as leaked).
            # No join: a request larger than the pipe, half read by a killed child, would block it forever.
            self._requests.close()
            self._requests.cancel_join_thread()
            self._requests = None

    def _receive(self, header: ClipFrames, layout: list[tuple[tuple[int, ...], str]]) -> ClipFrames:
        arrays = []
        for shape, dtype in layout:
            array = np.empty(shape, dtype=np.dtype(dtype))
            _read_raw(self._results.fileno(), array)
            arrays.append(array)
        regions = tuple((rid, frames) for (rid, _), frames in zip(header.region_frames, arrays[1:], strict=True))
        return replace(header, frames=arrays[0], region_frames=regions)

    def decode(self, video: VideoClips, config: DecodeConfig) -> Iterator[ClipFrames]:
        """Decode in the child; past ``config.timeout_s`` of decoding the child is killed and DecodeTimeout raised.

        Only the time spent waiting for the child's next clip counts: the child's start and the
        time the caller holds a yielded clip do not.
        """
        finished = False
        try:
            self.start()
            self._await_ready()
            ahead = prefetch_clips(config)
            self._requests.put((video, config, ahead))
            waited = 0.0
            while True:
                remaining = config.timeout_s - waited
                if remaining <= 0:
                    raise DecodeTimeout(f"decoding took longer than the {config.timeout_s:g} s limit; "
                                        "the decode process was killed")
                asked = time.monotonic()
                ready = self._results.poll(min(remaining, POLL_S))
                if not ready:
                    waited += time.monotonic() - asked
                    if not self._process.is_alive():
                        raise DecodeError(f"the decode process died (exit code {self._process.exitcode})")
                    continue
                try:
                    kind, payload, message = self._results.recv()
                    clip = self._receive(payload, message) if kind == _CLIP else None
                except EOFError:
                    raise DecodeError(f"the decode process died (exit code {self._process.exitcode})") from None
                waited += time.monotonic() - asked
                if kind == _CLIP:
                    yield clip
                    if ahead == 0:
                        self._requests.put(_NEXT)
                elif kind == _DONE:
                    finished = True
                    return
                else:
                    finished = True
                    error = DecodeTimeout if payload == "DecodeTimeout" else DecodeError
                    raise error(f"{payload}: {message}")
        finally:
            if not finished:
                # Killed, timed out, or abandoned mid-video: the child's state is unknown; start afresh.
                self.close()
