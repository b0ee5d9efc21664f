"""Decoding in a child process that is killed when a video's hard time limit passes.

A pathological file can hang a decoder inside native code (decord's ``get_batch`` is known
to), where no Python-level check runs. Each decode stage instance therefore keeps one spawned
decode process, sends it one video at a time, and receives the clips back one by one. If the
time limit passes, the process is killed (and started again for the next video), so a worker is
never stuck. The process is started once per stage instance, not per video; where Beam's
workers run in the launching process, the build starts it before the pipeline is built
(``start_decoders_ahead``) and the stage takes it (``take_decoder``).

Frames travel through memory both processes map (a ``memfd`` on Linux, an unlinked temporary
file elsewhere), not through the pipe: the child writes a clip's arrays there and sends only their
layout; the parent copies them out into arrays of its own and hands the space back. Handing
over a clip of 32 frames at 448 px (19 MB), from the child's write to the parent's copy, took
4.4-5.3 ms (median of 96, two runs) against 7.8-9.1 ms through a 1 MiB pipe (two kernel copies
and a wake-up per MiB), on two cores in the Beam-overhead bench's lockstep decode. The parent
copies out because its consumers hold clips for a while (RunInference batches them).
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

import atexit
import logging
import mmap
import multiprocessing as mp
import os
import queue
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from multiprocessing import reduction
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


_ALIGN = 64  # each array starts on a cache line


class _SharedFd:
    """A file descriptor that a spawned child inherits: pickled through ``multiprocessing``'s ``DupFd``,
    as a ``Connection`` is, so it reaches the child under the same number. The child receives the int."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _inherited_fd, (reduction.DupFd(self.fd),)


def _inherited_fd(duplicate: Any) -> int:
    return duplicate.detach()


def shared_file() -> int:
    """A new unlinked file for frames: anonymous memory (``memfd``) where the OS has it."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create("plm-index-frames", getattr(os, "MFD_CLOEXEC", 0))
    with tempfile.TemporaryFile() as handle:
        return os.dup(handle.fileno())


class FrameBuffer:
    """The shared file both processes map; it grows to the largest clip and is reused for every clip.

    The child ``write``s a clip's arrays and sends their layout; the parent ``read``s them out
    into its own arrays. Whoever needs more room grows the file; the other maps the new size
    when a layout reaches past its mapping.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._map: mmap.mmap | None = None

    def _mapped(self, size: int) -> mmap.mmap:
        size = max(size, mmap.PAGESIZE)
        if self._map is None or len(self._map) < size:
            if self._map is not None:
                self._map.close()
            if os.fstat(self.fd).st_size < size:
                os.ftruncate(self.fd, size)
            self._map = mmap.mmap(self.fd, size)
        return self._map

    def write(self, arrays: list[np.ndarray]) -> list[tuple[int, tuple[int, ...], str]]:
        """Copy ``arrays`` in; returns each one's (offset, shape, dtype) for ``read``."""
        layout, offset = [], 0
        for array in arrays:
            layout.append((offset, array.shape, array.dtype.str))
            offset += -(-array.nbytes // _ALIGN) * _ALIGN
        space = self._mapped(offset)
        for (start, shape, dtype), array in zip(layout, arrays, strict=True):
            np.copyto(np.ndarray(shape, np.dtype(dtype), buffer=space, offset=start), array)
        return layout

    def read(self, layout: list[tuple[int, tuple[int, ...], str]]) -> list[np.ndarray]:
        """Copies of the arrays that ``write`` placed at ``layout``."""
        end = max((start + int(np.prod(shape)) * np.dtype(dtype).itemsize for start, shape, dtype in layout),
                  default=0)
        space = self._mapped(end)
        arrays = []
        for start, shape, dtype in layout:
            array = np.empty(shape, np.dtype(dtype))
            np.copyto(array, np.ndarray(shape, np.dtype(dtype), buffer=space, offset=start))
            arrays.append(array)
        return arrays

    def close(self) -> None:
        """Unmap and close the file (the memory is freed once the other process has too)."""
        if self._map is not None:
            self._map.close()
            self._map = None
        os.close(self.fd)


def _arrays_of(clip: ClipFrames) -> list[np.ndarray]:
    return [clip.frames, *(frames for _, frames in clip.region_frames)]


def _send_clip(conn: Any, clip: ClipFrames, frames: FrameBuffer, free: Any) -> None:
    header = replace(clip, frames=np.empty(0, np.uint8),
                     region_frames=tuple((rid, np.empty(0, np.uint8)) for rid, _ in clip.region_frames))
    free.recv_bytes()  # the parent has copied the previous clip out of the shared file
    conn.send((_CLIP, header, frames.write(_arrays_of(clip))))


def _serve(requests: Any, conn: Any, frames_fd: int, free: Any) -> None:
    """Child process: decode each requested video and stream its clips back (after a ready message).

    A clip's frames go into the shared file (``frames_fd``) once ``free`` says the parent has
    taken the previous one; ``conn`` carries the clip's header and layout.
    """
    from transforms.decode.backends import decoder_for

    frames = FrameBuffer(frames_fd)
    conn.send((_READY, None, None))
    outbox: queue.Queue = queue.Queue(maxsize=1)  # resized per video to its prefetch depth

    def sender() -> None:
        while True:
            message = outbox.get()
            if isinstance(message, ClipFrames):
                _send_clip(conn, message, frames, free)
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


# Variables that libraries set in this process as they load (scikit-learn and joblib, torch's CUDA
# start-up), none of which changes how a decode process reads or decodes: a kept process whose
# start predates them still serves. Any other change of the environment retires it.
_ENVIRONMENT_SET_BY_LIBRARIES = frozenset({"KMP_INIT_AT_FORK", "CUDA_MODULE_LOADING"})


def _surroundings() -> tuple[str, dict[str, str]]:
    """What a started child inherits and keeps: the working folder and the environment."""
    return os.getcwd(), {k: v for k, v in os.environ.items() if k not in _ENVIRONMENT_SET_BY_LIBRARIES}


class IsolatedDecoder:
    """Runs a backend in a killable child process, with the same ``decode`` interface."""

    def __init__(self) -> None:
        self._context = mp.get_context("spawn")
        self._process: Any = None
        self._requests: Any = None
        self._results: Any = None
        self._lifeline: Any = None
        self._frames: FrameBuffer | None = None
        self._free: Any = None
        self._ready = False
        self.busy = False  # a video was requested and not yet finished
        self.videos = 0  # videos this decoder has finished (decoded or reported failed)
        self._started_in: tuple[str, dict[str, str]] | None = None

    def alive(self) -> bool:
        """Whether the child process is running."""
        return self._process is not None and self._process.is_alive()

    def started_here(self) -> bool:
        """Whether the child runs in this process's present working folder and environment.

        A child inherits both when it starts. One kept idle between builds must not serve a build
        that set other credentials or endpoints (``AWS_ENDPOINT_URL``, ``STORAGE_EMULATOR_HOST``)
        or another folder for relative paths.
        """
        return self._started_in == _surroundings()

    @property
    def pid(self) -> int | None:
        """The child's process id (None before it starts)."""
        return None if self._process is None else self._process.pid

    def start(self) -> None:
        """Start the child now (it takes seconds to import its libraries), if it is not running."""
        if not self.alive():
            self._start()

    def _start(self) -> None:
        self._requests = self._context.Queue()
        self._results, child_end = self._context.Pipe(duplex=False)
        self._frames = FrameBuffer(shared_file())
        free_child, self._free = self._context.Pipe(duplex=False)
        self._free.send_bytes(b"")  # the shared file starts free
        lifeline_child, self._lifeline = self._context.Pipe(duplex=False)
        main_thread = threading.current_thread() is threading.main_thread()
        # The child starts in core.lifeline (standard library only) so that it dies with this process
        # even while it is still importing its decoders.
        self._process = self._context.Process(target=run_child, daemon=True, name="plm-index-decoder",
                                              args=(os.getpid(), lifeline_child, main_thread,
                                                    f"{__name__}:_serve", self._requests, child_end,
                                                    _SharedFd(self._frames.fd), free_child))
        self._process.start()
        self._started_in = _surroundings()
        self._ready = False
        child_end.close()
        free_child.close()
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
        self.busy = False
        if self._process is not None:
            if self._process.is_alive():
                self._process.kill()
            self._process.join(timeout=5)
            self._process = None
            self._results.close()
            self._lifeline.close()
            self._free.close()
            self._frames.close()
            # Release the request queue's semaphores now (left to exit, they are reported as leaked).
            # No join: a request larger than the pipe, half read by a killed child, would block it forever.
            self._requests.close()
            self._requests.cancel_join_thread()
            self._requests = None

    def _receive(self, header: ClipFrames, layout: list[tuple[int, tuple[int, ...], str]]) -> ClipFrames:
        arrays = self._frames.read(layout)
        self._free.send_bytes(b"")  # the child may write the next clip
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
            self.busy = True
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
                    finished, self.busy, self.videos = True, False, self.videos + 1
                    return
                else:
                    finished, self.busy, self.videos = True, False, self.videos + 1
                    error = DecodeTimeout if payload == "DecodeTimeout" else DecodeError
                    raise error(f"{payload}: {message}")
        finally:
            if not finished:
                # Killed, timed out, or abandoned mid-video: the child's state is unknown; start afresh.
                self.close()


# Decode processes started but not in use: started ahead by a build, or given back by a stage.
_IDLE: list[IsolatedDecoder] = []
_IDLE_LOCK = threading.Lock()
# How many idle ones a process keeps; more are stopped when given back.
MAX_IDLE = 1


def _usable_idle() -> list[IsolatedDecoder]:
    """The idle decode processes that can still serve here; those that died or started elsewhere are stopped."""
    with _IDLE_LOCK:
        stale = [d for d in _IDLE if not (d.alive() and d.started_here())]
        _IDLE[:] = [d for d in _IDLE if d not in stale]
        usable = list(_IDLE)
    for decoder in stale:
        decoder.close()
    return usable


def start_decoders_ahead(count: int = 1) -> None:
    """Make sure ``count`` idle decode processes are running, for decode stages set up later to take.

    A decode process takes over a second to start (it imports torch and PyAV). A decode stage
    could only start its own in ``setup``, but Beam sets a fused stage up consumers first: the
    model and embedder load before it, and the first video waits for the start (1.4 s on two
    cores). Where Beam's workers run inside the launching process (the embedded FnApiRunner), the
    build calls this before it builds the pipeline, so the start overlaps Beam's own work.
    """
    missing = max(0, count - len(_usable_idle()))
    for _ in range(missing):
        decoder = IsolatedDecoder()
        decoder.start()
        with _IDLE_LOCK:
            _IDLE.append(decoder)


def take_decoder() -> IsolatedDecoder:
    """An idle decode process of this process if one is alive and started here, else one started now."""
    idle = _usable_idle()
    with _IDLE_LOCK:
        if idle and idle[-1] in _IDLE:
            _IDLE.remove(idle[-1])
            return idle[-1]
    decoder = IsolatedDecoder()
    decoder.start()
    return decoder


def give_back_decoder(decoder: IsolatedDecoder) -> None:
    """Keep a stage's decode process for the next stage set up in this process, or stop it.

    Kept only if it is alive and between videos (a process abandoned mid-video may still be
    sending clips), and while fewer than ``MAX_IDLE`` are kept; it serves a later stage only
    if this process's folder and environment are still those it started in. A process that builds again (a
    notebook, a service, the benchmarks) then pays the decode process's start once, as it pays
    its own imports once.
    """
    with _IDLE_LOCK:
        if decoder.alive() and not decoder.busy and len(_IDLE) < MAX_IDLE:
            _IDLE.append(decoder)
            return
    decoder.close()


def idle_decoders() -> list[int]:
    """The process ids of this process's idle decode processes."""
    with _IDLE_LOCK:
        return [d.pid for d in _IDLE if d.alive()]


def close_idle_decoders() -> int:
    """Stop this process's idle decode processes; returns how many there were."""
    with _IDLE_LOCK:
        left = list(_IDLE)
        _IDLE.clear()
    for decoder in left:
        decoder.close()
    return len(left)


# Stopped and released at exit (they would die with this process anyway, but their queues'
# semaphores would be reported as leaked).
atexit.register(close_idle_decoders)
